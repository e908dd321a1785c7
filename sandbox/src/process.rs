//! Host processes as the runtime sees them: identity, `/proc/<pid>/stat`, reaping, waiting for
//! a pid to be gone, and the tail of a log.
//!
//! A pid alone does not name a process: once it exits, the kernel may give the number to
//! another. So a process the runtime keeps track of (a node's PID 1) is recorded as its pid
//! and its start time, field 22 of `/proc/<pid>/stat`, in clock ticks since boot
//! ([`ProcessId`]); a live process with that pid and that start time is the same one.
//!
//! The runtime's owner is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a node's PID 1 becomes
//! its child when the launcher exits, and so does any process of a node whose parent died.
//! [`Reaper`] collects those.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A process by pid and start time, which tells it apart from a later one with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    /// The live process `pid` now, or None if it is gone or a zombie.
    pub fn of(pid: i32) -> Option<ProcessId> {
        Some(ProcessId {
            pid,
            start_time: Stat::read(pid)?.live_start_time()?,
        })
    }

    /// True if this process still runs.
    pub fn alive(&self) -> bool {
        Stat::read(self.pid).and_then(|s| s.live_start_time()) == Some(self.start_time)
    }

    /// Sends SIGKILL, if the process still runs.
    pub fn kill(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Waits until the process is gone, reaping it if it is our child; false if it still
    /// runs after `limit`.
    pub async fn wait_gone(&self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => return true,
                // Not our child (adopted after a restart): the system reaps it.
                Err(_) => {
                    if !self.alive() {
                        return true;
                    }
                }
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The fields of `/proc/<pid>/stat` the runtime reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    /// Field 3: `R`, `S`, `Z`, ...
    state: char,
    /// Field 4.
    ppid: i32,
    /// Field 22, in clock ticks since boot.
    start_time: u64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// `pid (comm) state ppid ...`: the command name may contain spaces and parentheses, so
    /// the fields are counted from the last `)`.
    fn parse(stat: &str) -> Option<Stat> {
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Stat {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_time: fields.get(22 - 3)?.parse().ok()?,
        })
    }

    fn zombie(&self) -> bool {
        self.state == 'Z'
    }

    /// The start time of a process that still runs: a zombie no longer does.
    fn live_start_time(&self) -> Option<u64> {
        (!self.zombie()).then_some(self.start_time)
    }
}

/// Reaps `pid` if it is an exited child of ours.
pub(crate) fn reap_if_exited(pid: i32) {
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// True if `pid` is gone or a zombie (it has exited; its parent has yet to reap it).
pub(crate) fn exited(pid: i32) -> bool {
    Stat::read(pid).is_none_or(|s| s.zombie())
}

/// Reaps adopted zombies whenever a child exits (at most every 200 ms); stops when dropped.
pub(crate) struct Reaper(tokio::task::JoinHandle<()>);

impl Reaper {
    pub fn start() -> std::io::Result<Reaper> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut chld = signal(SignalKind::child())?;
        Ok(Reaper(tokio::spawn(async move {
            while chld.recv().await.is_some() {
                let _ = tokio::task::spawn_blocking(reap_adopted_zombies).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reaps the zombies this process adopted from nodes.
///
/// A process of a node whose parent died (a command whose exec helper was killed by a timeout,
/// a shell whose helper was killed with its terminal) becomes our child. Nobody else waits for
/// it, and a node's PID 1 cannot finish exiting while a process of its pid namespace is
/// unreaped. Such processes live in a pid namespace below ours (two or more `NSpid` entries),
/// which no child we spawned ourselves (and may wait for elsewhere) has; node inits are among
/// them, and their waiters accept that someone else reaped them.
fn reap_adopted_zombies() {
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !Stat::read(pid).is_some_and(|s| s.zombie() && s.ppid == me) {
            continue;
        }
        let nested = std::fs::read_to_string(p.path().join("status")).is_ok_and(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .is_some_and(|v| v.split_whitespace().count() >= 2)
        });
        if nested {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// The last `lines` lines of a log file (or why it could not be read), for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_skips_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        let s = Stat::parse(stat).unwrap();
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 1, 987654));
        assert_eq!(s.live_start_time(), Some(987654));
        let zombie = "42 (x) Z 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        let z = Stat::parse(zombie).unwrap();
        assert!(z.zombie());
        assert_eq!((z.ppid, z.live_start_time()), (7, None));
        assert_eq!(Stat::parse("42 (x) S 1"), None);
    }

    #[test]
    fn own_process_has_an_identity() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        assert!(!ProcessId {
            start_time: me.start_time + 1,
            ..me
        }
        .alive());
        assert!(!exited(me.pid));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = crate::testdir::TempDir::new("process-tail");
        let log = dir.0.join("log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&log, 2), "b\nc");
        assert!(tail(&dir.0.join("missing"), 2).contains("missing"));
    }
}
