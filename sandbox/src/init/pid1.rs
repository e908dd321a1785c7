//! The node's PID 1 once its file system stands: supervise the engine (containerd, then
//! dockerd; `daemons.rs`), reap orphans, stop on SIGTERM.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::config::InitConfig;
use super::daemons::Daemon;

/// PID 1 of the node: starts the engine, restarts a daemon of it that dies, reaps every orphan,
/// and on SIGTERM stops dockerd, then containerd (up to 10 s), before exiting, which ends the
/// node.
pub(super) fn node_init(cfg: &InitConfig) -> ! {
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
    let mut containerd = Daemon::containerd();
    let mut dockerd = Daemon::dockerd(cfg);
    // Both at once: dockerd polls for containerd's socket every 10 ms until it appears (see
    // `daemons.rs`), so its own start overlaps containerd's.
    containerd.start();
    dockerd.start();
    let mut stopping: Option<Instant> = None;
    loop {
        let next_restart = [containerd.restart_at, dockerd.restart_at]
            .into_iter()
            .flatten()
            .min();
        let timeout = match (stopping, next_restart) {
            (Some(deadline), _) => deadline.saturating_duration_since(Instant::now()),
            (None, Some(at)) => at.saturating_duration_since(Instant::now()),
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
                    stopping = Some(Instant::now() + Duration::from_secs(10));
                    // dockerd first: it stops the containers through containerd.
                    match dockerd.pid {
                        Some(pid) => terminate(pid),
                        None => containerd.pid.into_iter().for_each(terminate),
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
                    let pid = status.pid();
                    if pid.is_some() && pid == dockerd.pid {
                        dockerd.exited(&status, stopping.is_some());
                        if stopping.is_some() {
                            containerd.pid.into_iter().for_each(terminate);
                        }
                    } else if pid.is_some() && pid == containerd.pid {
                        containerd.exited(&status, stopping.is_some());
                    }
                }
            }
        }
        if let Some(deadline) = stopping {
            let stopped = dockerd.pid.is_none() && containerd.pid.is_none();
            if stopped || Instant::now() >= deadline {
                std::process::exit(0);
            }
            continue;
        }
        containerd.restart_if_due();
        dockerd.restart_if_due();
    }
}

fn terminate(pid: Pid) {
    let _ = kill(pid, Signal::SIGTERM);
}
