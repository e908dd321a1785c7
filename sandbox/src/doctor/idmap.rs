//! The idmapped-mounts check: whether this kernel and the filesystem holding the images can
//! mount idmapped, which only trying one tells.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, Pid};

use crate::kernfs::errno_of;

use super::check::{Check, IDMAP};

/// The map the idmapped-mount probe gives its throw-away user namespace.
const PROBE_ID_MAP: &str = "0 1000000 65536";

pub(super) const IDMAP_FIX: &str =
    "use Linux >= 5.12 with idmapped mount support on the filesystem of \
                         the images dir, or run with --isolation rootful (trusted users only)";

/// A failed step of the idmapped-mount probe.
#[derive(Debug)]
pub(super) struct ProbeError {
    step: String,
    errno: Errno,
}

fn step(step: impl Into<String>) -> impl FnOnce(Errno) -> ProbeError {
    let step = step.into();
    move |errno| ProbeError { step, errno }
}

/// Where to try an idmapped mount: support depends on the filesystem, so the images' own
/// if they exist yet.
pub(super) fn idmap_probe_dir(images_dir: &Path, default_image: &str) -> PathBuf {
    let rootfs = images_dir.join(default_image).join("rootfs");
    [rootfs, images_dir.to_owned()]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

pub(super) fn idmap_check(dir: &Path, result: Result<(), ProbeError>) -> Check {
    match result {
        Ok(()) => Check::ok(
            IDMAP,
            format!("an idmapped read-only mount of {} works", dir.display()),
        ),
        Err(e) => Check::fail(IDMAP, format!("{}: {}", e.step, e.errno), IDMAP_FIX),
    }
}

/// Makes a real idmapped mount of `dir` (detached, gone when its fd closes) through a
/// throw-away user namespace: the same calls the runtime makes for a node's lower layer.
pub(super) fn probe_idmapped_mount(dir: &Path) -> Result<(), ProbeError> {
    // ready: the child reports unshare's result; go: the child waits on it until released.
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
    let child = crate::sys::fork_userns_holder(&ready_w, &go_r).map_err(step("fork"))?;
    drop(ready_w);
    drop(go_r);
    let result = idmap_through(child, &ready_r, dir);
    // Release the child, and make sure it is gone and reaped whatever happened above.
    drop(go_w);
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    result
}

fn idmap_through(child: Pid, ready: &OwnedFd, dir: &Path) -> Result<(), ProbeError> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(ready, &mut buf[got..]) {
            Ok(0) => return Err(step("wait for the user-namespace child")(Errno::ECHILD)),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(step("read from the user-namespace child")(errno)),
        }
    }
    match i32::from_ne_bytes(buf) {
        0 => {}
        code => return Err(step("unshare(CLONE_NEWUSER)")(Errno::from_raw(code))),
    }
    // Host root writes the maps; the child needs no privileges of its own.
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{child}/{map}");
        fs::write(&path, PROBE_ID_MAP).map_err(|e| step(format!("write {path}"))(errno_of(&e)))?;
    }
    let ns_path = format!("/proc/{child}/ns/user");
    let userns: OwnedFd = fs::File::open(&ns_path)
        .map_err(|e| step(format!("open {ns_path}"))(errno_of(&e)))?
        .into();
    let tree =
        crate::sys::open_tree_clone(dir).map_err(step(format!("open_tree {}", dir.display())))?;
    crate::sys::set_idmap_readonly(&tree, &userns).map_err(step(format!(
        "mount_setattr(MOUNT_ATTR_IDMAP) on {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn idmap_failure_names_step_and_errno() {
        let c = idmap_check(
            Path::new("/img"),
            Err(ProbeError {
                step: "mount_setattr(MOUNT_ATTR_IDMAP) on /img".into(),
                errno: Errno::EINVAL,
            }),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c
            .detail
            .starts_with("mount_setattr(MOUNT_ATTR_IDMAP) on /img: EINVAL"));
        assert_eq!(c.fix.as_deref(), Some(IDMAP_FIX));
        assert_eq!(idmap_check(Path::new("/img"), Ok(())).status, Status::Ok);
    }
}
