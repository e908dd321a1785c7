//! [`NodeRuntime`] over the `sandbox` crate's [`Runtime`]: real nodes with their own engine.
//!
//! Besides translating names and errors, this is where a command's output is collected: the
//! command runs through the runtime's exec helper (all of the node's namespaces and cgroups),
//! each stream is kept up to [`MAX_OUTPUT`] bytes, and a command that outlives its timeout is
//! killed (the helper dies with its handle and the command with the helper)..

use std::os::fd::{BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sandbox::{ExecOptions, Hold, NodeInfo, Runtime};
use terminals::{PtyProcess, WinSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::held_shell::HeldShell;
use crate::node_runtime::{Command, NodeFacts, NodeRuntime, NodeSample, PortsReport, RuntimeError};
use crate::wire::{ExecResult, ImageView};

/// Most bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 1 << 20;

/// The node runtime of this host.
#[derive(Clone)]
pub struct SandboxRuntime {
    runtime: Arc<Runtime>,
}

impl SandboxRuntime {
    pub fn new(runtime: Arc<Runtime>) -> SandboxRuntime {
        SandboxRuntime { runtime }
    }
}

fn facts(n: NodeInfo) -> NodeFacts {
    NodeFacts {
        network: n.network,
        name: n.hostname,
        ip: n.ip,
        image: n.image,
        status: n.status,
    }
}

impl From<sandbox::Error> for RuntimeError {
    fn from(e: sandbox::Error) -> RuntimeError {
        use sandbox::Error as E;
        match e {
            E::InvalidName { .. } | E::Image(_) => RuntimeError::Invalid(e.to_string()),
            E::UnknownNode { .. } | E::UnknownNetwork(_) => RuntimeError::Unknown(e.to_string()),
            E::NetworkBusy(_) => RuntimeError::Busy(e.to_string()),
            E::NotRunning { .. } | E::NetworkFull(_) => RuntimeError::Conflict(e.to_string()),
            E::SubnetPoolExhausted(_) | E::UidPoolExhausted(_) | E::AddressInUse { .. } => {
                RuntimeError::Exhausted(e.to_string())
            }
            E::EngineNotReady { ref hostname, .. } => RuntimeError::EngineNotReady {
                node: hostname.clone(),
                detail: e.to_string(),
            },
            e => RuntimeError::Failed(Box::new(e)),
        }
    }
}

/// Destroying what is gone already is done.
fn gone_is_done(r: Result<(), sandbox::Error>) -> Result<(), RuntimeError> {
    match r {
        Ok(()) | Err(sandbox::Error::UnknownNode { .. } | sandbox::Error::UnknownNetwork(_)) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl NodeRuntime for SandboxRuntime {
    fn default_image(&self) -> String {
        self.runtime.config().default_image.clone()
    }

    fn disk_free(&self) -> Option<u64> {
        self.runtime.disk_use().ok().map(|d| d.free_bytes)
    }

    fn images(&self) -> Vec<ImageView> {
        self.runtime
            .images()
            .into_iter()
            .map(|i| ImageView {
                name: i.name,
                debian: i.debian,
                debian_version: i.debian_version,
                docker: i.engine.docker,
                compose: i.engine.compose,
                buildx: i.engine.buildx,
            })
            .collect()
    }

    async fn create_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.runtime.create_network(name).await?;
        Ok(())
    }

    async fn destroy_network(&self, name: &str) -> Result<(), RuntimeError> {
        gone_is_done(self.runtime.destroy_network(name).await)
    }

    fn networks(&self) -> Vec<String> {
        self.runtime
            .networks()
            .into_iter()
            .map(|n| n.name)
            .collect()
    }

    async fn create_node(
        &self,
        network: &str,
        name: &str,
        image: &str,
    ) -> Result<NodeFacts, RuntimeError> {
        let spec = sandbox::NodeSpec {
            network: network.into(),
            hostname: Some(name.into()),
            image: Some(image.into()),
        };
        Ok(facts(self.runtime.create_node(spec).await?))
    }

    async fn destroy_node(&self, network: &str, name: &str) -> Result<(), RuntimeError> {
        gone_is_done(self.runtime.destroy_node(network, name).await)
    }

    fn node(&self, network: &str, name: &str) -> Option<NodeFacts> {
        self.runtime.node(network, name).map(facts)
    }

    fn nodes(&self) -> Vec<NodeFacts> {
        self.runtime.nodes().into_iter().map(facts).collect()
    }

    async fn exec(
        &self,
        network: &str,
        name: &str,
        cmd: Command,
    ) -> Result<ExecResult, RuntimeError> {
        let mut child = self
            .runtime
            .command(network, name, &cmd.argv, &ExecOptions::default())?;
        child
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = child.spawn().map_err(|e| {
            RuntimeError::Failed(format!("start the exec helper in {name}: {e}").into())
        })?;
        let input = child.stdin.take();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let feed = async {
            if let (Some(mut pipe), Some(data)) = (input, cmd.stdin.as_deref()) {
                // A command that does not read its input is not an error.
                let _ = pipe.write_all(data).await;
            }
        };
        let work = async {
            let ((stdout, cut_out), (stderr, cut_err), (), status) =
                tokio::join!(bounded(out), bounded(err), feed, child.wait());
            (stdout, stderr, cut_out || cut_err, status)
        };
        match tokio::time::timeout(cmd.timeout, work).await {
            Ok((stdout, stderr, truncated, status)) => {
                let status = status.map_err(|e| {
                    RuntimeError::Failed(format!("wait for the command in {name}: {e}").into())
                })?;
                use std::os::unix::process::ExitStatusExt;
                Ok(ExecResult {
                    exit_code: status.code().or_else(|| status.signal().map(|s| 128 + s)),
                    stdout,
                    stderr,
                    truncated,
                    timed_out: false,
                })
            }
            // Dropping the child kills the helper; the command dies with it.
            Err(_) => Ok(ExecResult {
                exit_code: None,
                stdout: String::new(),
                stderr: format!("timed out after {}s\n", cmd.timeout.as_secs()),
                truncated: false,
                timed_out: true,
            }),
        }
    }

    fn spawn_shell(
        &self,
        network: &str,
        name: &str,
        terminal: &str,
        size: WinSize,
        keep: Option<BorrowedFd<'_>>,
    ) -> Result<PtyProcess, RuntimeError> {
        let hold = keep.map(|keep| Hold { terminal, keep });
        let shell = self
            .runtime
            .spawn_shell(network, name, size.cols, size.rows, hold)?;
        let Some(conn) = shell.holder else {
            return Ok(PtyProcess::child(shell.master, shell.child));
        };
        held(shell.master, conn, Some(shell.child), None)
    }

    fn held_shells(&self, network: &str, name: &str) -> Vec<(String, String)> {
        let ids = self.runtime.held_shells(network, name).into_iter();
        ids.map(|id| (sandbox::hold::terminal_of(&id).to_owned(), id))
            .collect()
    }

    fn adopt_shell(
        &self,
        network: &str,
        name: &str,
        holder: &str,
    ) -> Result<(PtyProcess, OwnedFd), RuntimeError> {
        let h = self.runtime.adopt_shell(network, name, holder)?;
        Ok((held(h.master, h.conn, None, h.ended)?, h.kept))
    }

    fn sample(&self, network: &str, name: &str) -> Result<NodeSample, RuntimeError> {
        let st = self.runtime.stats(network, name)?;
        Ok(NodeSample {
            cpu_usage_ns: st.cgroup.cpu_usage_ns,
            memory_bytes: st.cgroup.memory_bytes,
            memory_limit_bytes: st.cgroup.memory_limit_bytes,
            pids: st.cgroup.pids,
            disk_used_bytes: st.disk_used_bytes,
            disk_total_bytes: st.disk_total_bytes,
        })
    }

    fn follow_ports(
        &self,
        network: &str,
        name: &str,
        report: PortsReport,
    ) -> BoxFuture<'static, ()> {
        Box::pin(crate::ports::follow(
            self.runtime.clone(),
            network.to_string(),
            name.to_string(),
            report,
        ))
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn bounded(mut r: impl AsyncRead + Unpin) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

/// A shell kept by the holder at the other end of `conn` (see [`HeldShell::new`]).
fn held(
    master: OwnedFd,
    conn: std::os::unix::net::UnixStream,
    child: Option<tokio::process::Child>,
    ended: Option<i32>,
) -> Result<PtyProcess, RuntimeError> {
    let process = HeldShell::new(conn, child, ended)
        .map_err(|e| RuntimeError::Failed(format!("talk to the shell's holder: {e}").into()))?;
    Ok(PtyProcess {
        master,
        process: Box::new(process),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use crate::SessionError;
    use axum::response::IntoResponse;

    /// The status and JSON message a runtime error answers with, and the detail it keeps for
    /// the server's log.
    async fn answer(e: sandbox::Error) -> (u16, String, String) {
        let e = RuntimeError::from(e);
        let RuntimeError::Exhausted(detail) = &e else {
            panic!("not a lack of room: {e:?}");
        };
        let detail = detail.clone();
        let res = ApiError::from(SessionError::Runtime(e)).into_response();
        let status = res.status().as_u16();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, json["error"].as_str().unwrap().to_string(), detail)
    }

    const FULL: &str = "the server is at capacity; try again later";

    #[tokio::test]
    async fn a_host_without_room_is_a_503_and_the_log_says_why() {
        let pool: sandbox::Subnet = "10.201.0.0/16".parse().unwrap();
        let full = sandbox::PoolFull {
            pool,
            len: 24,
            in_use: 0,
            overlapping: 256,
            example: Some(sandbox::HostNet {
                subnet: "10.201.0.0/24".parse().unwrap(),
                holder: "sandpitb1".into(),
            }),
        };
        let (status, message, detail) = answer(sandbox::Error::SubnetPoolExhausted(full)).await;
        assert_eq!((status, message.as_str()), (503, FULL));
        assert!(
            detail.starts_with("no free /24 in the pool 10.201.0.0/16: 256 overlap")
                && detail.contains("(e.g. 10.201.0.0/24 via sandpitb1)")
                && detail.contains("configure --subnet-pool"),
            "{detail}"
        );

        let addr = "10.201.0.1:53".parse().unwrap();
        let e = sandbox::Error::AddressInUse {
            service: "the session DNS server",
            addr,
        };
        let (status, message, detail) = answer(e).await;
        assert_eq!((status, message.as_str()), (503, FULL));
        assert!(
            detail.starts_with(
                "the session DNS server cannot listen on 10.201.0.1:53: the address is in use"
            ),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn output_is_cut_at_the_bound() {
        let data = vec![b'x'; MAX_OUTPUT + 10];
        let (s, cut) = bounded(&data[..]).await;
        assert!(cut);
        assert_eq!(s.len(), MAX_OUTPUT);
        let (s, cut) = bounded(&b"hi"[..]).await;
        assert!(!cut);
        assert_eq!(s, "hi");
    }
}
