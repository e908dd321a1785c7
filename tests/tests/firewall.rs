//! Nodes of a session reach each other even on a host whose FORWARD policy is DROP with bridge
//! netfilter on (what a host Docker daemon leaves behind), because each session network brings
//! its own accept rule; and removing a network removes its rules.

use sandpit_tests::TestRuntime;

/// Sets the host's FORWARD policy and bridge netfilter for the test, and restores both.
struct HostFirewall {
    policy: String,
    bridge_nf: Option<String>,
}

const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

impl HostFirewall {
    fn drop_forwarding() -> HostFirewall {
        let rules = std::process::Command::new("iptables")
            .args(["-S", "FORWARD"])
            .output()
            .expect("run iptables");
        let listing = String::from_utf8_lossy(&rules.stdout);
        let policy = listing
            .lines()
            .find_map(|l| l.strip_prefix("-P FORWARD "))
            .unwrap_or("ACCEPT")
            .trim()
            .to_string();
        let bridge_nf = std::fs::read_to_string(BRIDGE_NF).ok();
        let st = std::process::Command::new("iptables")
            .args(["-P", "FORWARD", "DROP"])
            .status()
            .unwrap();
        assert!(st.success());
        if bridge_nf.is_some() {
            std::fs::write(BRIDGE_NF, "1").unwrap();
        }
        HostFirewall { policy, bridge_nf }
    }
}

impl Drop for HostFirewall {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .args(["-P", "FORWARD", &self.policy])
            .status();
        if let Some(v) = &self.bridge_nf {
            let _ = std::fs::write(BRIDGE_NF, v.trim());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_traffic_passes_a_drop_policy_with_bridge_netfilter() {
    let _host = HostFirewall::drop_forwarding();
    let t = TestRuntime::new().await;
    let nodes = t.session("fw", 2).await;
    t.ok(&nodes[0], "ping -c2 -W2 node2 >/dev/null").await;
    t.ok(&nodes[1], "ping -c2 -W2 node1 >/dev/null").await;
    // Detached from the exec's pipes, or the exec would wait for it.
    t.ok(
        &nodes[1],
        "nc -l -p 7000 >/tmp/got 2>/dev/null </dev/null & sleep 0.2",
    )
    .await;
    t.ok(&nodes[0], "echo over-tcp | nc -w2 -N node2 7000")
        .await;
    let got = t
        .ok(
            &nodes[1],
            "for i in $(seq 20); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got",
        )
        .await;
    assert_eq!(got.trim(), "over-tcp");

    t.rt().destroy_network("fw").await.unwrap();
    let rules = sandbox::Runtime::leftovers(&t.cfg).await;
    assert!(
        !rules.iter().any(|r| r.starts_with("firewall")),
        "network rules left: {rules:#?}"
    );
    t.finish().await;
}
