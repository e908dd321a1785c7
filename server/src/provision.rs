//! Provisioning above [`Sessions`]: a session from a template is a ready swarm in one request.
//!
//! The nodes start in parallel; then the first manager runs `docker swarm init` on its session
//! address, the other managers join one after another (each join changes the raft membership,
//! which Docker wants done one at a time) and the workers join in parallel. The session answers
//! once every node is in the swarm. Any failed step is reported by name and the whole session
//! is torn down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sessions::{SessionError, Sessions};
use crate::wire::{CreateSession, ExecRequest, Role, SessionView, Template};

/// How long one docker command of a template may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates a session and, when it names a template, its nodes and swarm; a template that
/// fails ends the whole session and the error names the step.
pub async fn create_session(
    s: &Arc<Sessions>,
    req: CreateSession,
    client: IpAddr,
) -> Result<SessionView, SessionError> {
    let started = Instant::now();
    let view = s.create(req.duration_secs, req.template, client).await?;
    let Some(t) = req.template else {
        return Ok(view);
    };
    if let Err(e) = form(s, &view.id, t).await {
        return Err(s.abandon(&view.id, e).await);
    }
    s.metrics()
        .observe_create("session_template", started.elapsed());
    s.view(&view.id)
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

/// Creates the template's nodes in session `sid` and forms the swarm. Work overlaps: the first
/// node initialises the swarm as soon as it is ready, while the others are still starting, and
/// each of them joins as soon as both it and the swarm are ready.
async fn form(s: &Sessions, sid: &str, t: Template) -> Result<(), SessionError> {
    let roles = t.roles();
    s.progress(sid, format!("creating {} nodes", roles.len()));
    let (swarm_tx, swarm_rx) = tokio::sync::watch::channel::<Option<Swarm>>(None);
    let manager_joins = tokio::sync::Mutex::new(());
    let leader = async {
        let result = init(s, sid).await;
        let _ = swarm_tx.send(Some(
            result
                .as_ref()
                .map(Clone::clone)
                .map_err(ToString::to_string),
        ));
        result.map(drop)
    };
    let followers = roles.iter().skip(1).map(|role| {
        let mut rx = swarm_rx.clone();
        let manager_joins = &manager_joins;
        async move {
            let node = s.add_node(sid, None).await.map_err(create_error)?;
            let swarm = rx.wait_for(Option::is_some).await.map(|v| v.clone());
            let Ok(Some(Ok((manager_token, worker_token, remote)))) = swarm else {
                // The leader's error is the one to report.
                return Ok(());
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
            s.set_role(sid, &node.name, *role)
        }
    });
    let (led, joined) = tokio::join!(leader, futures_util::future::join_all(followers));
    led?;
    for r in joined {
        r?;
    }
    s.progress(sid, "swarm formed");
    Ok(())
}

/// Creates the first node and initialises the swarm on it; the join tokens and address.
async fn init(s: &Sessions, sid: &str) -> Result<(String, String, String), SessionError> {
    let node = s.add_node(sid, None).await.map_err(create_error)?;
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
    Ok((manager, worker, format!("{ip}:2377")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
