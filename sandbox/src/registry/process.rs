//! One `docker-registry` process (the distribution registry from Debian's package), started by
//! the runtime's owner, restarted when it dies, killed when the owner goes.
//!
//! It listens on a unix socket in the state directory, never on TCP: only the owner's relays
//! (and root on the host) reach it. Its pid is kept in a file, so an owner that was killed
//! before it could stop its registry has that registry stopped by the next owner.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::RegistryError;
use super::layout::{Files, Layout};

/// How long a fresh registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A supervised registry. Dropping it stops the supervisor and kills the process.
pub(crate) struct Process {
    socket: PathBuf,
    /// The pid of the running registry, kept current by the supervisor.
    pid: Arc<AtomicI32>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Process {
    /// Starts registry `name` of `exe` with `config` (YAML; it must listen on the socket of
    /// `layout.files(name)`) and waits until it answers.
    pub(crate) async fn start(
        exe: &Path,
        layout: &Layout,
        name: &str,
        config: &str,
    ) -> Result<Process, RegistryError> {
        let files = layout.files(name);
        stop_stale(&files.pid, &files.config).await;
        write_private(&files.config, config)?;
        let child = spawn(exe, &files)?;
        wait_listening(&files, &child).await?;
        let socket = files.socket.clone();
        let pid = Arc::new(AtomicI32::new(pid_of(&child)));
        let supervisor = tokio::spawn(supervise(exe.to_owned(), files, child, pid.clone()));
        Ok(Process {
            socket,
            pid,
            supervisor,
        })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Process {
    /// Kills the registry at once, rather than when the aborted task is next polled, and waits
    /// (briefly) until it has exited, so that it is gone when the runtime is.
    fn drop(&mut self) {
        self.supervisor.abort();
        let pid = self.pid.load(Ordering::SeqCst);
        if pid <= 0 || kill(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
            return;
        }
        for _ in 0..1000 {
            // Gone, or a zombie that the child's owner (tokio's reaper) will collect.
            if crate::process::exited(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn pid_of(child: &tokio::process::Child) -> i32 {
    child.id().map(|p| p as i32).unwrap_or(0)
}

fn write_private(path: &Path, content: &str) -> Result<(), RegistryError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = RegistryError::io("write", path);
    // It may hold the upstream's password.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(&io)?;
    f.write_all(content.as_bytes()).map_err(io)
}

fn spawn(exe: &Path, files: &Files) -> Result<tokio::process::Child, RegistryError> {
    let _ = std::fs::remove_file(&files.socket);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log)
        .map_err(RegistryError::io("open", &files.log))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("serve")
        .arg(&files.config)
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(RegistryError::io("open", &files.log))?,
        )
        .stderr(log)
        .kill_on_drop(true);
    crate::sys::die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(RegistryError::io("run", exe))?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&files.pid, pid.to_string());
    }
    Ok(child)
}

/// Waits until the registry accepts connections on its socket.
async fn wait_listening(files: &Files, child: &tokio::process::Child) -> Result<(), RegistryError> {
    let started = std::time::Instant::now();
    loop {
        if tokio::net::UnixStream::connect(&files.socket).await.is_ok() {
            return Ok(());
        }
        let dead = child
            .id()
            .is_none_or(|pid| kill(Pid::from_raw(pid as i32), None).is_err());
        if dead || started.elapsed() > START_TIMEOUT {
            return Err(RegistryError::NotListening {
                socket: files.socket.clone(),
                log_tail: crate::process::tail(&files.log, 10),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Restarts the registry whenever it exits, with a growing pause.
async fn supervise(
    exe: PathBuf,
    files: Files,
    mut child: tokio::process::Child,
    pid: Arc<AtomicI32>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let status = child.wait().await;
        tracing::warn!(config = %files.config.display(), ?status, "registry exited; restarting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        match spawn(&exe, &files) {
            Ok(c) => {
                pid.store(pid_of(&c), Ordering::SeqCst);
                child = c;
            }
            Err(e) => {
                tracing::error!(error = %e, "restart registry");
                // Try again after the next pause; `wait` on a reaped child returns at once.
            }
        }
    }
}

/// Stops a registry that a previous owner of this state directory started and could not stop
/// (it was killed): the pid in the pid file, if that process runs our config.
async fn stop_stale(pid_file: &Path, config: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == config.as_os_str().as_encoded_bytes());
    if !ours {
        return;
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    for _ in 0..100 {
        if kill(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = kill(pid, Signal::SIGKILL);
}
