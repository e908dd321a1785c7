//! The few mount syscalls that `nix` does not wrap: `open_tree`, `mount_setattr` and
//! `move_mount` (Linux 5.2 and 5.12). Together they make an idmapped mount: a detached clone
//! of a directory tree whose file owners are shifted through a user namespace's id map, then
//! attached somewhere else. This is the only module with `unsafe` code.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE|AT_RECURSIVE)`).
pub fn open_tree_clone(path: &Path) -> Result<OwnedFd, Errno> {
    let p = cpath(path)?;
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call; the kernel returns
    // a new file descriptor or -1, and we take ownership only of a non-negative one.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the syscall succeeded, so `fd` is an open descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes the detached mount `tree` read-only and idmapped through the user namespace `userns`
/// (an fd of `/proc/<pid>/ns/user`).
pub fn set_idmap_readonly(tree: &OwnedFd, userns: &OwnedFd) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `attr` is a properly laid out `struct mount_attr` whose size we pass; `empty`
    // is a valid C string; both outlive the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Attaches the detached mount `tree` at `target` in the caller's mount namespace.
pub fn move_mount_to(tree: &OwnedFd, target: &Path) -> Result<(), Errno> {
    let t = cpath(target)?;
    let empty = c"";
    // SAFETY: both strings are valid and outlive the call; the fd is open and owned by `tree`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Capabilities a rootful node never gets: loading modules, setting the clock, reading the
/// kernel log, raw I/O, rebooting, MAC policy and audit configuration.
const ROOTFUL_DROPPED_CAPS: &[libc::c_int] = &[
    16, // CAP_SYS_MODULE
    25, // CAP_SYS_TIME
    34, // CAP_SYSLOG
    17, // CAP_SYS_RAWIO
    22, // CAP_SYS_BOOT
    33, // CAP_MAC_ADMIN
    32, // CAP_MAC_OVERRIDE
    30, // CAP_AUDIT_CONTROL
    35, // CAP_WAKE_ALARM
    36, // CAP_BLOCK_SUSPEND
];

/// Drops [`ROOTFUL_DROPPED_CAPS`] from the bounding set, so nothing the node execs can hold them.
pub fn drop_rootful_capabilities() -> Result<(), Errno> {
    for cap in ROOTFUL_DROPPED_CAPS {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if rc < 0 && Errno::last() != Errno::EINVAL {
            return Err(Errno::last());
        }
    }
    Ok(())
}
