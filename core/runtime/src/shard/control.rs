//! A shard's side of operator control: the commands of its control lane other than shutdown
//! (mass close, session listing, live rate limits). The admin side is [`crate::control`].

use std::net::SocketAddr;

use lattice_wire::{CloseReason, SessionId};

use super::app::ShardApp;
use super::state::ShardState;
use crate::control::{CloseSelector, Control, SessionInfo, SessionQuery, ShardSessions};
use crate::telemetry::metrics::ShardMetrics;

impl<A: ShardApp> ShardState<A> {
    /// Runs one control command (not `Shutdown`, which the loop handles).
    pub(crate) fn run_control(&self, cmd: Control) {
        ShardMetrics::add(&self.cx.cm().control_commands_total, 1);
        match cmd {
            Control::Shutdown => {}
            Control::Close {
                which,
                reason,
                done,
            } => {
                let n = self.close_selected(&which, &reason);
                if let Some(done) = done {
                    // The asker may have given up waiting: nothing to do then.
                    let _ = done.try_send(n);
                }
            }
            Control::Sessions { query, reply } => {
                let _ = reply.try_send(self.list_sessions(&query));
            }
            Control::SetRates(rates) => {
                self.cx.set_session_rates(rates);
                tracing::info!(shard = self.cx.id, "session rate limits changed");
            }
        }
    }

    /// Closes the sessions `which` selects, each with its reason logged. Returns how many.
    fn close_selected(&self, which: &CloseSelector, reason: &str) -> usize {
        let cx = &self.cx;
        let chosen: Vec<(SessionId, SocketAddr, String)> = cx
            .sessions
            .borrow()
            .iter()
            .filter(|c| !c.session.borrow().is_closing())
            .filter_map(|c| {
                let (id, peer) = (c.id(), c.peer());
                let why = match which {
                    CloseSelector::All => Some(reason.to_string()),
                    CloseSelector::Ids(ids) => ids.contains(&id).then(|| reason.to_string()),
                    CloseSelector::Cidrs(blocks) => blocks
                        .iter()
                        .find(|b| b.contains(peer.ip()))
                        .map(|b| format!("{reason} ({peer} in {b})")),
                    CloseSelector::RefusedBy(rules) => rules
                        .check(peer.ip())
                        .reason()
                        .map(|r| format!("{reason}: {r}")),
                };
                why.map(|w| (id, peer, w))
            })
            .collect();
        for (id, peer, why) in &chosen {
            tracing::info!(session = %id, %peer, reason = %why, "closing session on operator request");
            cx.close(*id, CloseReason::Admin(why.clone()));
        }
        chosen.len()
    }

    /// This shard's sessions as the query filters them.
    fn list_sessions(&self, q: &SessionQuery) -> ShardSessions {
        let cx = &self.cx;
        let now = cx.now();
        let table = cx.sessions.borrow();
        let mut out = ShardSessions {
            shard: cx.id,
            open: table.len(),
            ..Default::default()
        };
        for c in table.iter() {
            let s = c.session.borrow();
            let detached = s.detached().map(|(at, why)| {
                (
                    now.saturating_since(*at).as_millis() as u64,
                    why.to_string(),
                )
            });
            if detached.is_some() {
                out.detached += 1;
            }
            if q.peer.is_some_and(|b| !b.contains(c.peer().ip())) {
                continue;
            }
            if q.detached.is_some_and(|d| d != detached.is_some()) {
                continue;
            }
            out.matched += 1;
            if out.sessions.len() < q.limit {
                out.sessions.push(SessionInfo {
                    id: c.id(),
                    peer: c.peer(),
                    ready: s.is_ready(),
                    resumable: s.is_resumable(),
                    detached,
                    age_ms: now.saturating_since(c.opened()).as_millis() as u64,
                    idle_ms: now.saturating_since(s.last_seen()).as_millis() as u64,
                    unsent: s.unsent(),
                    replay: s.replay_held(),
                });
            }
        }
        out
    }
}
