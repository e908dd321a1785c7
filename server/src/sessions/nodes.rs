//! A session's nodes: adding (reserved under the lock, built without it, recorded before the
//! answer), removing, and everything a request does with one node (its view, a command, a file,
//! its address for the port proxy). Every node request names the session and the node and is
//! checked here, once: the node must belong to the live session and be ready.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::SessionError;
use super::state::{live, live_mut, valid_node_name, NodeMeta, NodeState, MAX_NODE_NAME};
use super::Sessions;
use crate::node_runtime::Command;
use crate::store::NodeRow;
use crate::wire::{
    AddNodeRequest, Event, ExecRequest, ExecResult, NodeStatus, NodeView, Role, Uploaded,
};

/// Timeout of a command when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest timeout a request may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// How long writing an uploaded file may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

impl ExecRequest {
    /// The command, or why it cannot run.
    fn command(self) -> Result<Command, SessionError> {
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(SessionError::Invalid(
                "cmd must name a program, e.g. [\"docker\", \"ps\"]".into(),
            ));
        }
        if self.cmd.iter().any(|a| a.contains('\0')) {
            return Err(SessionError::Invalid("cmd contains a NUL byte".into()));
        }
        let timeout = match self.timeout_secs {
            None => DEFAULT_TIMEOUT,
            Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
            Some(_) => {
                return Err(SessionError::Invalid(format!(
                    "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
                )))
            }
        };
        Ok(Command {
            argv: self.cmd,
            stdin: self.stdin.map(Bytes::from),
            timeout,
        })
    }
}

/// The absolute path inside the node: relative paths are taken from the shell's home.
pub(crate) fn node_path(path: &str) -> Result<String, SessionError> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') || path.ends_with('/') {
        return Err(SessionError::Invalid(
            "path must name a file: 1 to 4096 bytes, no NUL, not ending in '/'".into(),
        ));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/root/{path}")
    })
}

impl Sessions {
    fn emit_node(&self, sid: &str, name: &str, added: bool) {
        self.emit(sid, |s| match s.nodes.get(name) {
            Some(m) => {
                let node = self.node_view(sid, name, m);
                if added {
                    Event::NodeAdded { node }
                } else {
                    Event::NodeUpdated { node }
                }
            }
            None => Event::NodeRemoved { name: name.into() },
        });
    }

    /// A node of a live session as clients see it.
    pub fn node(&self, sid: &str, name: &str) -> Result<NodeView, SessionError> {
        let inner = self.lock();
        let m = live(&inner, sid)?.node(name)?;
        Ok(self.node_view(sid, name, m))
    }

    /// Adds a node (named as asked, or the first free `nodeN`) and answers once its engine is
    /// ready.
    pub async fn add_node(&self, sid: &str, req: AddNodeRequest) -> Result<NodeView, SessionError> {
        self.check_draining()?;
        if let Some(name) = req.name.as_deref().filter(|n| !valid_node_name(n)) {
            return Err(SessionError::Invalid(format!(
                "{name:?} cannot name a node: 1 to {MAX_NODE_NAME} of a-z, 0-9 and '-', \
                 starting with a letter or digit, not ending in '-', not \"registry\""
            )));
        }
        let image = req.image.unwrap_or_else(|| self.runtime.default_image());
        let name = {
            let mut inner = self.lock();
            let total: usize = inner.values().map(|s| s.nodes.len()).sum();
            let s = live_mut(&mut inner, sid)?;
            s.can_add_node(self.cfg.max_nodes)?;
            if total >= self.cfg.capacity {
                return Err(SessionError::AtCapacity(self.cfg.capacity));
            }
            self.check_disk()?;
            let name = s.node_name_for(req.name.as_deref())?;
            s.nodes.insert(
                name.clone(),
                NodeMeta::new(image.clone(), None, NodeState::Creating),
            );
            name
        };
        self.emit_node(sid, &name, true);
        let started = Instant::now();
        let outcome = match self.runtime.create_node(sid, &name, &image).await {
            Err(e) => Err(SessionError::from(e)),
            Ok(_) => {
                let row = NodeRow {
                    session: sid.into(),
                    name: name.clone(),
                    image: image.clone(),
                    role: None,
                };
                // A node that cannot be recorded would be lost at the next restart.
                let recorded = self.store.put_node(&row);
                if recorded.is_err() {
                    let _ = self.runtime.destroy_node(sid, &name).await;
                }
                recorded.map_err(SessionError::from)
            }
        };
        let mut inner = self.lock();
        let slot = inner.get_mut(sid);
        match outcome {
            Ok(()) => {
                if let Some(m) = slot.and_then(|s| s.nodes.get_mut(&name)) {
                    m.state = NodeState::Ready;
                }
                drop(inner);
                self.metrics.observe_create("node", started.elapsed());
                tracing::info!(session = %sid, node = %name, ms = started.elapsed().as_millis() as u64, "node ready");
                self.emit_node(sid, &name, false);
                self.node(sid, &name)
            }
            Err(e) => {
                if let Some(s) = slot {
                    s.nodes.remove(&name);
                }
                drop(inner);
                self.metrics.failure("node");
                self.emit_node(sid, &name, false);
                Err(e)
            }
        }
    }

    /// Removes a node: its terminals close, then it is destroyed.
    pub async fn remove_node(&self, sid: &str, name: &str) -> Result<(), SessionError> {
        let terminals = {
            let mut inner = self.lock();
            let s = live_mut(&mut inner, sid)?;
            let m = s.node_mut(name)?;
            m.can_remove(name)?;
            m.state = NodeState::Removing;
            let mine: Vec<_> = s
                .terminals
                .keys()
                .filter(|(n, _)| n == name)
                .cloned()
                .collect();
            mine.iter()
                .filter_map(|k| s.terminals.remove(k))
                .collect::<Vec<_>>()
        };
        for t in terminals {
            t.close("the node was deleted");
        }
        if let Err(e) = self.runtime.destroy_node(sid, name).await {
            if let Some(m) = self.lock().get_mut(sid).and_then(|s| s.nodes.get_mut(name)) {
                m.state = NodeState::Ready;
            }
            return Err(e.into());
        }
        self.store.delete_node(sid, name)?;
        if let Some(s) = self.lock().get_mut(sid) {
            s.nodes.remove(name);
        }
        tracing::info!(session = %sid, node = %name, "node removed");
        self.emit_node(sid, name, false);
        Ok(())
    }

    /// Sets a node's swarm role (templates).
    pub fn set_role(&self, sid: &str, name: &str, role: Role) -> Result<(), SessionError> {
        let image = {
            let mut inner = self.lock();
            let m = live_mut(&mut inner, sid)?.node_mut(name)?;
            m.role = Some(role);
            m.image.clone()
        };
        self.store.put_node(&NodeRow {
            session: sid.into(),
            name: name.into(),
            image,
            role: Some(role.as_str().into()),
        })?;
        self.emit_node(sid, name, false);
        Ok(())
    }

    /// Records the ports published on a node; tells the events stream when they changed.
    pub(super) fn set_ports(&self, sid: &str, name: &str, ports: Vec<u16>) {
        let changed = {
            let mut inner = self.lock();
            match inner.get_mut(sid).and_then(|s| s.nodes.get_mut(name)) {
                Some(m) if m.ports != ports => {
                    m.ports = ports;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.emit_node(sid, name, false);
        }
    }

    /// Every ready node of every live session, for the background loops.
    pub(super) fn ready_nodes(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .values()
            .filter(|s| s.is_live())
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter(|(_, m)| m.state == NodeState::Ready)
                    .map(|(n, _)| (s.row.id.clone(), n.clone()))
            })
            .collect()
    }

    /// Checks that `name` is a ready node of live session `sid` whose runtime says it runs;
    /// answers its address (where the port proxy reaches it). Every node request starts here.
    pub fn node_address(&self, sid: &str, name: &str) -> Result<Ipv4Addr, SessionError> {
        {
            let inner = self.lock();
            live(&inner, sid)?.node(name)?.can_use(name)?;
        }
        match self.runtime.node(sid, name) {
            Some(f) if f.status == NodeStatus::Running => Ok(f.ip),
            Some(f) => Err(SessionError::NodeNotRunning {
                name: name.into(),
                status: f.status.to_string(),
            }),
            None => Err(SessionError::UnknownNode(name.into())),
        }
    }

    /// Runs a command in a running node and waits for it (or its timeout).
    pub async fn exec(
        &self,
        sid: &str,
        name: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, SessionError> {
        self.node_address(sid, name)?;
        let cmd = req.command()?;
        Ok(self.runtime.exec(sid, name, cmd).await?)
    }

    /// Writes a file into a running node: the path and the node are checked before `data` is
    /// awaited (the caller reads the upload there). The write runs inside the node (its mount
    /// namespace and root), so the path and any symlink in it resolve in the node's file
    /// system, never the host's.
    pub async fn write_file<E: From<SessionError>>(
        &self,
        sid: &str,
        name: &str,
        path: &str,
        data: impl std::future::Future<Output = Result<Bytes, E>>,
    ) -> Result<Uploaded, E> {
        let path = node_path(path)?;
        self.node_address(sid, name)?;
        let data = data.await?;
        let size = data.len();
        let cmd = Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1""#.into(),
                "sh".into(),
                path.clone(),
            ],
            stdin: Some(data),
            timeout: WRITE_TIMEOUT,
        };
        let out = self
            .runtime
            .exec(sid, name, cmd)
            .await
            .map_err(SessionError::from)?;
        if out.timed_out {
            return Err(SessionError::WriteTimedOut {
                path,
                node: name.into(),
            }
            .into());
        }
        if out.exit_code != Some(0) {
            return Err(SessionError::WriteFailed {
                path,
                node: name.into(),
                reason: out.stderr.trim().to_string(),
            }
            .into());
        }
        Ok(Uploaded { path, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &[&str], timeout: Option<u64>) -> ExecRequest {
        ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            timeout_secs: timeout,
        }
    }

    #[test]
    fn commands_are_checked() {
        assert!(req(&[], None).command().is_err());
        assert!(req(&[""], None).command().is_err());
        assert!(req(&["a\0b"], None).command().is_err());
        assert!(req(&["ls"], Some(0)).command().is_err());
        assert!(req(&["ls"], Some(MAX_TIMEOUT_SECS + 1)).command().is_err());
        assert_eq!(
            req(&["ls"], Some(5)).command().unwrap().timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            req(&["ls"], None).command().unwrap().timeout,
            DEFAULT_TIMEOUT
        );
    }

    #[test]
    fn upload_paths() {
        assert_eq!(node_path("x.txt").unwrap(), "/root/x.txt");
        assert_eq!(node_path("/etc/motd").unwrap(), "/etc/motd");
        assert!(node_path("").is_err());
        assert!(node_path("dir/").is_err());
        assert!(node_path("a\0b").is_err());
    }
}
