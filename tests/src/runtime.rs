//! The runtime side of the harness: a test's own configuration (prefix, state directory,
//! subnet pool), [`TestRuntime`] with cleanup on drop and the leak check, and small helpers.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandbox::{
    ExecOptions, MirrorSource, NodeInfo, NodeSpec, RegistryConfig, Runtime, RuntimeConfig, Subnet,
};

/// Where test state lives; node directories must be traversable by the nodes' unprivileged
/// root, so not a private temp dir.
const TEST_ROOT: &str = "/var/tmp/sandpit-tests";
/// Subnet pools are claimed across every test process with lock files here.
const POOL_LOCKS: &str = "/run/sandpit-tests/pools";

/// The `sandpit` binary built next to this test executable (`target/<profile>/sandpit`).
pub fn sandpit_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDPIT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/sandpit
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("sandpit"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin sandpit` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// The `sandpit` options that open the runtime of `cfg` (state, images, prefix, addresses),
/// as `serve` and the other commands take them.
pub fn runtime_args(cfg: &RuntimeConfig) -> Vec<OsString> {
    let state_dir = cfg.state_dir.parent().expect("test dir");
    vec![
        "--state-dir".into(),
        state_dir.into(),
        "--images-dir".into(),
        cfg.images_dir.clone().into(),
        "--default-image".into(),
        cfg.default_image.clone().into(),
        "--prefix".into(),
        cfg.prefix.clone().into(),
        "--subnet-pool".into(),
        cfg.subnet_pool.to_string().into(),
    ]
}

/// A lock file that claims a /16 of 10.x for one test runtime.
struct PoolClaim {
    path: PathBuf,
    pool: Subnet,
}

/// Second octets of 10.x.0.0/16 that a route on the host already uses (a leaked bridge of a
/// killed run, another instance): a pool there would give two bridges one subnet.
fn routed_second_octets() -> Vec<u8> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    routes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        // The destination is in network byte order, read as a little-endian number.
        .map(|d| d.to_le_bytes())
        .filter(|b| b[0] == 10)
        .map(|b| b[1])
        .collect()
}

impl PoolClaim {
    fn take() -> PoolClaim {
        std::fs::create_dir_all(POOL_LOCKS).expect("create pool lock dir");
        let routed = routed_second_octets();
        // 10.224-254.x: apart from the production default pool (10.201/16) and the bench's.
        for second in 224..=254u8 {
            if routed.contains(&second) {
                continue;
            }
            let path = PathBuf::from(POOL_LOCKS).join(second.to_string());
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .is_ok()
            {
                let _ = std::fs::write(&path, std::process::id().to_string());
                return PoolClaim {
                    path,
                    pool: Subnet::new(std::net::Ipv4Addr::new(10, second, 0, 0), 16),
                };
            }
        }
        panic!(
            "no free test subnet pool in {POOL_LOCKS}: remove stale lock files of dead test runs"
        );
    }
}

impl Drop for PoolClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix: `t` + 4 base-36 digits of the pid + 2 of a counter (8 characters at most).
fn unique_prefix() -> String {
    fn b36(mut n: u32, width: usize) -> String {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut s = vec![b'0'; width];
        for i in (0..width).rev() {
            s[i] = digits[(n % 36) as usize];
            n /= 36;
        }
        String::from_utf8(s).unwrap()
    }
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("t{}{}", b36(std::process::id(), 4), b36(n, 2))
}

/// A test's own configuration: prefix, state dir, subnet pool, uid locks.
pub fn test_config() -> (RuntimeConfig, impl Drop + Send + 'static) {
    let claim = PoolClaim::take();
    let prefix = unique_prefix();
    let mut cfg = RuntimeConfig::new(sandpit_bin());
    // `<dir>/runtime`, as `sandpit --state-dir <dir>` lays it out, so CLI and library agree.
    cfg.state_dir = PathBuf::from(TEST_ROOT).join(&prefix).join("runtime");
    cfg.cgroup_parent = prefix.clone();
    cfg.prefix = prefix;
    cfg.subnet_pool = claim.pool;
    // Smaller limits keep 2-core CI machines responsive; tests that probe a limit set theirs.
    cfg.limits.memory_bytes = 1 << 30;
    cfg.limits.disk_bytes = 4 << 30;
    (cfg, claim)
}

/// Gives `cfg` the registries `sandpit serve` runs by default: the mirror of the seed images
/// published by `ops/seed/publish` and the session registry.
pub fn with_registry(cfg: &mut RuntimeConfig) {
    cfg.registry = Some(RegistryConfig {
        exe: "/usr/bin/docker-registry".into(),
        mirror: MirrorSource::Seeded(cfg.images_dir.join("registry")),
    });
}

/// A runtime that cleans up after itself.
pub struct TestRuntime {
    /// Shared, so spawners (a terminal's shells) may hold it too.
    pub rt: Option<Arc<Runtime>>,
    pub cfg: RuntimeConfig,
    _claim: Box<dyn std::any::Any + Send>,
}

impl TestRuntime {
    pub async fn new() -> TestRuntime {
        Self::with(|_| {}).await
    }

    /// A runtime with its configuration adjusted by `f`.
    pub async fn with(f: impl FnOnce(&mut RuntimeConfig)) -> TestRuntime {
        let (mut cfg, claim) = test_config();
        f(&mut cfg);
        Self::open(cfg, claim).await
    }

    /// A runtime on an existing configuration (e.g. one a crashed process used). Use it after
    /// [`CleanupGuard`] for configurations another process used.
    pub async fn open(cfg: RuntimeConfig, claim: impl Send + 'static) -> TestRuntime {
        let rt = Runtime::open(cfg.clone())
            .await
            .unwrap_or_else(|e| panic!("open runtime: {e}"));
        TestRuntime {
            rt: Some(Arc::new(rt)),
            cfg,
            _claim: Box::new(claim),
        }
    }

    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime open")
    }

    /// The runtime, for something that outlives a borrow (a terminal's spawner).
    pub fn shared(&self) -> Arc<Runtime> {
        self.rt.clone().expect("runtime open")
    }

    /// Creates a network and `n` nodes on it, concurrently.
    pub async fn session(&self, network: &str, n: usize) -> Vec<NodeInfo> {
        self.rt()
            .create_network(network)
            .await
            .unwrap_or_else(|e| panic!("create network {network}: {e}"));
        let futs = (0..n).map(|i| {
            self.rt().create_node(NodeSpec {
                network: network.into(),
                hostname: Some(format!("node{}", i + 1)),
                ..Default::default()
            })
        });
        let mut nodes = Vec::new();
        for r in futures_util::future::join_all(futs).await {
            nodes.push(r.unwrap_or_else(|e| panic!("create node: {e}")));
        }
        nodes
    }

    /// Runs `sh -c script` in a node and returns its output.
    pub async fn sh(&self, node: &NodeInfo, script: &str) -> Output {
        self.sh_timeout(node, script, Duration::from_secs(300))
            .await
    }

    pub async fn sh_timeout(&self, node: &NodeInfo, script: &str, limit: Duration) -> Output {
        let argv = vec!["sh".to_string(), "-c".into(), script.into()];
        let mut cmd = self
            .rt()
            .command(
                &node.network,
                &node.hostname,
                &argv,
                &ExecOptions::default(),
            )
            .unwrap_or_else(|e| panic!("exec in {}: {e}", node.hostname));
        cmd.stdin(std::process::Stdio::null());
        tokio::time::timeout(limit, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`{script}` in {} took over {limit:?}", node.hostname))
            .expect("run exec helper")
    }

    /// Runs a script that must succeed; returns its stdout.
    pub async fn ok(&self, node: &NodeInfo, script: &str) -> String {
        let out = self.sh(node, script).await;
        assert!(
            out.status.success(),
            "`{script}` in {} failed with {}:\nstdout: {}\nstderr: {}",
            node.hostname,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Destroys everything and asserts that nothing of this runtime is left on the host.
    pub async fn finish(mut self) {
        let rt = self.rt.take().expect("runtime open");
        rt.destroy_all().await.expect("destroy everything");
        drop(rt);
        let left = Runtime::leftovers(&self.cfg).await;
        let _ = std::fs::remove_dir_all(self.cfg.state_dir.parent().expect("test dir"));
        assert!(left.is_empty(), "leaked host objects: {left:#?}");
    }
}

impl Drop for TestRuntime {
    /// A test that panicked still cleans up (without the leak assertion).
    fn drop(&mut self) {
        let Some(rt) = self.rt.take() else { return };
        let dir = self.cfg.state_dir.parent().expect("test dir").to_owned();
        on_fresh_runtime(async move {
            if let Err(e) = rt.destroy_all().await {
                eprintln!("cleanup after failed test: {e}");
            }
            drop(rt);
            let _ = std::fs::remove_dir_all(dir);
        });
    }
}

/// Runs `f` to completion on a new thread with a runtime of its own: cleanup in `Drop` may
/// happen inside another runtime, which cannot be blocked on.
fn on_fresh_runtime(f: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(f)
    })
    .join();
}

/// Imports a `busybox:local` image into the node's engine, made from the base image's static
/// busybox (no registry needed).
pub const IMPORT_BUSYBOX: &str = "set -e; d=$(mktemp -d); mkdir $d/bin; cp /bin/busybox $d/bin/; \
for a in $(/bin/busybox --list); do [ \"$a\" = busybox ] || ln -s busybox $d/bin/$a; done; \
tar -C $d -c . | docker import -c 'ENV PATH=/bin' - busybox:local >/dev/null; rm -rf $d";

/// Destroys whatever a configuration's runtime left on the host when dropped, whether the
/// test passed or failed: for tests in which another process (a killed `sandpit`, a server)
/// owns the nodes for a while.
pub struct CleanupGuard(pub RuntimeConfig);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let mut cfg = self.0.clone();
        cfg.orphans = sandbox::OrphanPolicy::Destroy;
        on_fresh_runtime(async move {
            // Busy while a test's own runtime still holds the state dir: that one cleans.
            if let Ok(rt) = Runtime::open(cfg.clone()).await {
                let _ = rt.destroy_all().await;
            }
            if let Some(dir) = cfg.state_dir.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        });
    }
}

/// A child process that is SIGKILLed and reaped when dropped (a `sandpit` the test runs).
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn sigkill(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.sigkill();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The SHA-256 of `data` in hex, computed by the host's `sha256sum` (as tests compute it inside
/// nodes).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = c.stdin.take().expect("piped");
    let data = data.to_vec();
    // Written from another thread: sha256sum's output is read meanwhile.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = c.wait_with_output().expect("wait for sha256sum");
    writer
        .join()
        .expect("the writer")
        .expect("write to sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}
