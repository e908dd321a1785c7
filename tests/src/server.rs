//! A real `sandpit serve` for API tests: [`TestServer`] starts the binary on port 0 with a
//! configuration of its own (prefix, state directory, subnet pool from [`test_config`]), talks
//! JSON to it over HTTP/1.1 and WebSockets, can SIGKILL, SIGTERM and restart it, and destroys
//! whatever it left when dropped, whether the test passed or failed. [`TestServer::finish`]
//! stops it and asserts that nothing leaked.
//!
//! Every request opens its own connection, so a server may be shared by concurrent tasks and
//! outlive the tokio runtime of whoever started it.

use std::any::Any;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sandbox::{Runtime, RuntimeConfig};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::runtime::{
    runtime_args, sandpit_bin, test_config, with_registry, CleanupGuard, TestRuntime,
};
use crate::sockets::{Events, TermClient, Ws};

/// How long a single request, or the wait for one expected thing, may take.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How long zombies of a killed server's nodes may wait for the host's init.
const REAP_PATIENCE: Duration = Duration::from_secs(30);
/// How long the server may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(60);

/// A `sandpit serve` process of one test.
pub struct TestServer {
    pub cfg: RuntimeConfig,
    /// Arguments after the ones that make the configuration (limits, tokens).
    extra: Vec<String>,
    process: Option<Child>,
    addr: String,
    /// What `--listen` gets: port 0 until [`TestServer::restart_in_place`] keeps the port.
    listen: String,
    /// The server's stderr (its log), shown when the test fails.
    log: PathBuf,
    claim: Option<Box<dyn Any + Send>>,
}

/// A WebSocket to the server.
impl TestServer {
    /// Starts a server with its own configuration and `extra` arguments (`--max-nodes 2`, ...).
    /// It runs no registries: nodes need none unless a test pulls images.
    pub fn start(extra: &[&str]) -> TestServer {
        Self::start_configured(extra, |_| {})
    }

    /// Like [`TestServer::start`], with the registries (the mirror of seed images and the
    /// session registry), for tests that pull images.
    pub fn start_with_registry(extra: &[&str]) -> TestServer {
        Self::start_configured(extra, with_registry)
    }

    /// Like [`TestServer::start`], with the configuration adjusted by `configure` (e.g. the
    /// subnet pool of another server).
    pub fn start_configured(
        extra: &[&str],
        configure: impl FnOnce(&mut RuntimeConfig),
    ) -> TestServer {
        let (mut cfg, claim) = test_config();
        configure(&mut cfg);
        // Beside the test's directory, which cleanup removes.
        let dir = cfg.state_dir.parent().expect("test dir");
        let log = dir.with_file_name(format!("{}-server.log", cfg.prefix));
        let mut s = TestServer {
            cfg,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: None,
            addr: String::new(),
            listen: "127.0.0.1:0".into(),
            log,
            claim: Some(Box::new(claim)),
        };
        s.spawn();
        s
    }

    /// `host:port` of the running server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        let p = self.process.as_ref().expect("the server is running");
        nix::unistd::Pid::from_raw(p.id() as i32)
    }

    fn spawn(&mut self) {
        assert!(self.process.is_none(), "the server is already running");
        let cfg = &self.cfg;
        let dir = self.log.parent().expect("test root");
        std::fs::create_dir_all(dir).expect("create the test root");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let mut child = Command::new(sandpit_bin())
            .args(["serve", "--listen", &self.listen])
            .args(cfg.registry.is_none().then_some("--no-registry"))
            .args(runtime_args(cfg))
            .args([
                "--node-memory-mib",
                &(cfg.limits.memory_bytes >> 20).to_string(),
            ])
            .args([
                "--node-disk-gib",
                &(cfg.limits.disk_bytes >> 30).to_string(),
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start sandpit serve");
        // The first line says where it listens; the rest is drained so a later print never
        // meets a closed pipe.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        self.process = Some(child);
        let line = rx.recv_timeout(STARTUP).unwrap_or_default();
        match line.trim().strip_prefix("sandpit listening on http://") {
            Some(a) => self.addr = a.to_string(),
            None => {
                self.sigkill();
                panic!(
                    "sandpit serve did not start (first line {line:?}); its log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Kills the server at once, as a crash would.
    pub fn sigkill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit (at most `PATIENCE`, then kills it and panics).
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut p = self.process.take().expect("the server is running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the server");
        let started = Instant::now();
        loop {
            if let Some(status) = p.try_wait().expect("wait for the server") {
                return status;
            }
            if started.elapsed() > PATIENCE {
                let _ = p.kill();
                let _ = p.wait();
                panic!(
                    "the server ignored SIGTERM for {PATIENCE:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same state (after [`Self::sigkill`] or [`Self::sigterm`]);
    /// it listens on a new port.
    pub fn restart(&mut self) {
        self.sigkill();
        self.spawn();
    }

    /// Kills the server and starts it again on the same state and the same address, as an
    /// operator's restart would (pages connected to it reconnect by themselves).
    pub fn restart_in_place(&mut self) {
        self.listen = self.addr.clone();
        self.restart();
    }

    /// Host objects of this configuration right now, besides the parent cgroups a runtime
    /// keeps while it is open: empty when no session exists.
    pub async fn leftovers(&self) -> Vec<String> {
        let parent = |l: &str| {
            l.strip_prefix("cgroup ").is_some_and(|p| {
                let p = std::path::Path::new(p);
                p.file_name().is_some_and(|n| *n == *self.cfg.cgroup_parent)
                    && p.parent().and_then(|c| c.parent()) == Some(self.cfg.cgroup_root.as_path())
            })
        };
        Runtime::leftovers(&self.cfg)
            .await
            .into_iter()
            .filter(|l| !parent(l))
            .collect()
    }

    /// Asserts that no session left anything on the host (see [`Self::leftovers`]). Processes
    /// get a moment to go, and zombies that the host's init adopted (from a server that
    /// exited) are its business: some inits reap them only many seconds later.
    pub async fn assert_clean(&self) {
        let started = Instant::now();
        loop {
            reap_adopted(&self.cfg.cgroup_parent);
            let mut left = self.leftovers().await;
            left.retain(|l| !init_zombie(l));
            if left.is_empty() {
                return;
            }
            let only_processes = left.iter().all(|l| l.starts_with("process "));
            if !only_processes || started.elapsed() > REAP_PATIENCE {
                panic!("leaked host objects: {left:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server (SIGTERM must exit 0), destroys what its sessions left, and asserts
    /// that nothing of it remains on the host.
    pub async fn finish(mut self) {
        if self.process.is_some() {
            let status = self.sigterm();
            assert!(
                status.success(),
                "SIGTERM: exit {status}:\n{}",
                self.log_tail()
            );
        }
        let claim = self.claim.take().expect("claim");
        let _ = std::fs::remove_file(&self.log);
        let mut t = TestRuntime::open(self.cfg.clone(), claim).await;
        let rt = t.rt.take().expect("runtime open");
        let reaper = Reaper::start(&self.cfg.cgroup_parent);
        rt.destroy_all().await.expect("destroy everything");
        drop(reaper);
        drop(rt);
        // Without the runtime its parent cgroups are gone too: everything must be.
        self.assert_clean().await;
        let _ = std::fs::remove_dir_all(self.cfg.state_dir.parent().expect("test dir"));
    }

    // --- HTTP ---

    /// One request on a fresh connection: the status and the body (JSON when it parses, a
    /// string otherwise, null when empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let (status, bytes) = self.request_raw(method, path, headers, body).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    /// Like [`Self::request`], with the body as bytes.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let (status, _, body) = self.request_full(method, path, headers, body).await;
        (status, body)
    }

    /// Like [`Self::request_raw`], with the answer's headers. `Host` is the server's address
    /// unless `headers` give another.
    pub async fn request_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        match self.try_request_full(method, path, headers, body).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: {e}\nserver log:\n{}", self.log_tail()),
        }
    }

    /// A JSON request that may find no server (one killed meanwhile): the status and the
    /// body, or why there was no answer.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        json: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let body = json.map(|j| j.to_string().into_bytes()).unwrap_or_default();
        let headers: &[(&str, &str)] = &[("content-type", "application/json")];
        let (status, _, bytes) = self
            .try_request_full(method, path, headers, body)
            .await
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn try_request_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> std::io::Result<(u16, hyper::HeaderMap, Vec<u8>)> {
        let work = async {
            let tcp = TcpStream::connect(&self.addr).await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            let mut req = hyper::Request::builder().method(method).uri(path);
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                req = req.header("host", &self.addr);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(std::io::Error::other)?;
            let resp = send
                .send_request(req)
                .await
                .map_err(std::io::Error::other)?;
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok::<_, std::io::Error>((status, parts.headers, bytes.to_vec()))
        };
        match tokio::time::timeout(PATIENCE, work).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other(format!("no answer in {PATIENCE:?}"))),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, &[], Vec::new()).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request("DELETE", path, &[], Vec::new()).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, json: Value) -> (u16, Value) {
        let body = serde_json::to_vec(&json).expect("serialise");
        self.post_raw(path, &body).await
    }

    /// POST with a body as it is (malformed JSON, ...).
    pub async fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_vec(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.request(
            "PUT",
            path,
            &[("content-type", "application/octet-stream")],
            body,
        )
        .await
    }

    /// Creates a session (`POST /api/sessions` with `body`), which must succeed.
    pub async fn session(&self, body: Value) -> Value {
        let (status, s) = self.post("/api/sessions", body).await;
        assert_eq!(status, 201, "create a session: {s}\n{}", self.log_tail());
        s
    }

    /// Creates a session with the defaults, which must succeed; returns its id.
    pub async fn session_id(&self) -> String {
        let s = self.session(serde_json::json!({})).await;
        s["id"].as_str().expect("a session id").to_owned()
    }

    /// Adds a node to session `sid`, which must succeed.
    pub async fn node(&self, sid: &str) -> Value {
        let (status, n) = self
            .post(
                &format!("/api/sessions/{sid}/nodes"),
                Value::Object(Default::default()),
            )
            .await;
        assert_eq!(status, 201, "add a node: {n}\n{}", self.log_tail());
        n
    }

    /// Runs `sh -c script` in a node through the API; the exec result, which must be a success.
    pub async fn sh(&self, sid: &str, node: &str, script: &str) -> Value {
        let r = self.sh_result(sid, node, script).await;
        assert_eq!(r["exit_code"], 0, "`{script}` in {node} failed: {r}");
        r
    }

    /// Runs `sh -c script` in a node through the API; the exec result, whatever its status.
    pub async fn sh_result(&self, sid: &str, node: &str, script: &str) -> Value {
        let (status, r) = self
            .post(
                &format!("/api/sessions/{sid}/nodes/{node}/exec"),
                serde_json::json!({ "cmd": ["sh", "-c", script], "timeout_secs": 120 }),
            )
            .await;
        assert_eq!(status, 200, "exec `{script}` in {node}: {r}");
        r
    }

    // --- WebSockets ---

    /// Opens a WebSocket on `path`, with an `Origin` header when given. A refusal is the
    /// HTTP status and body of the answer.
    pub async fn ws(&self, path: &str, origin: Option<&str>) -> Result<Ws, (u16, String)> {
        let origin: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        self.ws_with(path, &origin).await
    }

    /// Like [`Self::ws`], with any request headers (`host`, `origin`, ...).
    pub async fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
        let mut req = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .expect("a WebSocket request");
        for (k, v) in headers {
            req.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                v.parse().expect("a header value"),
            );
        }
        let tcp = TcpStream::connect(&self.addr)
            .await
            .expect("connect to the server");
        let work = tokio_tungstenite::client_async(req, tcp);
        match tokio::time::timeout(PATIENCE, work).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let body = resp.body().clone().unwrap_or_default();
                Err((
                    resp.status().as_u16(),
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            }
            Ok(Err(e)) => panic!("WebSocket {path}: {e}"),
            Err(_) => panic!("WebSocket {path}: no handshake in {PATIENCE:?}"),
        }
    }

    /// The refusal of a WebSocket on `path` (it must be refused): HTTP status and body.
    pub async fn ws_refused(&self, path: &str, origin: Option<&str>) -> (u16, String) {
        match self.ws(path, origin).await {
            Ok(_) => panic!("the WebSocket {path} (origin {origin:?}) was accepted"),
            Err(refusal) => refusal,
        }
    }

    /// The events socket of session `sid`.
    pub async fn events(&self, sid: &str) -> Events {
        let ws = self
            .ws(&format!("/api/sessions/{sid}/events"), None)
            .await
            .unwrap_or_else(|e| panic!("open the events of {sid}: {e:?}"));
        Events::new(ws)
    }

    /// The terminal of node `node`.
    pub async fn terminal(&self, sid: &str, node: &str) -> TermClient {
        self.terminal_with(sid, node, "").await
    }

    /// A terminal of node `node` with a query (`?name=...&since=...&stream=...`).
    pub async fn terminal_with(&self, sid: &str, node: &str, query: &str) -> TermClient {
        let ws = self
            .ws(
                &format!("/api/sessions/{sid}/nodes/{node}/terminal{query}"),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("open the terminal of {node}{query}: {e:?}"));
        TermClient::open(ws, PATIENCE).await
    }
}

impl Drop for TestServer {
    /// Kills the server and destroys whatever it left (without the leak assertion).
    fn drop(&mut self) {
        self.sigkill();
        let Some(claim) = self.claim.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "--- log of sandpit serve ({}) ---\n{}",
                self.addr,
                self.log_tail()
            );
        }
        let reaper = Reaper::start(&self.cfg.cgroup_parent);
        drop(CleanupGuard(self.cfg.clone()));
        drop(reaper);
        drop(claim);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Reaps, while it lives, the zombies this process adopted from a stopped server.
///
/// Opening a runtime makes this process a child subreaper, so processes of a dead server (its
/// nodes' processes, exec helpers it did not reap) may end up as its children; a node's init
/// cannot finish exiting until every process of its pid namespace is reaped.
struct Reaper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    fn start(cgroup_parent: &str) -> Reaper {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let cgroup_parent = cgroup_parent.to_string();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                reap_adopted(&cgroup_parent);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Reaper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a leftover is a `process N` that is a zombie waiting for the host's init.
fn init_zombie(leftover: &str) -> bool {
    let Some(pid) = leftover
        .strip_prefix("process ")
        .and_then(|r| r.split_whitespace().next())
    else {
        return false;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name| status_field(&status, name);
    field("State:").starts_with('Z') && field("PPid:") == "1"
}

/// The value of field `name` (with its colon) in the text of a `/proc/<pid>/status`, or "".
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_default()
}

/// Reaps zombie children of this process that are in a node's pid namespace (two or more
/// `NSpid` entries) or in the cgroups of the server's nodes: no child this process waits for
/// itself is either.
fn reap_adopted(cgroup_parent: &str) {
    let me = std::process::id().to_string();
    let marker = format!(":/{cgroup_parent}/");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(p.path().join("status")) else {
            continue;
        };
        let field = |name| status_field(&status, name);
        let zombie = field("State:").starts_with('Z');
        let nested = field("NSpid:").split_whitespace().count() >= 2;
        if !zombie || field("PPid:") != me {
            continue;
        }
        let ours =
            std::fs::read_to_string(p.path().join("cgroup")).is_ok_and(|c| c.contains(&marker));
        if nested || ours {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}
