//! What reading a PTY costs on this machine, with no server around it: the floor under any
//! terminal server's "MB of output per server CPU-second".
//!
//! Runs termbench's throughput command (`head -c 50000000 /dev/zero | base64 -w 100`, 68 MB
//! of output) on a fresh PTY, reads the master with one strategy on the main thread and sends
//! every byte read over loopback TCP to a sink thread, the way a server forwards output to a
//! WebSocket. The reading thread's own CPU time (user + system, from `getrusage`) is the
//! figure; the producer and the sink are not counted, as termbench counts only the server.
//!
//! Strategies:
//! - `eager`: wait in poll(2), then read until the PTY is empty (what a reader driven by
//!   readiness does, sandpit's outside floods and ttyd's);
//! - `paced:<µs>`: sleep that long, then read until a read does not fill the line discipline's
//!   buffer (sandpit's flood mode).
//!
//! ```sh
//! cargo run --release -p sandpit-bench --bin pty-floor -- --reps 3
//! ```
//!
//! Prints one JSON object per strategy (medians over the repetitions, with every value) and
//! writes them to target/bench/pty-floor.jsonl.

use std::fs::File;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;

mod stats;
use stats::{median, round1, round_all};

/// The output termbench's throughput scenario asks for.
const PRODUCER: &str = "head -c 50000000 /dev/zero | base64 -w 100";
/// Bytes asked per read (a PTY hands out at most about 4 KiB).
const READ_SIZE: usize = 64 << 10;
/// A read this long emptied a full line-discipline buffer (4095 bytes): more is likely queued.
const FULL_READ: usize = 4095;

/// The cost of reading a PTY and forwarding its output, per strategy.
#[derive(Parser)]
#[command(name = "pty-floor", version)]
struct Args {
    /// Comma-separated strategies: `eager`, `paced:<microseconds>`.
    #[arg(long, default_value = "eager,paced:500,paced:1000")]
    strategies: String,
    /// Runs per strategy, interleaved.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    reps: u32,
    /// Results file, one JSON object per line (relative to the current directory).
    #[arg(long, default_value = "target/bench/pty-floor.jsonl")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug)]
enum Strategy {
    Eager,
    Paced(Duration),
}

impl Strategy {
    fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "eager" => Ok(Self::Eager),
            Some(("paced", us)) => {
                let us: u64 = us
                    .parse()
                    .with_context(|| format!("paced:{us}: microseconds expected"))?;
                Ok(Self::Paced(Duration::from_micros(us)))
            }
            _ => bail!("unknown strategy {s:?}: use eager or paced:<microseconds>"),
        }
    }

    fn name(self) -> String {
        match self {
            Self::Eager => "eager".to_owned(),
            Self::Paced(d) => format!("paced:{}", d.as_micros()),
        }
    }
}

/// One run's figures.
struct Run {
    bytes: u64,
    secs: f64,
    cpu_secs: f64,
    reads: u64,
}

fn main() -> ExitCode {
    match run_all(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pty-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_all(args: &Args) -> Result<()> {
    let strategies = args
        .strategies
        .split(',')
        .map(Strategy::parse)
        .collect::<Result<Vec<_>>>()?;
    let mut runs: Vec<Vec<Run>> = strategies.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.reps {
        for (i, strategy) in strategies.iter().enumerate() {
            runs[i].push(measure(*strategy)?);
        }
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut out =
        File::create(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    for (strategy, runs) in strategies.iter().zip(&runs) {
        let per_cpu: Vec<f64> = runs
            .iter()
            .map(|r| r.bytes as f64 / 1e6 / r.cpu_secs)
            .collect();
        let rate: Vec<f64> = runs.iter().map(|r| r.bytes as f64 / 1e6 / r.secs).collect();
        let avg_read: Vec<f64> = runs
            .iter()
            .map(|r| r.bytes as f64 / r.reads.max(1) as f64)
            .collect();
        let line = json!({
            "bench": "pty_floor",
            "strategy": strategy.name(),
            "MB_per_cpu_s": round1(median(&per_cpu)),
            "MBps": round1(median(&rate)),
            "avg_read_B": median(&avg_read).round(),
            "all_MB_per_cpu_s": round_all(&per_cpu),
            "all_MBps": round_all(&rate),
            "reps": runs.len(),
            "cpus": thread::available_parallelism().map_or(0, |n| n.get()),
        });
        println!("{line}");
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Runs the producer on a fresh PTY and reads all of its output with `strategy`.
fn measure(strategy: Strategy) -> Result<Run> {
    let pty = openpty(None, None).context("open a pty")?;
    let master = pty.master;
    let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
    fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let slave: OwnedFd = pty.slave;
    let mut child = Command::new("sh")
        .args(["-c", PRODUCER])
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .spawn()
        .context("start the producer")?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = thread::spawn(move || -> io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        io::copy(&mut conn, &mut io::sink())
    });
    let mut to_sink = TcpStream::connect(addr)?;
    to_sink.set_nodelay(true)?;

    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut reads) = (0u64, 0u64);
    let start = Instant::now();
    let cpu_start = thread_cpu()?;
    'rounds: loop {
        match strategy {
            Strategy::Eager => {
                let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e).context("poll the pty"),
                }
            }
            Strategy::Paced(pause) => thread::sleep(pause),
        }
        let mut filled = 0;
        loop {
            if filled + READ_SIZE > buf.len() {
                to_sink.write_all(&buf[..filled])?;
                filled = 0;
            }
            match nix::unistd::read(&master, &mut buf[filled..filled + READ_SIZE]) {
                Ok(0) | Err(Errno::EIO) => {
                    to_sink.write_all(&buf[..filled])?;
                    break 'rounds;
                }
                Ok(n) => {
                    filled += n;
                    bytes += n as u64;
                    reads += 1;
                    if matches!(strategy, Strategy::Paced(_)) && n < FULL_READ {
                        break;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("read the pty"),
            }
        }
        to_sink.write_all(&buf[..filled])?;
    }
    let cpu_secs = thread_cpu()? - cpu_start;
    let secs = start.elapsed().as_secs_f64();
    drop(to_sink);
    let status = child.wait()?;
    let sunk = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
    if !status.success() {
        bail!("the producer failed: {status}");
    }
    // Each of the 50 MB of zeros becomes 4/3 base64 bytes, and each 100 a line with \r\n.
    if sunk != bytes || bytes < 68_000_000 {
        bail!("read {bytes} bytes and the sink got {sunk}; expected 68 MB at both ends");
    }
    Ok(Run {
        bytes,
        secs,
        cpu_secs,
        reads,
    })
}

/// CPU time of the calling thread, user plus system, in seconds.
fn thread_cpu() -> Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}
