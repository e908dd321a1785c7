//! Reading a shell's output into the ring, paced during floods.
//!
//! What a PTY master costs to read shapes this (measured on the 2-core machines we run on,
//! Linux 6.18; BENCHMARKS.md has the figures, `pty-floor` in ops/bench reproduces them):
//!
//! - the line discipline hands the master at most its read buffer per read ([`FULL_READ`]
//!   bytes), copied out 64 bytes at a time, which alone costs about 2.5 ns a byte;
//! - output reaches that buffer through a kernel worker, which wakes readers (and epoll) at
//!   every delivery, during a flood often a single line; a read that finds the buffer empty
//!   waits for that worker. Either way it is a context switch, for about 1.3 KB on average.
//!
//! A reader that reads whenever it is woken spends most of its CPU switching. So once a round
//! found a lot ([`FLOOD_ROUND`]), the reader takes the master out of epoll and sleeps
//! [`FLOOD_PACE`] before each round: meanwhile the PTY's buffers fill (about 20 KB of line
//! output; then the shell's writes block), and the round takes that backlog in full reads,
//! stopping at the first read that is not full, which means the backlog is gone and further
//! reads would only chase the shell line by line. The pause is a `timerfd` in the reactor, as
//! tokio's own timers tick in milliseconds. A flood then costs about a third less server CPU
//! per byte and still flows at about 35 MB/s. Output that trickles in (typed echo, a prompt) is
//! read the moment epoll reports it.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::pty::{self, READ_SIZE};
use crate::shared::Shared;
/// Output is read into segments of this size and published as slices of them (no copy).
const SEGMENT: usize = 256 << 10;
/// Most bytes read in one round before viewers are told.
const BATCH: usize = 256 << 10;
/// What one read returns when the line discipline's read buffer was full (4 KiB less one).
const FULL_READ: usize = 4095;
/// A round that found at least this much means output is flooding in: pace the next one.
const FLOOD_ROUND: usize = 2 << 10;
/// Pause before each round during a flood: about the time a fast shell takes to fill the PTY
/// (shorter pauses cost more CPU per byte, longer ones cap the rate below 35 MB/s).
const FLOOD_PACE: Duration = Duration::from_micros(500);
/// Most output read after the shell exited (its children may still write).
const DRAIN_AFTER_EXIT: usize = 1 << 20;

/// Moves one shell's PTY output into the ring.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    /// The reader's own descriptor of the master.
    master: OwnedFd,
    /// Another one in epoll's read interest, while output trickles in; none during a flood,
    /// when every delivery would wake the runtime.
    watch: Option<AsyncFd<OwnedFd>>,
    /// Paces rounds during a flood (made at the first one).
    pace: Option<PaceTimer>,
    /// Free space to read into; `split_to` hands the filled front to the ring without copying.
    segment: BytesMut,
    filled: usize,
    budget: TokenBucket,
}

impl Reader {
    /// Reads `master` (a descriptor of the shell's PTY master of its own, non-blocking) into
    /// `shared`'s ring, at most `bytes_per_sec`.
    pub(crate) fn new(shared: Arc<Shared>, master: OwnedFd, bytes_per_sec: u64) -> Self {
        Self {
            shared,
            master,
            watch: None,
            pace: None,
            segment: BytesMut::zeroed(SEGMENT),
            filled: 0,
            budget: TokenBucket::new(bytes_per_sec),
        }
    }

    /// Reads until the shell side hangs up, and returns the error that says so (`EIO` once
    /// the shell side is closed and everything was read) or another one. Cancel-safe: what
    /// was read is published before any wait.
    pub(crate) async fn run(&mut self) -> io::Error {
        let mut flood = false;
        loop {
            if let Some(wait) = self.budget.wait() {
                tokio::time::sleep(wait).await;
            }
            let waited = if flood {
                self.pause().await
            } else {
                self.readable().await
            };
            if let Err(e) = waited {
                return e;
            }
            let got = self.round(flood);
            self.publish();
            match got {
                Ok(n) => flood = n >= FLOOD_ROUND,
                Err(e) => return e,
            }
            if flood {
                self.watch = None;
            }
        }
    }

    /// Sleeps [`FLOOD_PACE`].
    async fn pause(&mut self) -> io::Result<()> {
        let pace = match &mut self.pace {
            Some(pace) => pace,
            None => self.pace.insert(PaceTimer::new()?),
        };
        pace.sleep(FLOOD_PACE).await
    }

    /// Waits until the master has output or hung up, watching it first if need be.
    async fn readable(&mut self) -> io::Result<()> {
        let watch = match &mut self.watch {
            Some(watch) => watch,
            None => self
                .watch
                .insert(pty::register(self.master.try_clone()?, Interest::READABLE)?),
        };
        // Cleared before reading: output that arrives while the round runs makes the fd
        // ready again, so nothing is missed (at worst a round finds nothing).
        watch.readable().await?.clear_ready();
        Ok(())
    }

    /// Reads what the PTY holds until it holds nothing (during a flood: until a read is not
    /// full), a batch was read or the budget is spent; returns how much. Errors once the shell
    /// side is closed (or at end of file).
    fn round(&mut self, flood: bool) -> io::Result<usize> {
        let mut got = 0;
        while got < BATCH && !self.budget.is_empty() {
            match self.read() {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    got += n;
                    self.budget.spend(n);
                    if flood && n < FULL_READ {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Reads what is buffered without waiting for more (the shell exited).
    pub(crate) fn drain(&mut self) {
        let mut total = 0;
        while total < DRAIN_AFTER_EXIT {
            match self.read() {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        self.publish();
    }

    /// One non-blocking read into the segment (a fresh one when it has no room for a full
    /// read, publishing the old one first).
    fn read(&mut self) -> io::Result<usize> {
        if self.segment.len() - self.filled < READ_SIZE {
            self.publish();
            self.segment = BytesMut::zeroed(SEGMENT);
        }
        let space = &mut self.segment[self.filled..self.filled + READ_SIZE];
        let n = pty::read(&self.master, space)?;
        self.filled += n;
        Ok(n)
    }

    fn publish(&mut self) {
        if self.filled > 0 {
            let chunk = self.segment.split_to(self.filled).freeze();
            self.filled = 0;
            self.shared.push_output(chunk);
        }
    }
}

/// A timer with the resolution of the kernel's (tokio's own ticks in milliseconds): a
/// `timerfd` in the reactor.
struct PaceTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PaceTimer {
    fn new() -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(Self {
            fd: pty::register(fd, Interest::READABLE)?,
        })
    }

    /// Sleeps `duration`. Cancel-safe: the next call re-arms the timer, which also forgets
    /// an expiry nobody read.
    async fn sleep(&self, duration: Duration) -> io::Result<()> {
        let it_value = Timespec::try_from(duration).map_err(|_| io::ErrorKind::InvalidInput)?;
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value,
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        let mut expirations = [0u8; 8];
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| pty::read(fd.get_ref(), &mut expirations)) {
                Ok(result) => return result.map(drop),
                // A stale readiness: the timer has not expired yet.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The read budget: refills at `rate` bytes per second up to a burst of 1/20 s.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        let burst = (rate / 20.0).max(2.0 * READ_SIZE as f64);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    fn is_empty(&self) -> bool {
        self.tokens <= 0.0
    }

    /// How long to pause before reading again, if over budget: until a full read is affordable.
    fn wait(&mut self) -> Option<Duration> {
        self.refill();
        if self.tokens > 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(
            (READ_SIZE as f64 - self.tokens) / self.rate,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pace_timer_waits_at_least_its_time_and_survives_cancelling() {
        let timer = PaceTimer::new().expect("timerfd");
        let start = Instant::now();
        timer
            .sleep(Duration::from_micros(1500))
            .await
            .expect("sleep");
        assert!(start.elapsed() >= Duration::from_micros(1500));
        // A sleep dropped before its expiry leaves the timer armed; the next one re-arms it
        // and still waits its whole time.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(1),
            timer.sleep(Duration::from_secs(5)),
        )
        .await;
        assert!(cancelled.is_err());
        let start = Instant::now();
        timer.sleep(Duration::from_millis(2)).await.expect("sleep");
        assert!(start.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn the_read_budget_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(1 << 20);
        // A burst of at least two full reads is allowed at once.
        assert!(bucket.wait().is_none());
        bucket.spend(2 * READ_SIZE);
        assert!(bucket.is_empty());
        bucket.spend(READ_SIZE);
        // Over budget by one read: wait until two reads' worth has come back.
        let wait = bucket.wait().expect("over budget");
        let expected = 2.0 * READ_SIZE as f64 / (1 << 20) as f64;
        assert!((wait.as_secs_f64() - expected).abs() < 0.01, "{wait:?}");
        // Time passing refills it.
        bucket.last -= Duration::from_secs(1);
        assert!(bucket.wait().is_none());
        assert!(bucket.tokens <= bucket.burst);
    }
}
