//! The few mount syscalls that `nix` does not wrap: `open_tree`, `mount_setattr` and
//! `move_mount` (Linux 5.2 and 5.12). Together they make an idmapped mount: a detached clone
//! of a directory tree whose file owners are shifted through a user namespace's id map, then
//! attached somewhere else. This is the only module with `unsafe` code.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
/// kernel log, raw I/O, rebooting, MAC policy and audit configuration, and opening files by
/// handle (which reaches any file of a host filesystem the node has a mount of).
const ROOTFUL_DROPPED_CAPS: &[libc::c_int] = &[
    2,  // CAP_DAC_READ_SEARCH
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

/// Whether this process was single-threaded when first asked (from `/proc/self/status`).
/// Ask before joining another mount namespace, whose `/proc` may not show this process.
pub fn single_threaded() -> bool {
    static ONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse::<u32>().ok())
            })
            == Some(1)
    })
}

/// Forks, but only when the caller is single-threaded ([`single_threaded`]): then the child
/// may do anything, not just async-signal-safe work. Our re-executed helpers (launcher, node
/// init, exec) are single-threaded by construction and start no threads.
pub fn fork_single_threaded() -> Result<nix::unistd::ForkResult, Errno> {
    if !single_threaded() {
        return Err(Errno::EDEADLK);
    }
    // SAFETY: the process has exactly one thread, so no lock can be held by a thread that does
    // not exist in the child.
    unsafe { nix::unistd::fork() }
}

/// Forks a child that unshares a user namespace, reports the result as an `i32` errno (0 on
/// success) on `ready`, waits until `go` is closed or written, and exits. The child runs only
/// async-signal-safe calls, so this is sound even in a multi-threaded caller. Returns its pid.
pub fn fork_userns_holder(ready: &OwnedFd, go: &OwnedFd) -> Result<nix::unistd::Pid, Errno> {
    // SAFETY: the child below calls only unshare, write, read and _exit, all async-signal-safe;
    // it allocates nothing and never returns into the caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(errno) => errno as i32,
            };
            let _ = nix::unistd::write(ready, &code.to_ne_bytes());
            let mut buf = [0u8; 1];
            let _ = nix::unistd::read(go, &mut buf);
            // SAFETY: _exit ends this forked copy at once, without the parent's destructors.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Makes `fd` appear as descriptor `target` in the program `cmd` will run (cleared of
/// close-on-exec), without leaking it to other children spawned concurrently.
pub fn pass_fd(cmd: &mut tokio::process::Command, fd: RawFd, target: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls dup2 and fcntl, which are
    // async-signal-safe. dup2 clears FD_CLOEXEC on the new descriptor; when the descriptor is
    // already `target`, dup2 does nothing and the flag is cleared with fcntl.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of the descriptors this process inherited at fixed numbers, once.
pub fn take_inherited_fds<const N: usize>(fds: [RawFd; N]) -> Result<[OwnedFd; N], Errno> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(Errno::EBUSY);
    }
    for fd in fds {
        // Fails with EBADF if nothing is open there.
        nix::fcntl::fcntl(
            // SAFETY: only used for the duration of this call, to ask whether the fd is open.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )?;
    }
    // SAFETY: each descriptor is open, was set up for us by our parent, and the static above
    // makes sure it gets one owner.
    Ok(fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Receives a message of at most `buf.len()` bytes and at most four descriptors passed with
/// SCM_RIGHTS. Returns the byte count and the descriptors.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut owned = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed these descriptors in our table for us alone.
            owned.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    Ok((msg.bytes, owned))
}

/// Restores the default disposition of SIGPIPE, which the Rust runtime sets to "ignore" at
/// start and `execve` keeps: without this, every program a node runs would get EPIPE instead
/// of dying quietly (`yes | head -1` would print "Broken pipe"). Call in a forked child right
/// before `execve`.
pub fn reset_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code, so no function of ours can run in signal
    // context; the call only changes this process's disposition table.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

/// Resets the disposition of every signal to the default, so nothing the server (or whoever
/// started it) ignores stays ignored in a program exec'd after this: a shell would keep an
/// ignored SIGINT ignored for its jobs, and Ctrl-C would do nothing. Handlers need no reset
/// (`execve` does it); ignored signals do. Call in a forked child right before `execve`.
///
/// The raw system call, because the C library refuses to touch the two real-time signals it
/// reserves for itself (32 and 33), which an ignoring parent passes on just the same.
pub fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` on x86_64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SIGKILL and SIGSTOP refuse with EINVAL and are never ignored anyway.
    for sig in 1..=64 {
        // SAFETY: `default` is a valid kernel sigaction that outlives the call, the old action
        // is not asked for (null), and the size is that of the kernel's 64-bit signal set.
        // SIG_DFL installs no code, so nothing of ours can run in signal context; the call
        // only changes this process's disposition table and is async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// Has the kernel send SIGTERM to the program `cmd` will run when the thread that spawned it
/// ends, so a host service we start (the registry) does not outlive a killed owner.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
