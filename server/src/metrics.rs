//! `/metrics`: Prometheus figures of the service. Gauges (sessions, nodes, terminal viewers)
//! are read from the sessions at scrape time; counters and histograms are updated where things
//! happen (create latency by kind, failures by reason).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::wire::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

pub struct Metrics {
    registry: Registry,
    sessions: Gauge,
    nodes: Gauge,
    viewers: Gauge,
    capacity: Gauge,
    disk_free: Gauge,
    disk_reserve: Gauge,
    disk_low: Gauge,
    create_seconds: Family<KindLabel, Histogram>,
    failures: Family<ReasonLabel, Counter<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sandpit");
        let sessions = Gauge::default();
        let nodes = Gauge::default();
        let viewers = Gauge::default();
        let capacity = Gauge::default();
        let disk_free = Gauge::default();
        let disk_reserve = Gauge::default();
        let disk_low = Gauge::default();
        let create_seconds = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0])
        });
        let failures = Family::<ReasonLabel, Counter<u64, AtomicU64>>::default();
        registry.register("sessions", "Live sessions", sessions.clone());
        registry.register("nodes", "Nodes of live sessions", nodes.clone());
        registry.register(
            "terminal_viewers",
            "Connected terminal viewers",
            viewers.clone(),
        );
        registry.register("capacity", "Nodes this host takes in all", capacity.clone());
        registry.register(
            "disk_free_bytes",
            "Free space on the node disks' filesystem (-1: unreadable)",
            disk_free.clone(),
        );
        registry.register(
            "disk_reserve_bytes",
            "Free space below which no node is made",
            disk_reserve.clone(),
        );
        registry.register(
            "disk_low",
            "1 while the free space is below the reserve",
            disk_low.clone(),
        );
        registry.register(
            "create_seconds",
            "Time to create a node, a session, or a templated session with its swarm",
            create_seconds.clone(),
        );
        registry.register("failures", "Failed creations by reason", failures.clone());
        Metrics {
            registry,
            sessions,
            nodes,
            viewers,
            capacity,
            disk_free,
            disk_reserve,
            disk_low,
            create_seconds,
            failures,
        }
    }

    pub fn observe_create(&self, kind: &str, took: Duration) {
        self.create_seconds
            .get_or_create(&KindLabel { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition, with the gauges set from `health` (what `/healthz` says).
    pub fn render(&self, health: &Health) -> String {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions.set(health.sessions as i64);
        self.nodes.set(health.session_nodes as i64);
        self.viewers.set(health.viewers as i64);
        self.capacity.set(health.capacity as i64);
        self.disk_free.set(health.disk_free_bytes.map_or(-1, int));
        self.disk_reserve.set(int(health.disk_reserve_bytes));
        self.disk_low.set(health.disk_low.into());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_gauges_counters_and_histograms() {
        let m = Metrics::new();
        m.observe_create("node", Duration::from_millis(700));
        m.failure("node");
        let text = m.render(&Health {
            status: "ok",
            sessions: 2,
            nodes: 4,
            session_nodes: 3,
            viewers: 1,
            networks: 2,
            session_secs: 3600,
            max_nodes: 5,
            capacity: 34,
            disk_free_bytes: Some(3 << 30),
            disk_reserve_bytes: 4 << 30,
            disk_low: true,
        });
        assert!(text.contains("sandpit_sessions 2"), "{text}");
        assert!(text.contains("sandpit_nodes 3"), "{text}");
        assert!(text.contains("sandpit_terminal_viewers 1"), "{text}");
        assert!(text.contains("sandpit_capacity 34"), "{text}");
        assert!(
            text.contains("sandpit_disk_free_bytes 3221225472"),
            "{text}"
        );
        assert!(
            text.contains("sandpit_disk_reserve_bytes 4294967296"),
            "{text}"
        );
        assert!(text.contains("sandpit_disk_low 1"), "{text}");
        assert!(
            text.contains("sandpit_failures_total{reason=\"node\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sandpit_create_seconds_bucket{le=\"1.0\",kind=\"node\"} 1"),
            "{text}"
        );
    }
}
