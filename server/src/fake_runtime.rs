//! A node runtime in memory for unit tests: networks and nodes are map entries, commands
//! answer from a script, nothing touches the host. It records what it was asked to do so tests
//! can check that sessions cleaned up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use terminals::{PtyProcess, WinSize};

use crate::node_runtime::{Command, NodeFacts, NodeRuntime, NodeSample, PortsReport, RuntimeError};
use crate::wire::{ExecResult, ImageView, NodeStatus};

#[derive(Default)]
pub struct FakeRuntime {
    pub state: Mutex<FakeState>,
    /// Commands whose argv contains this word exit with status 1.
    pub fail_word: Option<&'static str>,
    /// How long creating a node takes.
    pub create_delay: Duration,
}

#[derive(Default)]
pub struct FakeState {
    pub networks: BTreeSet<String>,
    pub nodes: BTreeMap<(String, String), NodeFacts>,
    /// Every command run, as `node: argv...`.
    pub commands: Vec<String>,
    /// What `disk_free` answers (None: unreadable).
    pub disk_free: Option<u64>,
    next_ip: u8,
}

impl FakeRuntime {
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A node the runtime runs as if adopted after a restart.
    pub fn adopt(&self, network: &str, name: &str) {
        self.with(|s| {
            s.networks.insert(network.into());
            let f = s.facts(network, name, "trixie");
            s.nodes.insert((network.into(), name.into()), f);
        });
    }
}

impl FakeState {
    fn facts(&mut self, network: &str, name: &str, image: &str) -> NodeFacts {
        self.next_ip += 1;
        NodeFacts {
            network: network.into(),
            name: name.into(),
            ip: Ipv4Addr::new(10, 9, 0, self.next_ip),
            image: image.into(),
            status: NodeStatus::Running,
        }
    }
}

#[async_trait]
impl NodeRuntime for FakeRuntime {
    fn default_image(&self) -> String {
        "trixie".into()
    }

    fn disk_free(&self) -> Option<u64> {
        self.with(|s| s.disk_free)
    }

    fn images(&self) -> Vec<ImageView> {
        ["bookworm", "trixie"]
            .map(|name| ImageView {
                name: name.into(),
                debian: name.into(),
                debian_version: None,
                docker: None,
                compose: None,
                buildx: None,
            })
            .into()
    }

    async fn create_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.with(|s| s.networks.insert(name.into()));
        Ok(())
    }

    async fn destroy_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.with(|s| {
            s.networks.remove(name);
            s.nodes.retain(|(n, _), _| n != name);
        });
        Ok(())
    }

    fn networks(&self) -> Vec<String> {
        self.with(|s| s.networks.iter().cloned().collect())
    }

    async fn create_node(
        &self,
        network: &str,
        name: &str,
        image: &str,
    ) -> Result<NodeFacts, RuntimeError> {
        tokio::time::sleep(self.create_delay).await;
        self.with(|s| {
            if !s.networks.contains(network) {
                return Err(RuntimeError::Unknown(format!(
                    "unknown network {network:?}"
                )));
            }
            let f = s.facts(network, name, image);
            s.nodes.insert((network.into(), name.into()), f.clone());
            Ok(f)
        })
    }

    async fn destroy_node(&self, network: &str, name: &str) -> Result<(), RuntimeError> {
        self.with(|s| s.nodes.remove(&(network.into(), name.into())));
        Ok(())
    }

    fn node(&self, network: &str, name: &str) -> Option<NodeFacts> {
        self.with(|s| s.nodes.get(&(network.into(), name.into())).cloned())
    }

    fn nodes(&self) -> Vec<NodeFacts> {
        self.with(|s| s.nodes.values().cloned().collect())
    }

    async fn exec(
        &self,
        _network: &str,
        name: &str,
        cmd: Command,
    ) -> Result<ExecResult, RuntimeError> {
        self.with(|s| s.commands.push(format!("{name}: {}", cmd.argv.join(" "))));
        let failed = self
            .fail_word
            .is_some_and(|w| cmd.argv.iter().any(|a| a == w));
        Ok(ExecResult {
            exit_code: Some(if failed { 1 } else { 0 }),
            stdout: if failed {
                String::new()
            } else {
                "token\n".into()
            },
            stderr: if failed {
                "refused\n".into()
            } else {
                String::new()
            },
            truncated: false,
            timed_out: false,
        })
    }

    fn spawn_shell(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: WinSize,
        _: Option<BorrowedFd<'_>>,
    ) -> Result<PtyProcess, RuntimeError> {
        Err(RuntimeError::Failed(
            "the fake runtime runs no shells".into(),
        ))
    }

    fn held_shells(&self, _: &str, _: &str) -> Vec<(String, String)> {
        Vec::new()
    }

    fn adopt_shell(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<(PtyProcess, OwnedFd), RuntimeError> {
        Err(RuntimeError::Failed(
            "the fake runtime runs no shells".into(),
        ))
    }

    fn sample(&self, _: &str, _: &str) -> Result<NodeSample, RuntimeError> {
        Ok(NodeSample::default())
    }

    fn follow_ports(&self, _: &str, _: &str, _: PortsReport) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}
