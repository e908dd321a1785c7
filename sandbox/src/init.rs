//! Starting a node: the host side of the launch handshake and the node's own init.
//!
//! A node is started by re-executing our own binary (`sandpit __node-init <dir>`) rather than by
//! forking the multi-threaded server: the new process is single-threaded, so it may call
//! `unshare(CLONE_NEWUSER)` (refused to threaded callers) and do ordinary work after `fork`.
//!
//! Process model and handshake over a socketpair (fd 3 in the child):
//! ```text
//! host (runtime)                      launcher (sandpit __node-init)        node init (PID 1)
//! spawn launcher ------------------->  wait
//! move launcher into node cgroups
//! "attached" ----------------------->  unshare(user*, mnt, net, uts, ipc, cgroup)
//!                                      make / private
//!           <----------------------- "unshared"
//! write uid/gid maps*, make idmapped
//! base image*, veth into its netns
//! "mapped" + image fd* ------------>   become root in the userns*
//!                                      unshare(pid); fork ------------->  mount overlay root,
//!           <----------------------- "pid <n>"; exit                      /var/lib/docker, /proc,
//!                                                                         /sys, cgroups, /dev,
//!                                                                         /etc files; pivot_root
//!           <--------------------------------------------------------- "ready" | "error <why>"
//! poll the engine's socket                                                start and supervise
//!                                                                         dockerd, reap zombies
//! ```
//! (* user-namespace isolation only.) Ordering constraints: the launcher joins the node's
//! cgroups before it creates its cgroup namespace, so that namespace's root is the node's
//! cgroup; the maps must exist before the launcher can become root in its user namespace; the
//! idmapped mount needs the user namespace, so only the host can make it and passes it as a
//! file descriptor; `/proc` is mounted by the node's PID 1, since a proc mount shows the pid
//! namespace of its mounter.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, execve, pivot_root, setgroups, sethostname, setresgid, setresuid, ForkResult, Gid, Pid,
    Uid,
};
use serde::{Deserialize, Serialize};

use crate::config::Isolation;
use crate::rootfs::{NodeDir, DEVICES};

/// The fd number of the handshake socket in the launcher.
const HANDSHAKE_FD: RawFd = 3;

/// Environment of every process the init starts.
pub(crate) const NODE_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
];

/// What the launcher and the node's init need to know, written by the host to `init.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub hostname: String,
    pub isolation: Isolation,
    /// The base image's root filesystem (used directly as the lower layer in rootful mode).
    pub image_rootfs: PathBuf,
    pub dockerd_args: Vec<String>,
    /// A certificate authority (PEM) dockerd trusts besides the system's: the offline stand-in
    /// for Docker Hub's (see `registry/mod.rs`).
    #[serde(default)]
    pub extra_ca: Option<String>,
}

/// Where the node's init puts `extra_ca` (on the node's /run tmpfs, rewritten at each start).
const EXTRA_CA_DIR: &str = "/run/sandpit/ca";

/// Errors of the launch, as seen by the host.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("start the node launcher {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("node launch handshake: {0}")]
    Handshake(String),
    #[error("node setup failed inside the node: {0}")]
    Node(String),
    #[error("{op} for the node launcher (pid {pid}): {source}")]
    Host {
        op: &'static str,
        pid: i32,
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

/// The host's end of a launch in progress.
pub(crate) struct Launch {
    sock: tokio::net::UnixStream,
    child: tokio::process::Child,
    pub launcher_pid: i32,
    buf: Vec<u8>,
}

impl Launch {
    /// Starts `exe __node-init <dir>`, with the handshake socket as fd 3 and its stderr going to
    /// `<dir>/init.log`.
    pub fn spawn(exe: &Path, dir: &Path) -> Result<Launch, InitError> {
        let spawn_err = |source| InitError::Spawn {
            exe: exe.to_owned(),
            source,
        };
        let (host, child_end) = UnixStream::pair().map_err(spawn_err)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("init.log"))
            .map_err(spawn_err)?;
        let child_fd = child_end.as_raw_fd();
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("__node-init")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        crate::sys::pass_fd(&mut cmd, child_fd, HANDSHAKE_FD);
        let child = cmd.spawn().map_err(spawn_err)?;
        drop(child_end);
        host.set_nonblocking(true).map_err(spawn_err)?;
        let sock = tokio::net::UnixStream::from_std(host).map_err(spawn_err)?;
        let launcher_pid = child.id().map(|p| p as i32).unwrap_or(-1);
        Ok(Launch {
            sock,
            child,
            launcher_pid,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, msg: &str, fd: Option<&OwnedFd>) -> Result<(), InitError> {
        let line = format!("{msg}\n");
        loop {
            self.sock
                .writable()
                .await
                .map_err(|e| InitError::Handshake(format!("send {msg}: {e}")))?;
            let res = self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                let iov = [IoSlice::new(line.as_bytes())];
                let fds;
                let cmsgs: &[ControlMessage] = match fd {
                    Some(fd) => {
                        fds = [fd.as_raw_fd()];
                        &[ControlMessage::ScmRights(&fds)]
                    }
                    None => &[],
                };
                sendmsg::<()>(self.sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
                    .map_err(std::io::Error::from)
            });
            match res {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(InitError::Handshake(format!("send {msg}: {e}"))),
            }
        }
    }

    /// Reads the next line from the launcher or the node's init. An `error ...` line becomes
    /// [`InitError::Node`].
    pub async fn recv(&mut self, timeout: Duration) -> Result<String, InitError> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=pos).collect();
                    return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .sock
                    .read(&mut chunk)
                    .await
                    .map_err(|e| InitError::Handshake(format!("read: {e}")))?;
                if n == 0 {
                    return Err(InitError::Handshake(
                        "the node launcher exited before it finished (see init.log)".into(),
                    ));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        let line = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| InitError::Handshake(format!("no answer within {timeout:?}")))??;
        match line.strip_prefix("error ") {
            Some(why) => Err(InitError::Node(why.to_string())),
            None => Ok(line),
        }
    }

    pub async fn expect(&mut self, want: &str, timeout: Duration) -> Result<(), InitError> {
        let got = self.recv(timeout).await?;
        if got == want {
            Ok(())
        } else {
            Err(InitError::Handshake(format!(
                "expected {want:?}, got {got:?}"
            )))
        }
    }

    /// Writes the user namespace's id maps: root inside is `base` outside, 65536 ids.
    pub fn write_id_maps(&self, base: u32) -> Result<(), InitError> {
        let pid = self.launcher_pid;
        let map = format!("0 {base} 65536\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{file}"), &map).map_err(|source| {
                InitError::Host {
                    op: "write id map",
                    pid,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The launcher's user namespace, for the idmapped mount.
    pub fn userns_fd(&self) -> Result<OwnedFd, InitError> {
        let pid = self.launcher_pid;
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|source| InitError::Host {
                op: "open user namespace",
                pid,
                source,
            })
    }

    /// Kills the launcher if it is still there and reaps it.
    pub async fn finish(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Launcher and node init (run in the re-executed, single-threaded binary)
// ---------------------------------------------------------------------------------------------

/// Entry point of `sandpit __node-init <dir>`. Never returns.
pub fn run_node_init(dir: &Path) -> ! {
    let sock = match crate::sys::take_inherited_fd(HANDSHAKE_FD) {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("sandpit node init: no handshake socket on fd {HANDSHAKE_FD}: {e}");
            std::process::exit(1)
        }
    };
    let mut conn = Conn { sock: Some(sock) };
    match launcher(dir, &mut conn) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let _ = conn.send(&format!("error {e}"));
            eprintln!("sandpit node init: {e}");
            std::process::exit(1)
        }
    }
}

/// The launcher's end of the handshake. The protocol is lockstep (each side sends only after
/// it has read the other's message), so reading byte by byte never takes more than one line.
struct Conn {
    sock: Option<UnixStream>,
}

impl Conn {
    fn sock(&self) -> std::io::Result<&UnixStream> {
        self.sock
            .as_ref()
            .ok_or_else(|| std::io::Error::other("handshake closed"))
    }
    fn send(&mut self, msg: &str) -> std::io::Result<()> {
        let mut s = self.sock()?;
        s.write_all(format!("{msg}\n").as_bytes())
    }
    fn close(&mut self) {
        self.sock = None;
    }
    fn expect(&mut self, want: &str) -> Result<(), String> {
        let mut s = self.sock().map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => return Err(format!("the host closed the handshake before {want:?}")),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => line.push(b[0]),
                Err(e) => return Err(format!("read handshake: {e}")),
            }
        }
        if line == want.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "expected {want:?} from the host, got {:?}",
                String::from_utf8_lossy(&line)
            ))
        }
    }
    /// Receives `want` with an optional file descriptor attached.
    fn expect_with_fd(&mut self, want: &str) -> Result<Option<OwnedFd>, String> {
        let sock = self.sock().map_err(|e| e.to_string())?.as_raw_fd();
        let mut data = [0u8; 64];
        let (n, fd) = crate::sys::recv_with_fd(sock, &mut data)
            .map_err(|e| format!("receive {want}: {e}"))?;
        let text = String::from_utf8_lossy(&data[..n]);
        if text.trim_end() == want {
            Ok(fd)
        } else {
            Err(format!("expected {want:?} from the host, got {text:?}"))
        }
    }
}

fn launcher(dir: &Path, conn: &mut Conn) -> Result<(), String> {
    let nd = NodeDir::new(dir.to_owned());
    let cfg: InitConfig = crate::state::load(&nd.init_config()).map_err(|e| e.to_string())?;
    let userns = cfg.isolation == Isolation::Userns;

    conn.expect("attached")?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    conn.send("unshared").map_err(|e| e.to_string())?;

    let lower_fd = conn.expect_with_fd("mapped")?;
    if userns {
        // The maps exist now: become root of the user namespace (groups first, while we may).
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| format!("setresgid 0: {e}"))?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| format!("setresuid 0: {e}"))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid namespace: {e}"))?;
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork node init: {e}"))? {
        ForkResult::Parent { child } => {
            conn.send(&format!("pid {child}"))
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        ForkResult::Child => {
            let res = setup_node(&nd, &cfg, lower_fd);
            match res {
                Ok(()) => {
                    let _ = conn.send("ready");
                    conn.close();
                    node_init(&cfg)
                }
                Err(e) => {
                    let _ = conn.send(&format!("error {e}"));
                    std::process::exit(1)
                }
            }
        }
    }
}

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
fn setup_node(nd: &NodeDir, cfg: &InitConfig, lower_fd: Option<OwnedFd>) -> Result<(), String> {
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
        Some("mode=1777,size=65536k"),
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
    // 7. /run on tmpfs (dockerd's socket lives there) and the /etc files the host maintains.
    mnt(
        Some("tmpfs"),
        &root.join("run"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
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

/// PID 1 of the node: starts dockerd, restarts it when it dies, reaps every orphan, and on
/// SIGTERM stops dockerd (up to 10 s) before exiting, which ends the node.
fn node_init(cfg: &InitConfig) -> ! {
    // From here on our stderr goes to a log on the node's own disk: the launcher's log is a
    // host file, and the node's root could write to it through /proc/1/fd/2.
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/sandpit-init.log")
    {
        let _ = nix::unistd::dup2_stderr(&log);
    }
    // Docker needs shared propagation below / for its own mounts.
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SHARED,
        None::<&str>,
    );
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("sandpit init: block signals: {e}");
        std::process::exit(1);
    }
    let sfd = match SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandpit init: signalfd: {e}");
            std::process::exit(1);
        }
    };
    let mut dockerd = start_dockerd(cfg);
    let mut started_at = std::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut restart_at: Option<std::time::Instant> = None;
    let mut stopping: Option<std::time::Instant> = None;
    loop {
        let timeout = match (stopping, restart_at) {
            (Some(deadline), _) => deadline.saturating_duration_since(std::time::Instant::now()),
            (None, Some(at)) => at.saturating_duration_since(std::time::Instant::now()),
            (None, None) => Duration::from_secs(3600),
        };
        let mut fds = [nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        while let Ok(Some(info)) = sfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) if stopping.is_none() => {
                    stopping = Some(std::time::Instant::now() + Duration::from_secs(10));
                    if let Some(pid) = dockerd {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
                _ => {}
            }
        }
        // Reap everything that exited: our children and every orphan of the node.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == dockerd {
                        dockerd = None;
                        if started_at.elapsed() > Duration::from_secs(60) {
                            backoff = Duration::from_millis(500);
                        }
                        if stopping.is_none() {
                            eprintln!("sandpit init: dockerd exited ({status:?}); restarting in {backoff:?}");
                            restart_at = Some(std::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        }
        if let Some(deadline) = stopping {
            if dockerd.is_none() || std::time::Instant::now() >= deadline {
                std::process::exit(0);
            }
            continue;
        }
        if let Some(at) = restart_at {
            if std::time::Instant::now() >= at {
                dockerd = start_dockerd(cfg);
                started_at = std::time::Instant::now();
                // A failed fork (the pids limit during a fork bomb) is retried later.
                restart_at = dockerd
                    .is_none()
                    .then(|| std::time::Instant::now() + backoff);
            }
        }
    }
}

/// Forks and execs dockerd with its output in /var/log/dockerd.log.
fn start_dockerd(cfg: &InitConfig) -> Option<Pid> {
    let mut argv = vec!["/usr/sbin/dockerd".to_string()];
    argv.extend(cfg.dockerd_args.iter().cloned());
    let argv: Vec<std::ffi::CString> = argv
        .into_iter()
        .map(|a| std::ffi::CString::new(a).expect("no NUL in dockerd args"))
        .collect();
    let mut env: Vec<String> = NODE_ENV.iter().map(|e| e.to_string()).collect();
    if cfg.extra_ca.is_some() {
        // Go reads every certificate in these directories on top of the system bundle.
        env.push(format!("SSL_CERT_DIR=/etc/ssl/certs:{EXTRA_CA_DIR}"));
    }
    let env: Vec<std::ffi::CString> = env
        .into_iter()
        .map(|e| std::ffi::CString::new(e).expect("no NUL in the environment"))
        .collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/dockerd.log");
    match crate::sys::fork_single_threaded() {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            let _ = nix::unistd::setsid();
            if let Ok(log) = &log {
                let _ = nix::unistd::dup2_stdout(log);
                let _ = nix::unistd::dup2_stderr(log);
            }
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
            }
            let e = execve(&argv[0], &argv, &env).unwrap_err();
            eprintln!("sandpit init: exec dockerd: {e}");
            std::process::exit(127)
        }
        Err(e) => {
            eprintln!("sandpit init: fork dockerd: {e}");
            None
        }
    }
}
