//! The node's file system, made by its PID 1 before anything of the node runs: the overlay
//! root, `/var/lib/docker`, `/proc`, `/sys`, the cgroup hierarchies, `/dev`, `/run`, the
//! `/etc` files, then `pivot_root` and the old root detached.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root, sethostname};

use crate::config::Isolation;
use crate::rootfs::{NodeDir, DEVICES};

use super::config::{InitConfig, EXTRA_CA_DIR};
use super::daemons::{CONTAINERD_CONFIG, CONTAINERD_TOML};

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {}: {e}",
            fstype.or(src).unwrap_or("?"),
            target.display()
        )
    })
}

fn bind(src: &Path, target: &Path, readonly: bool) -> Result<(), String> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} on {}: {e}", src.display(), target.display()))?;
    if readonly {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("remount {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

fn ensure_file(path: &Path) -> Result<(), String> {
    if !path.exists() {
        std::fs::write(path, "").map_err(|e| format!("create {}: {e}", path.display()))?;
    }
    Ok(())
}

fn ensure_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))
}

/// The node's PID 1 builds its root filesystem and pivots into it. Runs as root of the node's
/// user namespace (or host root in rootful mode), inside all its namespaces.
pub(super) fn setup_node(
    nd: &NodeDir,
    cfg: &InitConfig,
    lower_fd: Option<OwnedFd>,
) -> Result<(), String> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // 1. The lower layer: the idmapped base image from the host, or the image itself.
    let lower = match lower_fd {
        Some(fd) => {
            crate::sys::move_mount_to(&fd, &nd.lower())
                .map_err(|e| format!("attach idmapped image on {}: {e}", nd.lower().display()))?;
            nd.lower()
        }
        None if cfg.isolation == Isolation::Userns => {
            return Err("the host sent no idmapped image".into())
        }
        None => cfg.image_rootfs.clone(),
    };
    // 2. The overlay root: shared read-only image below, the node's own upper above.
    let root = nd.rootfs();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        nd.upper().display(),
        nd.work().display()
    );
    mnt(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;
    // 3. /var/lib/docker on the node's own ext4 image (overlay2 cannot live on overlayfs).
    let docker = root.join("var/lib/docker");
    ensure_dir(&docker)?;
    bind(&nd.docker(), &docker, false)?;
    // 4. /proc of the node's pid namespace. Host-wide files stay owned by host root, so the
    //    node cannot write them; in rootful mode they are made read-only explicitly.
    let proc = root.join("proc");
    mnt(Some("proc"), &proc, Some("proc"), nodev, None)?;
    if cfg.isolation == Isolation::Rootful {
        for p in ["sys", "sysrq-trigger", "irq", "bus"] {
            let path = proc.join(p);
            if path.exists() {
                bind(&path, &path, true)?;
            }
        }
        // dockerd sets per-network-namespace sysctls: /proc/sys/net gets its own writable
        // mount (a bind inherits the read-only flag of its source, so remount it).
        let net = proc.join("sys/net");
        bind(&net, &net, false)?;
        mnt(
            None,
            &net,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None,
        )?;
    }
    // 5. /sys, read-only in rootful mode, and the node's cgroups: the cgroup namespace makes
    //    the node's own cgroup the root of each hierarchy.
    let sys = root.join("sys");
    let sys_flags = if cfg.isolation == Isolation::Rootful {
        nodev | MsFlags::MS_RDONLY
    } else {
        nodev
    };
    mnt(Some("sysfs"), &sys, Some("sysfs"), sys_flags, None)?;
    let cg = sys.join("fs/cgroup");
    mnt(
        Some("tmpfs"),
        &cg,
        Some("tmpfs"),
        nodev,
        Some("mode=755,size=64k"),
    )?;
    for h in crate::cgroups::HIERARCHIES {
        let target = cg.join(h);
        ensure_dir(&target)?;
        let (fstype, data) = match *h {
            "unified" => ("cgroup2", String::new()),
            "systemd" => ("cgroup", "none,name=systemd".to_string()),
            c => ("cgroup", c.to_string()),
        };
        mnt(
            Some("cgroup"),
            &target,
            Some(fstype),
            nodev,
            (!data.is_empty()).then_some(data.as_str()),
        )?;
    }
    // 6. A minimal /dev: device nodes made by the host (a user namespace cannot mknod), a
    //    private devpts, shm and mqueue.
    let dev = root.join("dev");
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=64k"),
    )?;
    for (name, _, _) in DEVICES {
        let target = match *name {
            "tun" => {
                ensure_dir(&dev.join("net"))?;
                dev.join("net/tun")
            }
            n => dev.join(n),
        };
        ensure_file(&target)?;
        bind(&nd.dev().join(name), &target, false)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    symlink("pts/ptmx", &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mnt(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nodev,
        // Docker's default shm size; inodes bounded too (a tmpfs's default is half of the
        // host's memory pages, and inodes are kernel memory).
        Some("mode=1777,size=65536k,nr_inodes=16384"),
    )?;
    let mq = dev.join("mqueue");
    ensure_dir(&mq)?;
    mnt(Some("mqueue"), &mq, Some("mqueue"), nodev, None)?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, &dev.join(link))?;
    }
    // 7. /run on tmpfs (the engine's sockets live there), containerd's configuration, and the
    //    /etc files the host maintains.
    // Pages of a tmpfs are charged to the node's memory cgroup, but without a size it offers
    // half of the host's memory, and its inodes are kernel memory: bounded like /dev/shm.
    mnt(
        Some("tmpfs"),
        &root.join("run"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=262144k,nr_inodes=65536"),
    )?;
    for (src, name) in [
        (nd.hosts(), "etc/hosts"),
        (nd.resolv_conf(), "etc/resolv.conf"),
        (nd.hostname(), "etc/hostname"),
    ] {
        let target = root.join(name);
        // The image may ship these as symlinks; replace them in the node's upper layer.
        if target.is_symlink() {
            std::fs::remove_file(&target)
                .map_err(|e| format!("remove {}: {e}", target.display()))?;
        }
        ensure_file(&target)?;
        bind(&src, &target, false)?;
    }
    ensure_dir(&root.join("var/log"))?;
    let containerd_toml = root.join(CONTAINERD_CONFIG.trim_start_matches('/'));
    ensure_dir(containerd_toml.parent().expect("a file in a directory"))?;
    std::fs::write(&containerd_toml, CONTAINERD_TOML)
        .map_err(|e| format!("write {}: {e}", containerd_toml.display()))?;
    if let Some(pem) = &cfg.extra_ca {
        let dir = root.join(EXTRA_CA_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let file = dir.join("sandpit-hub.pem");
        std::fs::write(&file, pem).map_err(|e| format!("write {}: {e}", file.display()))?;
    }
    sethostname(&cfg.hostname).map_err(|e| format!("sethostname: {e}"))?;
    // 8. Enter the new root; the old one is detached so no host path stays reachable.
    chdir(&root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    if cfg.isolation == Isolation::Rootful {
        crate::sys::drop_rootful_capabilities().map_err(|e| format!("drop capabilities: {e}"))?;
    }
    Ok(())
}

fn symlink(target: &str, link: &Path) -> Result<(), String> {
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| format!("symlink {} -> {target}: {e}", link.display()))
}
