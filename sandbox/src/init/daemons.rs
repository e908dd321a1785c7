//! The node's engine as two daemons that PID 1 starts, restarts and stops: containerd, and
//! dockerd pointed at it (`--containerd`).
//!
//! dockerd can start containerd itself, but since Docker 23 its monitor then asks containerd
//! whether it serves before the socket exists, and the failed attempt puts the connection into
//! gRPC's reconnect backoff (1 s base): every node's engine waited about a second for a socket
//! that was ready after 50 ms. Started by us, containerd is only dialed by dockerd's own client,
//! which uses containerd's dialer: it waits for a missing socket in 10 ms steps. So both start
//! at once and dockerd's slow process start overlaps containerd's boot. The files stay where
//! dockerd would have put them (containerd's content on the node's Docker disk).

use std::ffi::CString;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{execve, ForkResult, Pid};

use super::config::{InitConfig, EXTRA_CA_DIR, NODE_ENV};

/// containerd's API socket, where dockerd's own containerd would have it.
const CONTAINERD_SOCKET: &str = "/run/docker/containerd/containerd.sock";
/// Written by the init on the node's /run tmpfs (see `mounts.rs`).
pub(super) const CONTAINERD_CONFIG: &str = "/run/sandpit/containerd.toml";

/// What dockerd would have written for its own containerd: its content and snapshots on the
/// node's Docker disk, state on /run, and no Kubernetes CRI plugin. Version 2 is read by
/// containerd 1.6 (bookworm) and 1.7 (trixie).
pub(super) const CONTAINERD_TOML: &str = r#"# Written by sandpit's node init: the containerd of this node's dockerd.
version = 2
root = "/var/lib/docker/containerd/daemon"
state = "/run/docker/containerd/daemon"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "/run/docker/containerd/containerd.sock"

[debug]
  address = "/run/docker/containerd/containerd-debug.sock"
"#;

/// A daemon PID 1 keeps running: started again after it exits, with a growing pause while it
/// keeps failing.
pub(super) struct Daemon {
    pub name: &'static str,
    argv: Vec<CString>,
    env: Vec<CString>,
    log: &'static str,
    pub pid: Option<Pid>,
    started_at: Instant,
    backoff: Duration,
    pub restart_at: Option<Instant>,
}

impl Daemon {
    pub fn containerd() -> Daemon {
        Daemon::new(
            "containerd",
            vec![
                "/usr/bin/containerd".into(),
                format!("--config={CONTAINERD_CONFIG}"),
            ],
            Vec::new(),
            "/var/log/containerd.log",
        )
    }

    pub fn dockerd(cfg: &InitConfig) -> Daemon {
        let mut argv = vec![
            "/usr/sbin/dockerd".to_string(),
            format!("--containerd={CONTAINERD_SOCKET}"),
        ];
        argv.extend(cfg.dockerd_args.iter().cloned());
        let mut env = Vec::new();
        if cfg.extra_ca.is_some() {
            // Go reads every certificate in these directories on top of the system bundle.
            env.push(format!("SSL_CERT_DIR=/etc/ssl/certs:{EXTRA_CA_DIR}"));
        }
        Daemon::new("dockerd", argv, env, "/var/log/dockerd.log")
    }

    fn new(name: &'static str, argv: Vec<String>, env: Vec<String>, log: &'static str) -> Daemon {
        let cstr = |s: String| CString::new(s).expect("no NUL in a daemon's arguments");
        Daemon {
            name,
            argv: argv.into_iter().map(cstr).collect(),
            env: NODE_ENV
                .iter()
                .map(|e| e.to_string())
                .chain(env)
                .map(cstr)
                .collect(),
            log,
            pid: None,
            started_at: Instant::now(),
            backoff: Duration::from_millis(500),
            restart_at: None,
        }
    }

    /// Starts the daemon; a failed fork (the pids limit during a fork bomb) is retried later.
    pub fn start(&mut self) {
        self.pid = spawn(&self.argv, &self.env, self.log, self.name);
        self.started_at = Instant::now();
        self.restart_at = self.pid.is_none().then(|| Instant::now() + self.backoff);
    }

    /// Notes that the daemon exited; unless the node is stopping, it starts again later.
    pub fn exited(&mut self, status: &nix::sys::wait::WaitStatus, stopping: bool) {
        self.pid = None;
        if self.started_at.elapsed() > Duration::from_secs(60) {
            self.backoff = Duration::from_millis(500);
        }
        if !stopping {
            eprintln!(
                "sandpit init: {} exited ({status:?}); restarting in {:?}",
                self.name, self.backoff
            );
            self.restart_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Starts the daemon again if its pause is over.
    pub fn restart_if_due(&mut self) {
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            self.start();
        }
    }
}

/// Forks and execs `argv` in its own session, its output appended to `log`.
fn spawn(argv: &[CString], env: &[CString], log: &str, name: &str) -> Option<Pid> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
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
            let e = execve(&argv[0], argv, env).unwrap_err();
            eprintln!("sandpit init: exec {name}: {e}");
            std::process::exit(127)
        }
        Err(e) => {
            eprintln!("sandpit init: fork {name}: {e}");
            None
        }
    }
}
