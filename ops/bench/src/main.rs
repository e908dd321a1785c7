//! `sandpit-bench`: measures the node runtime on this host and prints one JSON object per
//! benchmark on stdout (and into `--out`); progress goes to stderr.
//!
//! It drives [`sandbox::Runtime`] directly, as the server does, with a prefix, state directory
//! and subnet pool of its own, so it can run beside a production instance and beside the
//! integration tests. Every figure is wall-clock time around one public runtime call, so it
//! includes whatever else the machine is doing: the `run` line at the end records the load
//! average before and after.
//!
//! The benchmarks, in order:
//! 1. `create_ready`: N nodes created one after another, each destroyed right after its
//!    measurement, so every create starts from scratch (no warm-up is left out).
//! 2. `concurrent_M`: M nodes created at once on one network, each in its own task.
//! 3. `idle_memory`: the memory cgroup usage of those M nodes after they idled.
//! 4. `pull_nginx_M`: those M nodes pull `nginx` from the registry mirror at the same moment;
//!    `hello_world_cold`: `docker run --rm hello-world` in a fresh node (pull included), 3 times.
//! 5. `destroy`: the N sequential destroys of (1), and destroying the network of (2).
//!
//! Whatever happens, everything the bench made is destroyed before it exits; a run killed
//! with SIGKILL is cleaned up by the next one (it opens the runtime with orphans destroyed).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use sandbox::{
    ExecOptions, MirrorSource, NodeSpec, OrphanPolicy, RegistryConfig, Runtime, RuntimeConfig,
    Subnet,
};
use serde_json::{json, Value};

mod stats;
use stats::{median, round1, round_all, sorted};

/// Where bench state lives. Node directories must be traversable by the nodes' unprivileged
/// root, so not a private (0700) temp dir.
const BENCH_ROOT: &str = "/var/tmp/sandpit-bench";

/// Goals from the product brief: a node is ready about as fast as dockerd starts, a room's
/// session of ten nodes within seconds, and idle nodes are cheap enough to pack a host.
const GOAL_MEDIAN_READY_MS: f64 = 350.0;
const GOAL_CONCURRENT_READY_MS: f64 = 3000.0;
const GOAL_IDLE_MIB: f64 = 48.0;

/// Benchmarks of the sandpit node runtime. Run as root, from the workspace root.
#[derive(Parser, Clone)]
#[command(name = "sandpit-bench", version)]
struct Args {
    /// Results file, one JSON object per line (replaced on every run; relative to the current
    /// directory).
    #[arg(long, default_value = "target/bench/nodes.jsonl")]
    out: PathBuf,
    /// Name put on every host object of the bench (bridges, veths, cgroups, firewall chains):
    /// 1-8 of a-z0-9. State lives in /var/tmp/sandpit-bench/<prefix>/runtime.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Addresses for the bench's networks; keep it apart from the server's and the tests'.
    #[arg(long, default_value = "10.199.0.0/16")]
    subnet_pool: Subnet,
    /// The `sandpit` binary the nodes re-execute for their init (default: the one next to
    /// this binary, target/<profile>/sandpit).
    #[arg(long)]
    sandpit: Option<PathBuf>,
    /// Base images built by ops/image/build-base.
    #[arg(
        long,
        env = "SANDPIT_IMAGES_DIR",
        default_value = "/var/lib/sandpit/images"
    )]
    images_dir: PathBuf,
    /// Image of the nodes.
    #[arg(long, env = "SANDPIT_DEFAULT_IMAGE", default_value = "bookworm")]
    image: String,
    /// Nodes created one after another (create_ready, destroy).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sequential: u32,
    /// Nodes created at once on one network (concurrent_<n>, idle_memory).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    concurrent: u32,
    /// Seconds the concurrent nodes idle before their memory is read.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandpit-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure_root()?;
    let helper = helper_exe(args.sandpit.as_deref())?;
    let cfg = runtime_config(&args, helper)?;
    let bench_dir = cfg
        .state_dir
        .parent()
        .expect("state dir has a parent")
        .to_owned();
    for d in [Path::new(BENCH_ROOT), &bench_dir, &cfg.state_dir] {
        traversable_dir(d)?;
    }
    let report = Report::create(&args.out)?;
    let load_before = loadavg();
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    eprintln!(
        "sandpit-bench: prefix {}, state {}, pool {}, load {load_before}",
        cfg.prefix,
        cfg.state_dir.display(),
        cfg.subnet_pool
    );

    let rt = Arc::new(
        Runtime::open(cfg.clone())
            .await
            .context("open the node runtime")?,
    );

    // The first Ctrl-C stops between steps (in-flight creates finish, then everything is
    // destroyed); cancelling a create half-way would leave the cleanup less certain.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping after the current step, then cleaning up");
                stop.store(true, Ordering::SeqCst);
            }
        })
    };

    // In its own task, so that a panic is caught here and cleanup still runs.
    let task = tokio::spawn(benchmarks(
        rt.clone(),
        args.clone(),
        report.clone(),
        stop.clone(),
    ));
    let result = match task.await {
        Ok(r) => r,
        Err(e) => Err(anyhow!("benchmark task failed: {e}")),
    };
    watcher.abort();

    eprintln!("cleaning up");
    let cleanup = rt.destroy_all().await;
    drop(rt);
    let left = Runtime::leftovers(&cfg).await;
    if left.is_empty() && cleanup.is_ok() {
        let _ = std::fs::remove_dir_all(&bench_dir);
    }
    let load_after = loadavg();

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let written = report.emit(
        Line::new("run")
            .with(
                "ok",
                json!(result.is_ok() && cleanup.is_ok() && left.is_empty()),
            )
            .with("started_unix", json!(started_unix))
            .with("total_s", json!(round1(started.elapsed().as_secs_f64())))
            .with("loadavg_before", json!(load_before))
            .with("loadavg_after", json!(load_after))
            .with("cpus", json!(cpus))
            .with("kernel", json!(kernel_release())),
    );
    eprintln!("load before {load_before}, after {load_after}");
    eprintln!("results in {}", args.out.display());

    // The first error stays first; cleanup failures are added, never hidden.
    let mut problems = Vec::new();
    if let Err(e) = written {
        problems.push(format!("{e:#}"));
    }
    if let Err(e) = cleanup {
        problems.push(format!("cleaning up failed: {e}"));
    }
    if !left.is_empty() {
        problems.push(format!(
            "left on the host: {}; run `ops/leakcheck {}`",
            left.join(", "),
            cfg.prefix
        ));
    }
    match (result, problems.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => bail!("{}", problems.join("; ")),
        (Err(e), true) => Err(e),
        (Err(e), false) => bail!("{e:#}; {}", problems.join("; ")),
    }
}

/// The four benchmarks, in order; each emits its line as soon as its figures are known.
async fn benchmarks(
    rt: Arc<Runtime>,
    args: Args,
    report: Report,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let check_stop = || {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    };

    // 1. create_ready, and the sequential half of destroy.
    let n = args.sequential as usize;
    let net = "seq";
    rt.create_network(net)
        .await
        .with_context(|| format!("create network {net}"))?;
    let mut ready_ms = Vec::with_capacity(n);
    let mut destroy_ms = Vec::with_capacity(n);
    let mut phases: Vec<Phases> = Vec::with_capacity(n);
    for i in 1..=n {
        check_stop()?;
        let wall_start = SystemTime::now();
        let t = Instant::now();
        let node = rt
            .create_node(node_spec(net, "node1", &args.image))
            .await
            .with_context(|| format!("create node {i} of {n}"))?;
        let ready = t.elapsed();
        let wall_ready = SystemTime::now();
        let p = Phases::from_dockerd_log(
            &dockerd_log(rt.config(), net, &node.hostname),
            wall_start,
            wall_ready,
        );
        let t = Instant::now();
        rt.destroy_node(net, &node.hostname)
            .await
            .with_context(|| format!("destroy node {i} of {n}"))?;
        let destroyed = t.elapsed();
        eprintln!(
            "create_ready {i}/{n}: ready in {:.0} ms{}, destroyed in {:.0} ms",
            ms(ready),
            p.as_ref().map_or(String::new(), |p| format!(
                " (before dockerd {:.0}, dockerd start {:.0}, to ping {:.0})",
                p.before_dockerd_ms, p.dockerd_ms, p.after_listen_ms
            )),
            ms(destroyed)
        );
        ready_ms.push(ms(ready));
        destroy_ms.push(ms(destroyed));
        phases.extend(p);
    }
    rt.destroy_network(net)
        .await
        .with_context(|| format!("destroy network {net}"))?;
    let ready = Summary::of(&ready_ms);
    let mut line = Line::new("create_ready").summary(&ready, "ms");
    if phases.len() == n {
        // Where the time goes, from the timestamps in each node's dockerd log.
        let phase = |f: fn(&Phases) -> f64| {
            json!(round1(median(&phases.iter().map(f).collect::<Vec<_>>())))
        };
        line = line
            .with("before_dockerd_median_ms", phase(|p| p.before_dockerd_ms))
            .with("dockerd_start_median_ms", phase(|p| p.dockerd_ms))
            .with("after_listen_median_ms", phase(|p| p.after_listen_ms));
    }
    report.emit(
        line.with("samples_ms", json!(round_all(&ready_ms)))
            .with("goal_median_ms", json!(GOAL_MEDIAN_READY_MS))
            .with("goal_met", json!(ready.median <= GOAL_MEDIAN_READY_MS)),
    )?;

    // 2. concurrent_M: one session's worth of nodes at once, each create in its own task as
    // the server's handlers would run them.
    check_stop()?;
    let m = args.concurrent as usize;
    let net = "conc";
    let mem_available_before = mem_available_mib();
    let t = Instant::now();
    rt.create_network(net)
        .await
        .with_context(|| format!("create network {net}"))?;
    let network_ms = ms(t.elapsed());
    eprintln!("concurrent_{m}: creating {m} nodes at once");
    let start = Instant::now();
    let tasks: Vec<_> = (1..=m)
        .map(|i| {
            let rt = rt.clone();
            let spec = node_spec(net, &format!("node{i}"), &args.image);
            tokio::spawn(async move {
                let r = rt.create_node(spec).await;
                (r, start.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(m);
    let mut hostnames = Vec::with_capacity(m);
    let mut failures = Vec::new();
    for joined in futures_util::future::join_all(tasks).await {
        match joined {
            Ok((Ok(node), took)) => {
                latencies.push(ms(took));
                hostnames.push(node.hostname);
            }
            Ok((Err(e), _)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("create task failed: {e}")),
        }
    }
    let all_ready = ms(start.elapsed());
    if !failures.is_empty() {
        bail!(
            "{} of {m} concurrent creates failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    let each = Summary::of(&latencies);
    eprintln!(
        "concurrent_{m}: all ready in {all_ready:.0} ms (each: median {:.0}, max {:.0})",
        each.median, each.max
    );
    report.emit(
        Line::new(&format!("concurrent_{m}"))
            .with("n", json!(m))
            .with("all_ready_ms", json!(round1(all_ready)))
            .with("median_ms", json!(round1(each.median)))
            .with("min_ms", json!(round1(each.min)))
            .with("max_ms", json!(round1(each.max)))
            .with("network_ms", json!(round1(network_ms)))
            .with("goal_all_ready_ms", json!(GOAL_CONCURRENT_READY_MS))
            .with("goal_met", json!(all_ready <= GOAL_CONCURRENT_READY_MS)),
    )?;

    // 3. idle_memory of those nodes.
    check_stop()?;
    eprintln!("idle_memory: waiting {} s", args.idle_secs);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    check_stop()?;
    let mut mib = Vec::with_capacity(m);
    let mut pids = Vec::with_capacity(m);
    for h in &hostnames {
        let s = rt
            .stats(net, h)
            .with_context(|| format!("read the stats of {net}/{h}"))?;
        mib.push(s.cgroup.memory_bytes as f64 / f64::from(1 << 20));
        pids.push(s.cgroup.pids as f64);
    }
    let mem = Summary::of(&mib);
    let host_drop = match (mem_available_before, mem_available_mib()) {
        (Some(before), Some(after)) => Some(round1(before - after)),
        _ => None,
    };
    eprintln!(
        "idle_memory: median {:.1} MiB, mean {:.1}, max {:.1} per node",
        mem.median, mem.mean, mem.max
    );
    report.emit(
        Line::new("idle_memory")
            .with("n", json!(m))
            .with("idle_s", json!(args.idle_secs))
            .with("median_mib", json!(round1(mem.median)))
            .with("mean_mib", json!(round1(mem.mean)))
            .with("min_mib", json!(round1(mem.min)))
            .with("max_mib", json!(round1(mem.max)))
            .with("pids_median", json!(median(&pids)))
            .with("host_mem_available_drop_mib", json!(host_drop))
            .with("samples_mib", json!(round_all(&mib)))
            .with("goal_mib", json!(GOAL_IDLE_MIB))
            .with("goal_met", json!(mem.max <= GOAL_IDLE_MIB)),
    )?;

    // 4. Images from the registry mirror: a room pulling at once, and a learner's first command.
    check_stop()?;
    let t = Instant::now();
    let pulls = hostnames
        .iter()
        .map(|h| in_node(&rt, net, h, "docker pull -q nginx >/dev/null"));
    let pull_failures: Vec<String> = futures_util::future::join_all(pulls)
        .await
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    let pull_all = ms(t.elapsed());
    if !pull_failures.is_empty() {
        bail!("pull nginx: {}", pull_failures.join("; "));
    }
    eprintln!("pull_nginx_{m}: all done in {pull_all:.0} ms");
    report.emit(
        Line::new(&format!("pull_nginx_{m}"))
            .with("n", json!(m))
            .with("all_done_ms", json!(round1(pull_all))),
    )?;
    let mut hello_ms = Vec::new();
    for i in 1..=3 {
        check_stop()?;
        let host = format!("fresh{i}");
        rt.create_node(node_spec(net, &host, &args.image))
            .await
            .with_context(|| format!("create node {host}"))?;
        let t = Instant::now();
        in_node(&rt, net, &host, "docker run --rm hello-world >/dev/null").await?;
        hello_ms.push(ms(t.elapsed()));
        rt.destroy_node(net, &host)
            .await
            .with_context(|| format!("destroy node {host}"))?;
    }
    let hello = Summary::of(&hello_ms);
    eprintln!("hello_world_cold: median {:.0} ms", hello.median);
    report.emit(
        Line::new("hello_world_cold")
            .summary(&hello, "ms")
            .with("samples_ms", json!(round_all(&hello_ms))),
    )?;

    // 5. destroy: the sequential figures from (1) and the whole network of (2) at once.
    check_stop()?;
    let t = Instant::now();
    rt.destroy_network(net)
        .await
        .with_context(|| format!("destroy network {net}"))?;
    let concurrent_destroy = ms(t.elapsed());
    let destroy = Summary::of(&destroy_ms);
    eprintln!(
        "destroy: median {:.0} ms, p95 {:.0} ms one by one; {m} at once in {concurrent_destroy:.0} ms",
        destroy.median, destroy.p95
    );
    report.emit(
        Line::new("destroy")
            .summary(&destroy, "ms")
            .with("concurrent_n", json!(m))
            .with("concurrent_ms", json!(round1(concurrent_destroy))),
    )?;

    eprintln!();
    eprintln!("summary (goals from the brief):");
    let rows = [
        (
            "create_ready".to_string(),
            format!("median {:.0} ms, p95 {:.0} ms", ready.median, ready.p95),
            format!(
                "median <= {GOAL_MEDIAN_READY_MS} ms: {}",
                verdict(ready.median <= GOAL_MEDIAN_READY_MS)
            ),
        ),
        (
            format!("concurrent_{m}"),
            format!("all ready in {all_ready:.0} ms"),
            format!(
                "<= {GOAL_CONCURRENT_READY_MS} ms: {}",
                verdict(all_ready <= GOAL_CONCURRENT_READY_MS)
            ),
        ),
        (
            "idle_memory".to_string(),
            format!("median {:.1} MiB, max {:.1} MiB", mem.median, mem.max),
            format!(
                "<= {GOAL_IDLE_MIB} MiB per node: {}",
                verdict(mem.max <= GOAL_IDLE_MIB)
            ),
        ),
        (
            format!("pull_nginx_{m}"),
            format!("all done in {pull_all:.0} ms"),
            String::new(),
        ),
        (
            "hello_world_cold".to_string(),
            format!("median {:.0} ms", hello.median),
            String::new(),
        ),
        (
            "destroy".to_string(),
            format!(
                "median {:.0} ms, p95 {:.0} ms; {m} at once {concurrent_destroy:.0} ms",
                destroy.median, destroy.p95
            ),
            String::new(),
        ),
    ];
    for (name, figures, goal) in rows {
        eprintln!(
            "{}",
            format!("  {name:<14} {figures:<40} {goal}").trim_end()
        );
    }
    Ok(())
}

/// Runs `sh -c script` in a node; an error carries its output.
async fn in_node(rt: &Runtime, network: &str, host: &str, script: &str) -> anyhow::Result<()> {
    let argv = ["sh".to_string(), "-c".into(), script.into()];
    let out = rt
        .command(network, host, &argv, &ExecOptions::default())?
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("run `{script}` in {host}"))?;
    if !out.status.success() {
        bail!(
            "`{script}` in {host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn node_spec(network: &str, hostname: &str, image: &str) -> NodeSpec {
    NodeSpec {
        network: network.into(),
        hostname: Some(hostname.into()),
        image: Some(image.into()),
    }
}

/// The bench's own runtime configuration, with the production default limits.
fn runtime_config(args: &Args, helper_exe: PathBuf) -> anyhow::Result<RuntimeConfig> {
    let mut c = RuntimeConfig::new(helper_exe);
    c.prefix = args.prefix.clone();
    c.cgroup_parent = args.prefix.clone();
    // `<dir>/runtime`, as `sandpit --state-dir <dir>` lays it out.
    c.state_dir = Path::new(BENCH_ROOT).join(&args.prefix).join("runtime");
    c.images_dir = args.images_dir.clone();
    c.default_image = args.image.clone();
    c.subnet_pool = args.subnet_pool;
    // Whatever a killed earlier run left is destroyed, not adopted.
    c.orphans = OrphanPolicy::Destroy;
    // The registries `sandpit serve` runs by default.
    c.registry = Some(RegistryConfig {
        exe: "/usr/bin/docker-registry".into(),
        mirror: MirrorSource::Seeded(args.images_dir.join("registry")),
    });
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

/// `--sandpit`, or `sandpit` next to this binary.
fn helper_exe(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .context("find the sandpit-bench binary")?
            .with_file_name("sandpit"),
    };
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release --bin sandpit` \
             (or pass --sandpit PATH)",
            path.display()
        );
    }
    Ok(path)
}

fn ensure_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow!("no Uid line in /proc/self/status"))?;
    if euid != "0" {
        bail!("run sandpit-bench as root: nodes need namespaces, cgroups, mounts and links");
    }
    Ok(())
}

/// Creates `dir` (mode 0755 whatever the umask) so that a node's unprivileged root can reach
/// its own directory below it.
fn traversable_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))
}

/// A node's dockerd log as the host sees it. This is the runtime's private layout; if it
/// changes, the phase figures are simply left out.
fn dockerd_log(cfg: &RuntimeConfig, network: &str, hostname: &str) -> PathBuf {
    cfg.state_dir
        .join("nodes")
        .join(format!("{network}-{hostname}"))
        .join("disk/upper/var/log/dockerd.log")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn mem_available_mib() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile: the smallest sample with at least `p`% of the samples at or below
/// it (p95 of 20 samples is the 19th smallest).
fn percentile(xs: &[f64], p: f64) -> f64 {
    let v = sorted(xs);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    n: usize,
    median: f64,
    p95: f64,
    min: f64,
    max: f64,
    mean: f64,
}

impl Summary {
    fn of(xs: &[f64]) -> Summary {
        let v = sorted(xs);
        Summary {
            n: v.len(),
            median: median(&v),
            p95: percentile(&v, 95.0),
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// Where one create's time went, from the wall clock around the call and the timestamps dockerd
/// wrote (the node shares the host's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Phases {
    /// From the call to dockerd's first log line: host preparation, namespaces, mounts, init.
    before_dockerd_ms: f64,
    /// From dockerd's first log line to "API listen on": the engine's own start.
    dockerd_ms: f64,
    /// From "API listen on" to the call returning: the runtime's ping loop and bookkeeping.
    after_listen_ms: f64,
}

impl Phases {
    fn from_dockerd_log(path: &Path, call: SystemTime, returned: SystemTime) -> Option<Phases> {
        let log = std::fs::read_to_string(path).ok()?;
        Self::from_log_text(&log, call, returned)
    }

    fn from_log_text(log: &str, call: SystemTime, returned: SystemTime) -> Option<Phases> {
        let first = log.lines().find_map(log_time)?;
        let listen = log
            .lines()
            .filter(|l| l.contains("API listen on"))
            .find_map(log_time)?;
        let span = |a: SystemTime, b: SystemTime| {
            b.duration_since(a).map_or_else(|e| -ms(e.duration()), ms)
        };
        Some(Phases {
            before_dockerd_ms: span(call, first),
            dockerd_ms: span(first, listen),
            after_listen_ms: span(listen, returned),
        })
    }
}

/// The `time="…"` field of a dockerd (logrus) line: RFC 3339 with an optional fraction and a
/// `Z` or `±hh:mm` offset.
fn log_time(line: &str) -> Option<SystemTime> {
    let start = line.find("time=\"")? + "time=\"".len();
    let ts = &line[start..];
    let ts = &ts[..ts.find('"')?];
    parse_rfc3339(ts)
}

fn parse_rfc3339(ts: &str) -> Option<SystemTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let tz_at = rest.find(['Z', '+', '-'])?;
    let (clock, tz) = rest.split_at(tz_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':');
    let (h, mi, s) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let offset_s = match tz {
        "Z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    let secs = days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse::<u32>().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Writes each result line to stdout and appends it to the results file at once, so a run that
/// fails half-way keeps the figures it has.
#[derive(Clone)]
struct Report {
    path: PathBuf,
}

impl Report {
    fn create(path: &Path) -> anyhow::Result<Report> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, "").with_context(|| format!("create {}", path.display()))?;
        Ok(Report {
            path: path.to_owned(),
        })
    }

    fn emit(&self, line: Line) -> anyhow::Result<()> {
        let line = line.render();
        println!("{line}");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("open {}", self.path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("write {}", self.path.display()))
    }
}

/// One result: a JSON object whose keys keep their order (`"bench"` first), which
/// serde_json's own map would sort.
struct Line {
    fields: Vec<(String, Value)>,
}

impl Line {
    fn new(bench: &str) -> Line {
        Line {
            fields: vec![("bench".into(), json!(bench))],
        }
    }

    fn with(mut self, key: &str, value: Value) -> Line {
        self.fields.push((key.into(), value));
        self
    }

    /// `n`, then `median_<unit>`, `p95_<unit>`, `min_<unit>`, `max_<unit>`, `mean_<unit>`.
    fn summary(self, s: &Summary, unit: &str) -> Line {
        let figures = [
            ("median", s.median),
            ("p95", s.p95),
            ("min", s.min),
            ("max", s.max),
            ("mean", s.mean),
        ];
        figures
            .into_iter()
            .fold(self.with("n", json!(s.n)), |line, (name, x)| {
                line.with(&format!("{name}_{unit}"), json!(round1(x)))
            })
    }

    fn render(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentile() {
        let xs: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(median(&xs), 10.5);
        assert_eq!(percentile(&xs, 95.0), 19.0);
        assert_eq!(percentile(&xs, 100.0), 20.0);
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        let s = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.n, s.min, s.max, s.mean), (3, 1.0, 5.0, 3.0));
    }

    #[test]
    fn json_keeps_field_order() {
        let line = Line::new("x\"y")
            .with("n", json!(2))
            .with("a_ms", json!(1.5))
            .render();
        assert_eq!(line, r#"{"bench":"x\"y","n":2,"a_ms":1.5}"#);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a_ms"], 1.5);
    }

    #[test]
    fn rfc3339_timestamps() {
        let t = parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_millis(86_401_500));
        let t = parse_rfc3339("2026-11-24T03:04:05.123456789+01:00").unwrap();
        let z = parse_rfc3339("2026-11-24T02:04:05.123456789Z").unwrap();
        assert_eq!(t, z);
        assert_eq!(
            z.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_485_845
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn phases_from_a_dockerd_log() {
        let log = "time=\"1970-01-01T00:00:10.100Z\" level=info msg=\"Starting up\"\n\
                   time=\"1970-01-01T00:00:10.250Z\" level=info msg=\"Loading containers: done.\"\n\
                   time=\"1970-01-01T00:00:10.300Z\" level=info msg=\"API listen on /run/docker.sock\"\n";
        let call = UNIX_EPOCH + Duration::from_millis(10_000);
        let returned = UNIX_EPOCH + Duration::from_millis(10_320);
        let p = Phases::from_log_text(log, call, returned).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(p.before_dockerd_ms, 100.0), "{p:?}");
        assert!(close(p.dockerd_ms, 200.0), "{p:?}");
        assert!(close(p.after_listen_ms, 20.0), "{p:?}");
        assert!(Phases::from_log_text("no timestamps\n", call, returned).is_none());
    }
}
