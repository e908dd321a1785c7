//! A node's directory on the host and the storage prepared in it before the node starts.
//!
//! ```text
//! nodes/<net>-<host>/
//!   node.json      the record (state.rs)        init.json  what the in-node init needs
//!   disk.img       sparse ext4 image: everything the node writes, with a hard size cap
//!   disk/          where the host mounts disk.img:
//!     upper/ work/   overlay upper and work dirs of the node's root, owned by its root
//!     docker/        the node's /var/lib/docker (bind-mounted)
//!     etc/           hosts, resolv.conf, hostname: bind-mounted over the node's /etc files
//!   lower/         mount point of the idmapped base image (only inside the node)
//!   rootfs/        mount point of the overlay root (only inside the node)
//!   dev/           device nodes made by the host: a user namespace cannot mknod
//! ```
//! Everything the node can write is on its disk image (the overlay upper layer,
//! `/var/lib/docker`, and the /etc files it owns), so a node cannot fill the host's disk
//! whichever file it writes to. `/var/lib/docker` must not be on the
//! overlay root (overlay2 cannot stack on overlayfs and dockerd would silently fall back to a
//! slow driver), and a loop device cannot be set up from inside the node, so the host attaches
//! and mounts the image and the node only binds its directories.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Device nodes every node gets: (name, major, minor). `tun` serves `/dev/net/tun`.
pub(crate) const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("tun", 10, 200),
    ("fuse", 10, 229),
];

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Paths inside a node's directory.
#[derive(Debug, Clone)]
pub(crate) struct NodeDir {
    pub dir: PathBuf,
}

impl NodeDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
    /// The sockets of the holders of the node's shells (`hold.rs`).
    pub fn shells(&self) -> PathBuf {
        self.dir.join("shells")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("node.json")
    }
    pub fn init_config(&self) -> PathBuf {
        self.dir.join("init.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.disk().join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.disk().join("work")
    }
    pub fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk")
    }
    pub fn docker(&self) -> PathBuf {
        self.disk().join("docker")
    }
    pub fn dev(&self) -> PathBuf {
        self.dir.join("dev")
    }
    fn etc(&self) -> PathBuf {
        self.disk().join("etc")
    }
    pub fn hosts(&self) -> PathBuf {
        self.etc().join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.etc().join("resolv.conf")
    }
    pub fn hostname(&self) -> PathBuf {
        self.etc().join("hostname")
    }
    /// The dockerd log as the host sees it (the node writes it through its overlay upper).
    pub fn dockerd_log(&self) -> PathBuf {
        self.upper().join("var/log/dockerd.log")
    }

    /// Creates the directory tree and the device nodes. `owner` is the host uid/gid of the
    /// node's root.
    pub fn prepare(&self, owner: (u32, u32)) -> Result<(), RootfsError> {
        let (uid, gid) = owner;
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        // Only host root and the node's own root may enter: what the node writes (setuid
        // files, device nodes in a rootful node) must not be reachable by other host users.
        chown(&self.dir, Some(0), Some(gid)).map_err(io("chown", &self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o750))
            .map_err(io("chmod", &self.dir))?;
        for d in [self.lower(), self.rootfs(), self.disk(), self.dev()] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let dev = self.dev();
        for (name, major, minor) in DEVICES {
            let path = dev.join(name);
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(*major, *minor),
            )
            .map_err(|e| RootfsError::Io {
                op: "mknod",
                path: path.clone(),
                source: e.into(),
            })?;
            // mknod is subject to the umask; the nodes must be usable by every user inside.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                .map_err(io("chmod", &path))?;
            chown(&path, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        }
        Ok(())
    }

    /// Creates the node's sparse ext4 disk image, mounts it on `disk/` and makes the upper,
    /// work, docker and etc directories in it, owned by the node's root. Call after `prepare`,
    /// before writing the /etc files.
    pub async fn make_disk(&self, size_bytes: u64, owner: (u32, u32)) -> Result<(), RootfsError> {
        let img = self.disk_image();
        let f = std::fs::File::create(&img).map_err(io("create", &img))?;
        f.set_len(size_bytes).map_err(io("truncate", &img))?;
        drop(f);
        // Lazy init keeps mkfs at a few milliseconds and the image sparse.
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-E".as_ref(),
                format!(
                    "lazy_itable_init=1,lazy_journal_init=1,root_owner={}:{}",
                    owner.0, owner.1
                )
                .as_ref(),
                img.as_os_str(),
            ],
        )
        .await?;
        // `mount -o loop` attaches a loop device with autoclear: unmounting frees it.
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                img.as_os_str(),
                self.disk().as_os_str(),
            ],
        )
        .await?;
        for d in [self.upper(), self.work(), self.docker(), self.etc()] {
            std::fs::create_dir(&d).map_err(io("create", &d))?;
            chown(&d, Some(owner.0), Some(owner.1)).map_err(io("chown", &d))?;
        }
        Ok(())
    }

    /// Writes a file that is bind-mounted into the node, in place: a bind mount pins the inode,
    /// so replacing the file by rename would not be seen inside. The new content is written
    /// over the old and the file cut to its length afterwards, so a reader never sees it empty.
    pub fn write_in_place(
        path: &Path,
        content: &str,
        owner: (u32, u32),
    ) -> Result<(), RootfsError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open", path))?;
        f.write_all(content.as_bytes()).map_err(io("write", path))?;
        f.set_len(content.len() as u64)
            .map_err(io("truncate", path))?;
        chown(path, Some(owner.0), Some(owner.1)).map_err(io("chown", path))
    }

    /// Unmounts the disk (freeing its loop device) and removes the directory. Safe to call on a
    /// partly made or already removed node.
    pub async fn remove(&self) -> Result<(), RootfsError> {
        let docker = self.disk();
        if is_mount_point(&docker) {
            if let Err(e) = nix::mount::umount(&docker) {
                // Busy only if something on the host holds a file open in it; detach lazily
                // and let the kernel free the loop device when the last user goes.
                tracing::warn!(path = %docker.display(), error = %e, "unmount busy, detaching");
                nix::mount::umount2(&docker, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                    RootfsError::Io {
                        op: "unmount",
                        path: docker.clone(),
                        source: e.into(),
                    }
                })?;
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &self.dir)(e)),
        }
    }
}

/// True if `path` is a mount point in the caller's mount namespace.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(p) = path.to_str() else { return false };
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == p)
}

/// Mount points in `/proc/self/mountinfo` below `dir` (for leak checks).
pub(crate) fn mounts_below(dir: &Path) -> Vec<String> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let d = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(d.as_ref()))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), RootfsError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| RootfsError::Command {
            command: program.into(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RootfsError::Command {
            command: format!(
                "{program} {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/definitely/not/here")));
    }
}
