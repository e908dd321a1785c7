//! The node benchmarks, in order; each emits its line as soon as its figures are known.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use sandbox::{ExecOptions, NodeSpec, Runtime};
use serde_json::json;

use crate::figures::{ms, Summary};
use crate::host::mem_available_mib;
use crate::phases::{dockerd_log, Phases};
use crate::report::{Line, Report};
use crate::stats::{median, round1, round_all};

/// Goals from the product brief: a node is ready about as fast as dockerd starts, a room's
/// session of ten nodes within seconds, and idle nodes are cheap enough to pack a host.
const GOAL_MEDIAN_READY_MS: f64 = 350.0;
const GOAL_CONCURRENT_READY_MS: f64 = 3000.0;
const GOAL_IDLE_MIB: f64 = 48.0;

/// What to run: the sizes and image of the benchmarks (from the command line).
#[derive(Clone)]
pub(crate) struct Plan {
    /// Nodes created one after another (create_ready, destroy).
    pub(crate) sequential: usize,
    /// Nodes created at once on one network (concurrent_<n>, idle_memory).
    pub(crate) concurrent: usize,
    /// Seconds the concurrent nodes idle before their memory is read.
    pub(crate) idle_secs: u64,
    /// Image of the nodes.
    pub(crate) image: String,
}

/// The benchmarks of the crate's doc, in order.
pub(crate) async fn benchmarks(
    rt: Arc<Runtime>,
    plan: Plan,
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
    let n = plan.sequential;
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
            .create_node(node_spec(net, "node1", &plan.image))
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
    let m = plan.concurrent;
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
            let spec = node_spec(net, &format!("node{i}"), &plan.image);
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
    eprintln!("idle_memory: waiting {} s", plan.idle_secs);
    tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
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
            .with("idle_s", json!(plan.idle_secs))
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
        rt.create_node(node_spec(net, &host, &plan.image))
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
            goal(
                format!("median <= {GOAL_MEDIAN_READY_MS} ms"),
                ready.median <= GOAL_MEDIAN_READY_MS,
            ),
        ),
        (
            format!("concurrent_{m}"),
            format!("all ready in {all_ready:.0} ms"),
            goal(
                format!("<= {GOAL_CONCURRENT_READY_MS} ms"),
                all_ready <= GOAL_CONCURRENT_READY_MS,
            ),
        ),
        (
            "idle_memory".to_string(),
            format!("median {:.1} MiB, max {:.1} MiB", mem.median, mem.max),
            goal(
                format!("<= {GOAL_IDLE_MIB} MiB per node"),
                mem.max <= GOAL_IDLE_MIB,
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

/// A goal of the summary and whether it was met.
fn goal(goal: String, met: bool) -> String {
    format!("{goal}: {}", if met { "met" } else { "MISSED" })
}

fn node_spec(network: &str, hostname: &str, image: &str) -> NodeSpec {
    NodeSpec {
        network: network.into(),
        hostname: Some(hostname.into()),
        image: Some(image.into()),
    }
}
