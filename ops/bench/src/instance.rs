//! The load bench's own `sandpit serve`: started with a prefix, state directory and subnet
//! pool of its own, read from `/proc` while it runs, stopped, and taken off the host; and the
//! requests and WebSockets the bench makes to it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::sockets::Ws;

pub(crate) const PREFIX: &str = "benchl";
pub(crate) const STATE: &str = "/var/tmp/sandpit-bench-load";
pub(crate) const POOL: &str = "10.195.0.0/16";
/// How long one request, a socket's first message or the server's start may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);
/// The bench's read buffer per socket (it receives small frames).
const CLIENT_READ_BUFFER: usize = 16 << 10;
/// Clock ticks of `/proc/<pid>/stat` per second (USER_HZ, 100 on Linux).
pub(crate) const TICKS: f64 = 100.0;

/// `sandpit network rm --all` for the bench's instance: takes every node, network and host
/// object of the prefix off the host (nodes outlive a stopped server).
pub(crate) fn network_rm(sandpit: &Path) -> anyhow::Result<()> {
    let out = Command::new(sandpit)
        .args([
            "network",
            "rm",
            "--all",
            "--state-dir",
            STATE,
            "--prefix",
            PREFIX,
        ])
        .args(["--subnet-pool", POOL, "--no-registry"])
        .output()
        .with_context(|| format!("run {}", sandpit.display()))?;
    ensure!(
        out.status.success(),
        "sandpit network rm --all: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Where the running server's pid is kept.
fn pid_file() -> PathBuf {
    Path::new(STATE).join("server.pid")
}

/// Stops the server of an earlier run that was killed before it could (the server has its own
/// process group and outlives the bench), if it still runs.
pub(crate) fn stop_leftover_server() -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Some(pid) = std::fs::read_to_string(pid_file())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    // Only if that pid is still a server of the bench's state directory.
    let alive = || {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        !zombie
            && cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == STATE.as_bytes())
    };
    if !alive() {
        return Ok(());
    }
    eprintln!("load: stopping the server {pid} an earlier run left");
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let asked = Instant::now();
    while alive() {
        if asked.elapsed() > PATIENCE {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            bail!("the server {pid} of an earlier run ignored SIGTERM; killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The bench's own `sandpit serve`.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) addr: String,
}

impl Server {
    /// Starts it with room for `sessions` sessions of `nodes_per_session` nodes from one
    /// client; returns once it listens.
    pub(crate) fn start(
        sandpit: &Path,
        sessions: u64,
        nodes_per_session: u64,
    ) -> anyhow::Result<Server> {
        let log_path = Path::new(STATE).join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut child = Command::new(sandpit)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir", STATE])
            .args(["--prefix", PREFIX, "--subnet-pool", POOL, "--no-registry"])
            .args(["--sessions-per-client", &(sessions + 1).to_string()])
            .args(["--max-nodes", &nodes_per_session.max(5).to_string()])
            .args([
                "--capacity",
                &(sessions * nodes_per_session + 2).to_string(),
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group: a Ctrl-C stops the bench, which then deletes the
            // sessions through the server before stopping it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", sandpit.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let pid = child.id();
        // For the next run, should this one be killed before it stops the server.
        let _ = std::fs::write(pid_file(), pid.to_string());
        let mut server = Server {
            child: Some(child),
            pid,
            addr: String::new(),
        };
        let line = rx.recv_timeout(PATIENCE).unwrap_or_default();
        match line.trim().strip_prefix("sandpit listening on http://") {
            Some(a) => server.addr = a.to_owned(),
            None => {
                let _ = server.stop();
                bail!(
                    "the server did not start (first line {line:?}); see {}",
                    log_path.display()
                );
            }
        }
        Ok(server)
    }

    /// SIGTERM, and SIGKILL if it has not exited within [`PATIENCE`].
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let asked = Instant::now();
        loop {
            if let Some(status) = child.try_wait().context("wait for the server")? {
                ensure!(
                    status.success(),
                    "the server exited with {status} after SIGTERM"
                );
                return Ok(());
            }
            if asked.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server ignored SIGTERM for {PATIENCE:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// A server left running (a panic) is killed; `network rm` of the next run takes the rest.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A memory field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`: the peak RSS), in MiB.
pub(crate) fn rss_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))?;
    Ok(kib / 1024.0)
}

/// The server's CPU time so far (user and system), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(f.len() == 2, "no utime and stime in {path}");
    Ok(f[0] + f[1])
}

/// Requests to the server, each on a fresh connection.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) addr: String,
}

impl Api {
    /// The status and the body (JSON, or a string when it is not JSON, or null when empty).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let work = async {
            let tcp = TcpStream::connect(&self.addr).await.context("connect")?;
            let io = hyper_util::rt::TokioIo::new(tcp);
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", &self.addr)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let resp = send.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            anyhow::Ok((status, value))
        };
        tokio::time::timeout(PATIENCE, work)
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer in {PATIENCE:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    /// A request that must answer `want`; the body.
    pub(crate) async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, body) = self.call(method, path, body).await?;
        ensure!(status == want, "{method} {path}: {status} {body}");
        Ok(body)
    }

    /// A WebSocket on `path`, once the handshake is done.
    pub(crate) async fn ws(&self, path: &str) -> anyhow::Result<Ws> {
        let url = format!("ws://{}{path}", self.addr);
        let work = async {
            let tcp = TcpStream::connect(&self.addr).await.context("connect")?;
            // tungstenite zero-fills its whole read buffer (128 KiB by default) at every read:
            // the bench's own memory would rival the server's.
            let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
                    .await?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(PATIENCE, work)
            .await
            .map_err(|_| anyhow!("{path}: no handshake in {PATIENCE:?}"))?
            .with_context(|| format!("open {path}"))
    }
}
