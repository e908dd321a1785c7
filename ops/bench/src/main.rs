//! `sandpit-bench`: measures the node runtime on this host and prints one JSON object per
//! benchmark on stdout (and into `--out`); progress goes to stderr.
//!
//! It drives [`sandbox::Runtime`] directly, as the server does, with a prefix, state directory
//! and subnet pool of its own, so it can run beside a production instance and beside the
//! integration tests. Every figure is wall-clock time around one public runtime call, so it
//! includes whatever else the machine is doing: the `run` line at the end records the load
//! average before and after.
//!
//! It compares base images in one run (`--images`, default `trixie,bookworm`): every line of a
//! node benchmark names its image. The benchmarks, in order:
//! 1. `create_ready`: N nodes of each image created one after another, the images taking turns
//!    (a, b, a, b, ...) so that load drift weighs on each the same; each node is destroyed right
//!    after its measurement, so every create starts from scratch (no warm-up is left out).
//!
//! Then, for one image after the other:
//! 2. `concurrent_M`: M nodes created at once on one network, each in its own task.
//! 3. `idle_memory`: the memory cgroup usage of those M nodes after they idled.
//! 4. `pull_nginx_M`: those M nodes pull `nginx` from the registry mirror at the same moment;
//!    `hello_world_cold`: `docker run --rm hello-world` in a fresh node (pull included), 3 times.
//! 5. `destroy`: the N sequential destroys of (1), and destroying the network of (2).
//!
//! Whatever happens, everything the bench made is destroyed before it exits; a run killed
//! with SIGKILL is cleaned up by the next one (it opens the runtime with orphans destroyed).
//!
//! This file sets the run up and cleans up; `benchmarks` runs them, `figures` and `stats` sum
//! samples up, `phases` reads the engine's logs, `host` reads the host, `report` writes the lines.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use sandbox::{MirrorSource, OrphanPolicy, RegistryConfig, Runtime, RuntimeConfig, Subnet};
use serde_json::json;

mod benchmarks;
mod figures;
mod host;
mod phases;
mod report;
mod stats;

use benchmarks::{benchmarks, Plan};
use host::{ensure_root, kernel_release, loadavg, traversable_dir};
use report::{Line, Report};
use stats::round1;

/// Where bench state lives. Node directories must be traversable by the nodes' unprivileged
/// root, so not a private (0700) temp dir.
const BENCH_ROOT: &str = "/var/tmp/sandpit-bench";

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
    /// Images to compare, comma-separated or the option repeated: create_ready takes turns
    /// between them, the other benchmarks run once per image.
    #[arg(long, value_delimiter = ',', default_value = "trixie,bookworm")]
    images: Vec<String>,
    /// Nodes of each image created one after another (create_ready, destroy).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sequential: u32,
    /// Nodes created at once on one network, per image (concurrent_<n>, idle_memory).
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
    if let Some(twice) = repeated(&args.images) {
        bail!("--images names {twice:?} twice");
    }
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
        "sandpit-bench: images {}, prefix {}, state {}, pool {}, load {load_before}",
        args.images.join(", "),
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
    let plan = Plan {
        sequential: args.sequential as usize,
        concurrent: args.concurrent as usize,
        idle_secs: args.idle_secs,
        images: args.images.clone(),
    };
    let task = tokio::spawn(benchmarks(rt.clone(), plan, report.clone(), stop.clone()));
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

/// The first name given again, if any.
fn repeated(names: &[String]) -> Option<&str> {
    names
        .iter()
        .enumerate()
        .find_map(|(i, name)| names[..i].contains(name).then_some(name.as_str()))
}

/// The bench's own runtime configuration, with the production default limits.
fn runtime_config(args: &Args, helper_exe: PathBuf) -> anyhow::Result<RuntimeConfig> {
    let mut c = RuntimeConfig::new(helper_exe);
    c.prefix = args.prefix.clone();
    c.cgroup_parent = args.prefix.clone();
    // `<dir>/runtime`, as `sandpit --state-dir <dir>` lays it out.
    c.state_dir = Path::new(BENCH_ROOT).join(&args.prefix).join("runtime");
    c.images_dir = args.images_dir.clone();
    // Every node names its image; the first one stands in for nodes that do not.
    c.default_image = args.images[0].clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_a_list() {
        let images = |argv: &[&str]| Args::parse_from(argv).images;
        assert_eq!(images(&["b"]), ["trixie", "bookworm"]);
        assert_eq!(images(&["b", "--images", "bookworm"]), ["bookworm"]);
        assert_eq!(
            images(&["b", "--images", "a,b", "--images", "c"]),
            ["a", "b", "c"]
        );
        let names = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(repeated(&names(&["a", "b", "a"])), Some("a"));
        assert_eq!(repeated(&names(&["a", "b"])), None);
    }
}
