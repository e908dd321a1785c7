//! Provisioning above [`Sessions`]: a session's nodes from a plan, in one request. A template
//! (`1m1w`, ...) is a plan; so is a play-with-docker `/setup` (`routes/pwd`), whose nodes also
//! run commands; a stack (`stack.rs`) is a one-node swarm that deploys a compose file.
//!
//! The nodes start in parallel; then the first manager runs `docker swarm init` on its session
//! address, the other managers join one after another (each join changes the raft membership,
//! which Docker wants done one at a time) and the workers join in parallel. The answer comes
//! once every node is in the swarm. Any failed step is reported by name and the whole session
//! is torn down.

mod stack;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sessions::{valid_node_name, SessionError, Sessions};
use crate::wire::{AddNodeRequest, CreateSession, ExecRequest, Role, SessionView};

/// How long one docker command of a template may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One node of a plan: its part in the swarm (None: not in it), its image and name (None:
/// the defaults) and the commands it runs, in order, once the swarm is formed.
#[derive(Debug, Clone, Default)]
pub struct NodePlan {
    pub role: Option<Role>,
    pub node: AddNodeRequest,
    pub run: Vec<Vec<String>>,
}

/// What one node's commands of a plan did: each one's exit status (None: timed out).
#[derive(Debug, Clone)]
pub struct NodeRuns {
    pub node: String,
    pub exit_codes: Vec<Option<i32>>,
}

/// Creates a session and, when it names a template, its nodes and swarm, or its stack; a
/// template or stack that fails ends the whole session and the error names the step. A stack
/// file is fetched before anything is made, so a refused source costs nothing.
pub async fn create_session(
    s: &Arc<Sessions>,
    req: CreateSession,
    client: IpAddr,
) -> Result<SessionView, SessionError> {
    if req.template.is_some() && req.stack.is_some() {
        return Err(SessionError::Invalid(
            "a session has a template or a stack, not both".into(),
        ));
    }
    let stack = match req.stack {
        Some(r) => Some(stack::Stack::resolve(s, r).await?),
        None => None,
    };
    let started = Instant::now();
    let view = s.create(req.duration_secs, req.template, client).await?;
    let formed = match (req.template, stack) {
        (Some(t), _) => {
            let plan: Vec<NodePlan> = t
                .roles()
                .into_iter()
                .map(|r| NodePlan {
                    role: Some(r),
                    ..NodePlan::default()
                })
                .collect();
            form(s, &view.id, &plan).await.map(drop)
        }
        (None, Some(stack)) => stack.deploy(s, &view.id).await,
        (None, None) => return Ok(view),
    };
    if let Err(e) = formed {
        return Err(s.abandon(&view.id, e).await);
    }
    s.metrics()
        .observe_create("session_template", started.elapsed());
    s.view(&view.id)
}

/// Makes the nodes of `plan` in an empty session, forms their swarm and runs their commands
/// (every node's in order, the nodes in parallel); a failed step ends the session. A command
/// that fails is the user's: its exit status is in the answer and the rest still run.
pub async fn setup(
    s: &Arc<Sessions>,
    sid: &str,
    plan: &[NodePlan],
) -> Result<Vec<NodeRuns>, SessionError> {
    check_plan(s, sid, plan)?;
    let names = match form(s, sid, plan).await {
        Ok(names) => names,
        Err(e) => return Err(s.abandon(sid, e).await),
    };
    let runs = names.iter().zip(plan).map(|(node, p)| async move {
        let mut exit_codes = Vec::new();
        for cmd in &p.run {
            let req = ExecRequest {
                cmd: cmd.clone(),
                stdin: None,
                timeout_secs: Some(STEP_TIMEOUT.as_secs()),
            };
            exit_codes.push(s.exec(sid, node, req).await?.exit_code);
        }
        Ok(NodeRuns {
            node: node.clone(),
            exit_codes,
        })
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect()
}

/// A plan fits an empty session of this server, and its swarm has a manager if it has one.
fn check_plan(s: &Sessions, sid: &str, plan: &[NodePlan]) -> Result<(), SessionError> {
    let max = s.config().max_nodes;
    if plan.is_empty() || plan.len() > max {
        return Err(SessionError::Invalid(format!(
            "a setup makes 1 to {max} nodes, not {}",
            plan.len()
        )));
    }
    if plan.iter().any(|p| p.role == Some(Role::Worker))
        && !plan.iter().any(|p| p.role == Some(Role::Manager))
    {
        return Err(SessionError::Invalid(
            "a swarm worker needs a manager in the same setup".into(),
        ));
    }
    let names: Vec<&str> = plan.iter().filter_map(|p| p.node.name.as_deref()).collect();
    if let Some(bad) = names.iter().find(|n| !valid_node_name(n)) {
        return Err(SessionError::Invalid(format!(
            "{bad:?} cannot name a node: a-z, 0-9 and '-', at most 24"
        )));
    }
    if let Some(twice) = names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
    {
        return Err(SessionError::Invalid(format!(
            "the setup names two nodes {:?}",
            twice.1
        )));
    }
    if plan.iter().flat_map(|p| &p.run).any(|c| c.is_empty()) {
        return Err(SessionError::Invalid(
            "every run command names a program, e.g. [\"docker\", \"ps\"]".into(),
        ));
    }
    if !s.view(sid)?.nodes.is_empty() {
        return Err(SessionError::SessionNotEmpty);
    }
    Ok(())
}

fn step_error(step: impl Into<String>, message: impl std::fmt::Display) -> SessionError {
    SessionError::Template {
        step: step.into(),
        message: message.to_string(),
    }
}

/// A node the template could not add: a limit (capacity, shutdown) keeps its own answer (503,
/// as when the template is refused up front); anything else is the step that failed.
fn create_error(e: SessionError) -> SessionError {
    match e {
        SessionError::AtCapacity(_) | SessionError::Draining | SessionError::NodeLimit(_) => e,
        e => step_error("create a node", e),
    }
}

/// Runs a docker command in a node; its trimmed stdout, or the step's error.
async fn docker(
    s: &Sessions,
    sid: &str,
    node: &str,
    args: &[&str],
    step: &str,
) -> Result<String, SessionError> {
    let mut cmd = vec!["docker".to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    let req = ExecRequest {
        cmd,
        stdin: None,
        timeout_secs: Some(STEP_TIMEOUT.as_secs()),
    };
    let r = s
        .exec(sid, node, req)
        .await
        .map_err(|e| step_error(step, e))?;
    match r.exit_code {
        Some(0) => Ok(r.stdout.trim().to_string()),
        _ if r.timed_out => Err(step_error(
            step,
            format!("timed out after {}s", STEP_TIMEOUT.as_secs()),
        )),
        code => Err(step_error(
            step,
            format!("exit status {code:?}: {}", r.stderr.trim()),
        )),
    }
}

/// The join tokens and address of a new swarm, or why there is none.
type Swarm = Result<(String, String, String), String>;

/// Creates the plan's nodes in session `sid` and forms the swarm; the nodes' names, in the
/// plan's order. Work overlaps: the first manager initialises the swarm as soon as it is
/// ready, while the others are still starting, and each of them joins as soon as both it and
/// the swarm are ready. Nodes without a role are only created.
async fn form(s: &Sessions, sid: &str, plan: &[NodePlan]) -> Result<Vec<String>, SessionError> {
    s.progress(sid, format!("creating {} nodes", plan.len()));
    let leader = plan.iter().position(|p| p.role == Some(Role::Manager));
    let (swarm_tx, swarm_rx) = tokio::sync::watch::channel::<Option<Swarm>>(None);
    let manager_joins = tokio::sync::Mutex::new(());
    let nodes = plan.iter().enumerate().map(|(i, p)| {
        let mut rx = swarm_rx.clone();
        let (swarm_tx, manager_joins) = (&swarm_tx, &manager_joins);
        async move {
            if Some(i) == leader {
                let result = init(s, sid, p.node.clone()).await;
                let _ = swarm_tx.send(Some(
                    result
                        .as_ref()
                        .map(|(_, swarm)| swarm.clone())
                        .map_err(ToString::to_string),
                ));
                return result.map(|(name, _)| name);
            }
            let node = s
                .add_node(sid, p.node.clone())
                .await
                .map_err(create_error)?;
            let Some(role) = p.role.filter(|_| leader.is_some()) else {
                return Ok(node.name);
            };
            let swarm = rx.wait_for(Option::is_some).await.map(|v| v.clone());
            let Ok(Some(Ok((manager_token, worker_token, remote)))) = swarm else {
                // The leader's error is the one to report.
                return Ok(node.name);
            };
            let (token, step) = match role {
                Role::Manager => (manager_token, format!("{} joins as a manager", node.name)),
                Role::Worker => (worker_token, format!("{} joins as a worker", node.name)),
            };
            // Managers change the raft membership: one at a time. Workers join in parallel.
            let _one_at_a_time = match role {
                Role::Manager => Some(manager_joins.lock().await),
                Role::Worker => None,
            };
            s.progress(sid, step.clone());
            docker(
                s,
                sid,
                &node.name,
                &["swarm", "join", "--token", &token, &remote],
                &step,
            )
            .await?;
            s.set_role(sid, &node.name, role)?;
            Ok(node.name)
        }
    });
    let mut made = futures_util::future::join_all(nodes).await;
    // The leader's error first: the others' follow from it.
    if let Some(i) = leader.filter(|&i| made[i].is_err()) {
        return made.swap_remove(i).map(|_| Vec::new());
    }
    let names = made.into_iter().collect::<Result<Vec<_>, _>>()?;
    if leader.is_some() {
        s.progress(sid, "swarm formed");
    }
    Ok(names)
}

/// Creates the first node and initialises the swarm on it; the join tokens and address.
async fn init(
    s: &Sessions,
    sid: &str,
    node: AddNodeRequest,
) -> Result<(String, (String, String, String)), SessionError> {
    let node = s.add_node(sid, node).await.map_err(create_error)?;
    let ip = node
        .ip
        .ok_or_else(|| step_error("swarm init", "the first node has no address"))?
        .to_string();
    let step = format!("swarm init on {}", node.name);
    s.progress(sid, step.clone());
    docker(
        s,
        sid,
        &node.name,
        &["swarm", "init", "--advertise-addr", &ip],
        &step,
    )
    .await?;
    s.set_role(sid, &node.name, Role::Manager)?;
    let manager = docker(
        s,
        sid,
        &node.name,
        &["swarm", "join-token", "-q", "manager"],
        "read the manager join token",
    )
    .await?;
    let worker = docker(
        s,
        sid,
        &node.name,
        &["swarm", "join-token", "-q", "worker"],
        "read the worker join token",
    )
    .await?;
    Ok((node.name, (manager, worker, format!("{ip}:2377"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Template;

    #[test]
    fn templates_parse_by_name_and_start_with_a_manager() {
        for (name, m, w) in [("1m1w", 1, 1), ("3m2w", 3, 2), ("5m", 5, 0)] {
            let t: Template = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(t.name(), name);
            let roles = t.roles();
            assert_eq!(roles[0], Role::Manager);
            assert_eq!(roles.iter().filter(|r| **r == Role::Manager).count(), m);
            assert_eq!(roles.iter().filter(|r| **r == Role::Worker).count(), w);
        }
        assert!(serde_json::from_str::<Template>("\"2m\"").is_err());
    }
}
