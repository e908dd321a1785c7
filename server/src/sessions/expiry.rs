//! Time in a session's life: extension, the warning before the end, the end itself, retries of
//! failed teardowns, and the node figures sampled for the events stream. Two loops drive it
//! (every half second for expiry, every [`STATS_INTERVAL`] for figures); both stop when the
//! sessions are dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::SessionError;
use super::state::{live_mut, now_secs, rfc3339, SessionState};
use super::Sessions;
use crate::wire::{EndReason, Event, SessionView, StatsView};

/// How long before the end the `expiring` event goes out.
pub(super) const WARN_BEFORE: Duration = Duration::from_secs(300);
/// How often node figures are sampled.
const STATS_INTERVAL: Duration = Duration::from_secs(3);
/// How long after a failed teardown it is tried again.
const TEARDOWN_RETRY: Duration = Duration::from_secs(30);

impl Sessions {
    /// Starts the expiry and statistics loops.
    pub(super) fn start_expiry(self: &Arc<Self>) {
        self.every(Duration::from_millis(500), |s| s.expire_due(now_secs()));
        self.every(STATS_INTERVAL, |s| s.sample_stats());
    }

    /// Destroys an ending session; a failure is retried later by the expiry loop (the session
    /// stays ending, invisible to clients, until it is gone).
    pub(super) async fn teardown(&self, sid: &str) -> Result<(), SessionError> {
        let result = self.destroy(sid).await;
        if let Err(e) = &result {
            tracing::error!(session = %sid, error = %e, "tear down a session; retrying in {:?}", TEARDOWN_RETRY);
            if let Some(s) = self.lock().get_mut(sid) {
                s.state = SessionState::Ending {
                    retry_at: Some(Instant::now() + TEARDOWN_RETRY),
                };
            }
        }
        result
    }

    /// Pushes the expiry back by `secs` (default: the default lifetime), up to the maximum.
    pub fn extend(&self, sid: &str, secs: Option<u64>) -> Result<SessionView, SessionError> {
        let secs = secs.unwrap_or(self.cfg.lifetime.as_secs());
        if secs == 0 || secs > self.cfg.max_lifetime.as_secs() {
            return Err(SessionError::Invalid(format!(
                "secs must be between 1 and {}",
                self.cfg.max_lifetime.as_secs()
            )));
        }
        let expires_at = {
            let mut inner = self.lock();
            let s = live_mut(&mut inner, sid)?;
            let now = now_secs();
            let new = (s.row.expires_at.max(now) + secs as i64).min(s.row.max_expires_at);
            s.row.expires_at = new;
            if new - now > WARN_BEFORE.as_secs() as i64 {
                s.warned = false;
            }
            new
        };
        // Outside the lock; the store keeps the later of two racing extensions.
        self.store.extend_expiry(sid, expires_at)?;
        self.emit(sid, |_| Event::Extended {
            expires_at: rfc3339(expires_at),
        });
        tracing::info!(session = %sid, expires_at = %rfc3339(expires_at), "session extended");
        self.view(sid)
    }

    /// Warns sessions near their end, ends those past it at `now`, and retries teardowns.
    pub(super) fn expire_due(self: &Arc<Self>, now: i64) {
        let mut due = Vec::new();
        let mut retry = Vec::new();
        {
            let mut inner = self.lock();
            for s in inner.values_mut() {
                match s.state {
                    SessionState::Ending { retry_at: Some(t) } if t <= Instant::now() => {
                        s.state = SessionState::Ending { retry_at: None };
                        retry.push(s.row.id.clone());
                    }
                    SessionState::Live => {
                        let left = s.row.expires_at - now;
                        if left <= 0 {
                            due.push(s.row.id.clone());
                        } else if left <= WARN_BEFORE.as_secs() as i64 && !s.warned {
                            s.warned = true;
                            let _ = s.events.send(Event::Expiring {
                                expires_at: rfc3339(s.row.expires_at),
                                secs_left: left as u64,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        for id in due {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.end(&id, EndReason::Expired).await {
                    tracing::error!(session = %id, error = %e, "end an expired session");
                }
            });
        }
        for id in retry {
            let me = self.clone();
            // A failure is logged and scheduled again by `teardown`.
            tokio::spawn(async move { me.teardown(&id).await });
        }
    }

    /// Reads every ready node's cgroup and disk figures and sends them to the sessions.
    fn sample_stats(&self) {
        for (sid, name) in self.ready_nodes() {
            let Ok(st) = self.runtime.sample(&sid, &name) else {
                continue;
            };
            let now = Instant::now();
            let mut inner = self.lock();
            let Some(m) = inner.get_mut(&sid).and_then(|s| s.nodes.get_mut(&name)) else {
                continue;
            };
            let cpu_percent = match m.cpu {
                Some((prev, at)) if now > at => {
                    let ns = st.cpu_usage_ns.saturating_sub(prev) as f64;
                    (ns / (now - at).as_nanos() as f64 * 1000.0).round() / 10.0
                }
                _ => 0.0,
            };
            m.cpu = Some((st.cpu_usage_ns, now));
            m.stats = Some(StatsView {
                cpu_percent,
                memory_bytes: st.memory_bytes,
                memory_limit_bytes: st.memory_limit_bytes,
                pids: st.pids,
                disk_used_bytes: st.disk_used_bytes,
                disk_total_bytes: st.disk_total_bytes,
            });
        }
        let inner = self.lock();
        for s in inner.values().filter(|s| s.events.receiver_count() > 0) {
            let nodes: BTreeMap<String, StatsView> = s
                .nodes
                .iter()
                .filter_map(|(n, m)| m.stats.clone().map(|st| (n.clone(), st)))
                .collect();
            if !nodes.is_empty() {
                let _ = s.events.send(Event::Stats { nodes });
            }
        }
    }
}
