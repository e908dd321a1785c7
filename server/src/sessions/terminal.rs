//! The terminals of a session's nodes: each is one shared shell ([`Terminal`]), started on
//! first use and closed with its node or session. A node may have up to [`MAX_TERMINALS`].

use std::time::Duration;

use terminals::{Terminal, TerminalOptions};

use super::error::SessionError;
use super::state::{live_mut, Session};
use super::Sessions;
use crate::node_runtime::{NodeShell, RuntimeError};

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
        let shell = NodeShell::new(self.runtime.clone(), sid, name, term);
        let started = tokio::time::timeout(
            TERMINAL_START,
            Terminal::start(shell, self.terminal_options()),
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

impl Sessions {
    /// Options of node terminals: the configured ones, with the output kept with each shell
    /// so that the next server takes the terminal over.
    fn terminal_options(&self) -> TerminalOptions {
        TerminalOptions {
            keep_output: true,
            ..self.cfg.terminal.clone()
        }
    }

    /// Takes over the terminals a previous server left in the session's nodes (their shells
    /// kept running in holders). A terminal that cannot be taken over starts afresh on its
    /// next use; a second holder of one terminal (a crash while the first was exiting) is
    /// ended.
    pub(super) fn adopt_terminals(&self, sid: &str) {
        let nodes: Vec<String> = match live_mut(&mut self.lock(), sid) {
            Ok(s) => s.nodes.keys().cloned().collect(),
            Err(_) => return,
        };
        for name in nodes {
            for (term, holder) in self.runtime.held_shells(sid, &name) {
                let adopted =
                    self.runtime
                        .adopt_shell(sid, &name, &holder)
                        .and_then(|(shell, kept)| {
                            let spawner = NodeShell::new(self.runtime.clone(), sid, &name, &term);
                            Terminal::adopt(spawner, self.terminal_options(), shell, kept)
                                .map_err(|e| RuntimeError::Failed(e.into()))
                        });
                let t = match adopted {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(session = %sid, node = %name, %holder, error = %e, "cannot take a terminal over; it starts afresh");
                        continue;
                    }
                };
                let mut inner = self.lock();
                let Ok(s) = live_mut(&mut inner, sid) else {
                    return;
                };
                let key = (name.clone(), term);
                if s.terminals.contains_key(&key) {
                    t.close("a second holder of the terminal");
                    continue;
                }
                tracing::info!(session = %sid, node = %name, terminal = %key.1, offset = t.offset(), "terminal taken over");
                s.terminals.insert(key, t);
            }
        }
    }
}

/// Sessions go only with the server: every terminal is left to the next server, its shell
/// running in its holder (see [`Terminal::leave`]), however the server stops and whenever the
/// terminal was started.
impl Drop for Sessions {
    fn drop(&mut self) {
        for s in self.lock().values() {
            s.terminals.values().for_each(Terminal::leave);
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
