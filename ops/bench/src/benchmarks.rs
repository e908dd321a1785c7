//! The node benchmarks, in order, for each image of the plan; each emits its line (which names
//! the image) as soon as its figures are known, and a summary with the goals ends the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use sandbox::{ExecOptions, NodeSpec, Runtime};
use serde_json::json;

use crate::figures::{ms, Summary};
use crate::host::mem_available_mib;
use crate::phases::{ContainerdPhases, EngineLogs, Phases};
use crate::report::{Line, Report};
use crate::stats::{median, round1, round_all};

/// Goals from the product brief: a cold node is ready about as fast as its engine starts, a
/// room's session of ten nodes within seconds, and idle nodes are cheap enough to pack a host.
const GOAL_MEDIAN_READY_MS: f64 = 200.0;
const GOAL_CONCURRENT_READY_MS: f64 = 3000.0;
const GOAL_IDLE_MIB: f64 = 48.0;

/// What to run: the sizes and images of the benchmarks (from the command line).
#[derive(Clone)]
pub(crate) struct Plan {
    /// Nodes of each image created one after another (create_ready, destroy).
    pub(crate) sequential: usize,
    /// Nodes created at once on one network, per image (concurrent_<n>, idle_memory).
    pub(crate) concurrent: usize,
    /// Seconds the concurrent nodes idle before their memory is read.
    pub(crate) idle_secs: u64,
    /// Images compared, in the order their figures are given.
    pub(crate) images: Vec<String>,
}

/// The benchmarks of the crate's doc, in order.
pub(crate) async fn benchmarks(
    rt: Arc<Runtime>,
    plan: Plan,
    report: Report,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let engines = plan
        .images
        .iter()
        .map(|name| Engine::of(&rt, name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut summary = Vec::new();

    // 1. create_ready for every image, and the sequential half of destroy.
    let sequential = create_ready(&rt, &plan, &stop).await?;
    for ((image, engine), seq) in plan.images.iter().zip(&engines).zip(&sequential) {
        let (line, row) = seq.create_ready_line(image, engine);
        report.emit(line)?;
        summary.push(row);
    }

    // 2-5, one image after the other: its nodes alone on the host.
    for (image, seq) in plan.images.iter().zip(&sequential) {
        let room = Room::new(&rt, &plan, image, &report, &stop);
        summary.extend(room.run(&seq.destroy_ms).await?);
    }

    eprintln!();
    eprintln!("summary (goals from the brief):");
    for row in summary {
        eprintln!("{}", row.render().trim_end());
    }
    Ok(())
}

/// Fails once the first Ctrl-C was seen, so the run stops between steps.
fn check_stop(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The engine an image ships, as its manifest records it.
struct Engine {
    docker: Option<String>,
    containerd: Option<String>,
    recipe: String,
}

impl Engine {
    fn of(rt: &Runtime, name: &str) -> anyhow::Result<Engine> {
        let images = rt.images();
        let Some(image) = images.iter().find(|i| i.name == name) else {
            let available: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "no usable image {name:?} in {} (available: {}); build it with \
                 `ops/image/build-base {name}` or pick others with --images",
                rt.config().images_dir.display(),
                available.join(", ")
            );
        };
        Ok(Engine {
            docker: image.engine.docker.clone(),
            containerd: image.engine.containerd.clone(),
            recipe: image.recipe.clone(),
        })
    }
}

/// create_ready's samples of one image.
#[derive(Default)]
struct Sequential {
    ready_ms: Vec<f64>,
    destroy_ms: Vec<f64>,
    phases: Vec<Phases>,
}

/// N cold creates per image, the images taking turns (a, b, a, b, ...) so that whatever else
/// the host does meanwhile weighs on each the same. Each node is destroyed right after its
/// measurement, so every create starts from scratch (no warm-up is left out).
async fn create_ready(
    rt: &Runtime,
    plan: &Plan,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Sequential>> {
    let n = plan.sequential;
    let net = "seq";
    rt.create_network(net)
        .await
        .with_context(|| format!("create network {net}"))?;
    let mut samples: Vec<Sequential> = plan.images.iter().map(|_| Sequential::default()).collect();
    for i in 1..=n {
        for (image, seq) in plan.images.iter().zip(&mut samples) {
            check_stop(stop)?;
            let wall_start = SystemTime::now();
            let t = Instant::now();
            let node = rt
                .create_node(node_spec(net, "node1", image))
                .await
                .with_context(|| format!("create {image} node {i} of {n}"))?;
            let ready = t.elapsed();
            let wall_ready = SystemTime::now();
            let p = Phases::from_logs(
                &EngineLogs::of(rt.config(), net, &node.hostname),
                wall_start,
                wall_ready,
            );
            let t = Instant::now();
            rt.destroy_node(net, &node.hostname)
                .await
                .with_context(|| format!("destroy {image} node {i} of {n}"))?;
            let destroyed = t.elapsed();
            eprintln!(
                "create_ready {i}/{n} {image}: ready in {:.0} ms{}, destroyed in {:.0} ms",
                ms(ready),
                p.as_ref().map_or(String::new(), describe_phases),
                ms(destroyed)
            );
            seq.ready_ms.push(ms(ready));
            seq.destroy_ms.push(ms(destroyed));
            seq.phases.extend(p);
        }
    }
    rt.destroy_network(net)
        .await
        .with_context(|| format!("destroy network {net}"))?;
    Ok(samples)
}

/// One create's phases for the progress output.
fn describe_phases(p: &Phases) -> String {
    let before = match p.containerd {
        Some(c) => format!(
            "before containerd {:.0}, containerd {:.0}, dockerd {:.0} later",
            c.before_containerd_ms, c.containerd_ms, c.dockerd_lag_ms
        ),
        None => format!("before dockerd {:.0}", p.before_dockerd_ms),
    };
    format!(
        " ({before}, dockerd {:.0}, to ping {:.0})",
        p.dockerd_ms, p.after_listen_ms
    )
}

impl Sequential {
    fn create_ready_line(&self, image: &str, engine: &Engine) -> (Line, Row) {
        let ready = Summary::of(&self.ready_ms);
        let mut line = Line::new("create_ready")
            .with("image", json!(image))
            .with("docker", json!(engine.docker))
            .with("containerd", json!(engine.containerd))
            .with("recipe", json!(engine.recipe))
            .summary(&ready, "ms");
        // Where the time goes, from the timestamps in each node's engine logs; only when every
        // sample has them, so that the medians are of the same creates.
        let median_of = |xs: Vec<f64>| json!(round1(median(&xs)));
        if self.phases.len() == self.ready_ms.len() {
            let phase = |f: fn(&Phases) -> f64| median_of(self.phases.iter().map(f).collect());
            line = line.with("before_dockerd_median_ms", phase(|p| p.before_dockerd_ms));
            let split: Option<Vec<_>> = self.phases.iter().map(|p| p.containerd).collect();
            if let Some(split) = split {
                let part =
                    |f: fn(&ContainerdPhases) -> f64| median_of(split.iter().map(f).collect());
                line = line
                    .with(
                        "before_containerd_median_ms",
                        part(|c| c.before_containerd_ms),
                    )
                    .with("containerd_start_median_ms", part(|c| c.containerd_ms))
                    .with(
                        "containerd_to_dockerd_median_ms",
                        part(|c| c.dockerd_lag_ms),
                    );
            }
            line = line
                .with("dockerd_start_median_ms", phase(|p| p.dockerd_ms))
                .with("after_listen_median_ms", phase(|p| p.after_listen_ms));
        }
        let met = ready.median <= GOAL_MEDIAN_READY_MS;
        let line = line
            .with("samples_ms", json!(round_all(&self.ready_ms)))
            .with("goal_median_ms", json!(GOAL_MEDIAN_READY_MS))
            .with("goal_met", json!(met));
        let row = Row::new(
            "create_ready",
            image,
            format!("median {:.0} ms, p95 {:.0} ms", ready.median, ready.p95),
        )
        .goal(format!("median <= {GOAL_MEDIAN_READY_MS} ms"), met);
        (line, row)
    }
}

/// Benchmarks 2 to 5 for one image: a room's session of M nodes on one network.
struct Room<'a> {
    rt: &'a Arc<Runtime>,
    plan: &'a Plan,
    image: &'a str,
    report: &'a Report,
    stop: &'a AtomicBool,
    net: &'static str,
}

impl<'a> Room<'a> {
    fn new(
        rt: &'a Arc<Runtime>,
        plan: &'a Plan,
        image: &'a str,
        report: &'a Report,
        stop: &'a AtomicBool,
    ) -> Room<'a> {
        Room {
            rt,
            plan,
            image,
            report,
            stop,
            net: "conc",
        }
    }

    /// Runs them in order; `sequential_destroy_ms` are create_ready's destroys of this image.
    async fn run(&self, sequential_destroy_ms: &[f64]) -> anyhow::Result<Vec<Row>> {
        check_stop(self.stop)?;
        let mem_available_before = mem_available_mib();
        let (hostnames, concurrent) = self.concurrent().await?;
        check_stop(self.stop)?;
        let idle = self.idle_memory(&hostnames, mem_available_before).await?;
        check_stop(self.stop)?;
        let pull = self.pull_nginx(&hostnames).await?;
        let hello = self.hello_world_cold().await?;
        check_stop(self.stop)?;
        let destroy = self.destroy(sequential_destroy_ms).await?;
        Ok(vec![concurrent, idle, pull, hello, destroy])
    }

    /// A line of this image's figures.
    fn line(&self, bench: &str) -> Line {
        Line::new(bench).with("image", json!(self.image))
    }

    /// concurrent_M: one session's worth of nodes at once, each create in its own task as the
    /// server's handlers would run them. Returns the nodes' hostnames.
    async fn concurrent(&self) -> anyhow::Result<(Vec<String>, Row)> {
        let (m, net, image) = (self.plan.concurrent, self.net, self.image);
        let t = Instant::now();
        self.rt
            .create_network(net)
            .await
            .with_context(|| format!("create network {net}"))?;
        let network_ms = ms(t.elapsed());
        eprintln!("concurrent_{m} {image}: creating {m} nodes at once");
        let start = Instant::now();
        let tasks: Vec<_> = (1..=m)
            .map(|i| {
                let rt = self.rt.clone();
                let spec = node_spec(net, &format!("node{i}"), image);
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
                "{} of {m} concurrent {image} creates failed: {}",
                failures.len(),
                failures.join("; ")
            );
        }
        let each = Summary::of(&latencies);
        eprintln!(
            "concurrent_{m} {image}: all ready in {all_ready:.0} ms (each: median {:.0}, max {:.0})",
            each.median, each.max
        );
        let met = all_ready <= GOAL_CONCURRENT_READY_MS;
        let bench = format!("concurrent_{m}");
        self.report.emit(
            self.line(&bench)
                .with("n", json!(m))
                .with("all_ready_ms", json!(round1(all_ready)))
                .with("median_ms", json!(round1(each.median)))
                .with("min_ms", json!(round1(each.min)))
                .with("max_ms", json!(round1(each.max)))
                .with("network_ms", json!(round1(network_ms)))
                .with("goal_all_ready_ms", json!(GOAL_CONCURRENT_READY_MS))
                .with("goal_met", json!(met)),
        )?;
        let row = Row::new(&bench, image, format!("all ready in {all_ready:.0} ms"))
            .goal(format!("<= {GOAL_CONCURRENT_READY_MS} ms"), met);
        Ok((hostnames, row))
    }

    /// idle_memory of the concurrent nodes, after they idled; `mem_available_before` is the
    /// host's MemAvailable before they were created.
    async fn idle_memory(
        &self,
        hostnames: &[String],
        mem_available_before: Option<f64>,
    ) -> anyhow::Result<Row> {
        let (net, image, idle_secs) = (self.net, self.image, self.plan.idle_secs);
        eprintln!("idle_memory {image}: waiting {idle_secs} s");
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        check_stop(self.stop)?;
        let mut mib = Vec::with_capacity(hostnames.len());
        let mut pids = Vec::with_capacity(hostnames.len());
        for h in hostnames {
            let s = self
                .rt
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
            "idle_memory {image}: median {:.1} MiB, mean {:.1}, max {:.1} per node",
            mem.median, mem.mean, mem.max
        );
        let met = mem.max <= GOAL_IDLE_MIB;
        self.report.emit(
            self.line("idle_memory")
                .with("n", json!(hostnames.len()))
                .with("idle_s", json!(idle_secs))
                .with("median_mib", json!(round1(mem.median)))
                .with("mean_mib", json!(round1(mem.mean)))
                .with("min_mib", json!(round1(mem.min)))
                .with("max_mib", json!(round1(mem.max)))
                .with("pids_median", json!(median(&pids)))
                .with("host_mem_available_drop_mib", json!(host_drop))
                .with("samples_mib", json!(round_all(&mib)))
                .with("goal_mib", json!(GOAL_IDLE_MIB))
                .with("goal_met", json!(met)),
        )?;
        let figures = format!("median {:.1} MiB, max {:.1} MiB", mem.median, mem.max);
        Ok(Row::new("idle_memory", image, figures)
            .goal(format!("<= {GOAL_IDLE_MIB} MiB per node"), met))
    }

    /// pull_nginx_M: a room pulling from the registry mirror at the same moment.
    async fn pull_nginx(&self, hostnames: &[String]) -> anyhow::Result<Row> {
        let (net, image, m) = (self.net, self.image, hostnames.len());
        let t = Instant::now();
        let pulls = hostnames
            .iter()
            .map(|h| in_node(self.rt, net, h, "docker pull -q nginx >/dev/null"));
        let failures: Vec<String> = futures_util::future::join_all(pulls)
            .await
            .into_iter()
            .filter_map(Result::err)
            .map(|e| format!("{e:#}"))
            .collect();
        let all_done = ms(t.elapsed());
        if !failures.is_empty() {
            bail!("pull nginx in {image} nodes: {}", failures.join("; "));
        }
        eprintln!("pull_nginx_{m} {image}: all done in {all_done:.0} ms");
        let bench = format!("pull_nginx_{m}");
        self.report.emit(
            self.line(&bench)
                .with("n", json!(m))
                .with("all_done_ms", json!(round1(all_done))),
        )?;
        Ok(Row::new(
            &bench,
            image,
            format!("all done in {all_done:.0} ms"),
        ))
    }

    /// hello_world_cold: a learner's first command in a fresh node, pull included, 3 times.
    async fn hello_world_cold(&self) -> anyhow::Result<Row> {
        let (net, image) = (self.net, self.image);
        let mut hello_ms = Vec::new();
        for i in 1..=3 {
            check_stop(self.stop)?;
            let host = format!("fresh{i}");
            self.rt
                .create_node(node_spec(net, &host, image))
                .await
                .with_context(|| format!("create {image} node {host}"))?;
            let t = Instant::now();
            in_node(
                self.rt,
                net,
                &host,
                "docker run --rm hello-world >/dev/null",
            )
            .await?;
            hello_ms.push(ms(t.elapsed()));
            self.rt
                .destroy_node(net, &host)
                .await
                .with_context(|| format!("destroy {image} node {host}"))?;
        }
        let hello = Summary::of(&hello_ms);
        eprintln!("hello_world_cold {image}: median {:.0} ms", hello.median);
        self.report.emit(
            self.line("hello_world_cold")
                .summary(&hello, "ms")
                .with("samples_ms", json!(round_all(&hello_ms))),
        )?;
        Ok(Row::new(
            "hello_world_cold",
            image,
            format!("median {:.0} ms", hello.median),
        ))
    }

    /// destroy: create_ready's sequential destroys and this room's whole network at once.
    async fn destroy(&self, sequential_ms: &[f64]) -> anyhow::Result<Row> {
        let (net, image, m) = (self.net, self.image, self.plan.concurrent);
        let t = Instant::now();
        self.rt
            .destroy_network(net)
            .await
            .with_context(|| format!("destroy network {net}"))?;
        let at_once = ms(t.elapsed());
        let one = Summary::of(sequential_ms);
        eprintln!(
            "destroy {image}: median {:.0} ms, p95 {:.0} ms one by one; {m} at once in {at_once:.0} ms",
            one.median, one.p95
        );
        self.report.emit(
            self.line("destroy")
                .summary(&one, "ms")
                .with("concurrent_n", json!(m))
                .with("concurrent_ms", json!(round1(at_once))),
        )?;
        let figures = format!(
            "median {:.0} ms, p95 {:.0} ms; {m} at once {at_once:.0} ms",
            one.median, one.p95
        );
        Ok(Row::new("destroy", image, figures))
    }
}

/// One line of the closing summary.
struct Row {
    bench: String,
    image: String,
    figures: String,
    goal: String,
}

impl Row {
    fn new(bench: &str, image: &str, figures: String) -> Row {
        Row {
            bench: bench.into(),
            image: image.into(),
            figures,
            goal: String::new(),
        }
    }

    fn goal(self, goal: String, met: bool) -> Row {
        let goal = format!("{goal}: {}", if met { "met" } else { "MISSED" });
        Row { goal, ..self }
    }

    fn render(&self) -> String {
        let Row {
            bench,
            image,
            figures,
            goal,
        } = self;
        format!("  {bench:<16} {image:<10} {figures:<42} {goal}")
    }
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

fn node_spec(network: &str, hostname: &str, image: &str) -> NodeSpec {
    NodeSpec {
        network: network.into(),
        hostname: Some(hostname.into()),
        image: Some(image.into()),
    }
}
