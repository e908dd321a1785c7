//! The terminals of a session's nodes: each is one shared shell ([`Terminal`]), started on
//! first use and closed with its node or session. A node may have up to [`MAX_TERMINALS`].

use std::time::Duration;

use terminals::Terminal;

use super::error::SessionError;
use super::state::{live_mut, Session};
use super::Sessions;
use crate::node_runtime::NodeShell;

/// The terminal that viewers and play-with-docker pages get when they name none.
pub const MAIN_TERMINAL: &str = "main";
/// Terminals a node may have at once.
const MAX_TERMINALS: usize = 4;
/// How long a new terminal's shell may take to start.
const TERMINAL_START: Duration = Duration::from_secs(15);

impl Sessions {
    /// The shared terminal `term` of a running node, started on first use.
    ///
    /// The shell is started without the sessions' lock (it opens files inside the node, which
    /// the node can make slow) and within [`TERMINAL_START`]; if another request started the
    /// same terminal meanwhile, that one is used.
    pub async fn terminal(
        &self,
        sid: &str,
        name: &str,
        term: &str,
    ) -> Result<Terminal, SessionError> {
        self.node_address(sid, name)?;
        let key = (name.to_string(), term.to_string());
        if let Some(t) = terminal_or_room(live_mut(&mut self.lock(), sid)?, &key)? {
            return Ok(t);
        }
        let shell = NodeShell::new(self.runtime.clone(), sid, name);
        let started = tokio::time::timeout(
            TERMINAL_START,
            Terminal::start(shell, self.cfg.terminal.clone()),
        )
        .await
        .map_err(|_| SessionError::Internal(format!("a shell on {name} did not start")))?
        .map_err(|e| SessionError::Internal(format!("start a terminal on {name}: {e}")))?;
        let mut inner = self.lock();
        // Checked again: the same or other terminals may have been started meanwhile.
        let s = live_mut(&mut inner, sid);
        match s.and_then(|s| terminal_or_room(s, &key).map(|t| (s, t))) {
            Ok((s, None)) => {
                s.terminals.insert(key, started.clone());
                Ok(started)
            }
            Ok((_, Some(theirs))) => {
                started.close("started twice");
                Ok(theirs)
            }
            Err(e) => {
                started.close("not needed");
                Err(e)
            }
        }
    }
}

/// The live terminal `(node, name)` of a session, or None if one more may be started.
fn terminal_or_room(
    s: &mut Session,
    (node, name): &(String, String),
) -> Result<Option<Terminal>, SessionError> {
    s.terminals.retain(|_, t| !t.is_closed());
    if let Some(t) = s.terminals.get(&(node.clone(), name.clone())) {
        return Ok(Some(t.clone()));
    }
    let open: Vec<&str> = s
        .terminals
        .keys()
        .filter(|(n, _)| n == node)
        .map(|(_, t)| t.as_str())
        .collect();
    if open.len() >= MAX_TERMINALS {
        return Err(SessionError::TerminalLimit {
            node: node.clone(),
            open: open.join(", "),
            max: MAX_TERMINALS,
        });
    }
    Ok(None)
}
