//! Operator control: the commands that travel on the shards' control lanes, and the handle the
//! admin thread uses to send them and wait (bounded) for the answers.
//!
//! A control lane is checked first in every loop pass and does not go through the mesh rings, so
//! commands get through when every data ring is full. Answers come back on a bounded channel made
//! for the command; the admin side waits for them with a deadline and reports a shard that did not
//! answer in time instead of blocking.

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_wire::rate::SessionRates;
use lattice_wire::SessionId;

use crate::mesh::{ControlFull, ShardSignal};
use crate::net::access::{AccessRules, Cidr};
use crate::net::continuity::LimitsConfig;
use crate::net::switch::Switch;

/// Where a command's answer goes (a bounded channel of one).
pub type Reply<T> = SyncSender<T>;

/// A command for one shard.
#[derive(Debug)]
pub enum Control {
    /// Stop reading client input, flush replies (bounded wait), close sessions, stop the shard.
    Shutdown,
    /// Close the sessions `which` selects on this shard, each with `reason` logged; the number
    /// closed goes to `done`.
    Close {
        /// Which sessions.
        which: CloseSelector,
        /// Logged and carried in the close reason ("closed by operator: …").
        reason: String,
        /// Gets the number of sessions closed.
        done: Option<Reply<usize>>,
    },
    /// Describe this shard's sessions.
    Sessions {
        /// Which sessions to list.
        query: SessionQuery,
        /// Gets the answer.
        reply: Reply<ShardSessions>,
    },
    /// New rate limits for the sessions of this shard, existing ones included.
    SetRates(SessionRates),
}

/// Which sessions a [`Control::Close`] closes.
#[derive(Debug, Clone)]
pub enum CloseSelector {
    /// Every session.
    All,
    /// These sessions (ids of other shards are ignored).
    Ids(Vec<SessionId>),
    /// Sessions whose peer address lies in one of these blocks.
    Cidrs(Vec<Cidr>),
    /// Sessions whose peer address these rules refuse (each closed with the rule's reason).
    RefusedBy(Arc<AccessRules>),
}

/// Filter of a [`Control::Sessions`] listing.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only sessions whose peer lies in this block.
    pub peer: Option<Cidr>,
    /// Only detached (`Some(true)`) or attached (`Some(false)`) sessions.
    pub detached: Option<bool>,
    /// Most sessions listed per shard (the counts cover every match).
    pub limit: usize,
}

/// One session, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id.
    pub id: SessionId,
    /// Address of its (newest) socket.
    pub peer: SocketAddr,
    /// `Hello` accepted.
    pub ready: bool,
    /// Resume enabled.
    pub resumable: bool,
    /// Without a socket, waiting for a resume: since how long (ms) and why.
    pub detached: Option<(u64, String)>,
    /// Milliseconds since it opened.
    pub age_ms: u64,
    /// Milliseconds since the peer last sent bytes.
    pub idle_ms: u64,
    /// Bytes queued for its socket.
    pub unsent: usize,
    /// Frames and bytes kept for replay.
    pub replay: (usize, usize),
}

/// One shard's answer to [`Control::Sessions`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardSessions {
    /// The shard.
    pub shard: usize,
    /// Sessions open on it (attached or detached).
    pub open: usize,
    /// Of which detached.
    pub detached: usize,
    /// Sessions that match the query.
    pub matched: usize,
    /// The first `limit` matches, in slot order.
    pub sessions: Vec<SessionInfo>,
}

/// Why a shard gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// Its control lane is full.
    #[error("control lane full")]
    LaneFull,
    /// No answer within the wait.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The shard stopped (its end of the channel is gone).
    #[error("shard stopped")]
    Gone,
}

/// The admin thread's handle on the shards' control lanes and on the settings the acceptor reads.
#[derive(Clone)]
pub struct ControlHandle {
    pub(crate) signals: Arc<Vec<ShardSignal>>,
    pub(crate) access: Arc<Switch<AccessRules>>,
    pub(crate) limits: Arc<Switch<LimitsConfig>>,
}

impl ControlHandle {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.signals.len()
    }

    /// Queues `cmd` on shard `shard`'s control lane.
    pub fn send(&self, shard: usize, cmd: Control) -> Result<(), ControlFull> {
        match self.signals.get(shard) {
            Some(s) => s.push_control(cmd),
            None => Err(ControlFull(0)),
        }
    }

    /// Sends the command `make` builds to each shard in `shards` and waits until `wait` has passed
    /// in all for the answers, one per shard in the order given.
    ///
    /// Cost: one channel and one command per shard; blocks the caller at most `wait`.
    pub fn ask<T: Send + 'static>(
        &self,
        shards: &[usize],
        wait: Duration,
        make: impl Fn(Reply<T>) -> Control,
    ) -> Vec<(usize, Result<T, AskError>)> {
        let deadline = Instant::now() + wait;
        let pending: Vec<(usize, Result<Receiver<T>, AskError>)> = shards
            .iter()
            .map(|&shard| {
                let (tx, rx) = sync_channel(1);
                let sent = self.send(shard, make(tx)).map(|_| rx);
                (shard, sent.map_err(|_| AskError::LaneFull))
            })
            .collect();
        pending
            .into_iter()
            .map(|(shard, rx)| {
                let answer = rx.and_then(|rx| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    rx.recv_timeout(left).map_err(|e| match e {
                        RecvTimeoutError::Timeout => AskError::Timeout(wait),
                        RecvTimeoutError::Disconnected => AskError::Gone,
                    })
                });
                (shard, answer)
            })
            .collect()
    }

    /// The IP rules in force.
    pub fn access(&self) -> Arc<AccessRules> {
        self.access.current()
    }

    /// Replaces the IP rules the acceptor applies to new connections (existing sessions are
    /// closed only by a [`CloseSelector::RefusedBy`] command).
    pub fn set_access(&self, rules: AccessRules) {
        self.access.replace(rules);
    }

    /// The rate limits in force.
    pub fn limits(&self) -> Arc<LimitsConfig> {
        self.limits.current()
    }

    /// Replaces the rate limits: the acceptor's per-address limit at its next connection, and
    /// every shard's session limits through its control lane. Returns the shards whose lane was
    /// full (they keep the old session limits).
    pub fn set_limits(&self, limits: LimitsConfig) -> Vec<usize> {
        let rates = limits.session_rates();
        self.limits.replace(limits);
        (0..self.shards())
            .filter(|&s| self.send(s, Control::SetRates(rates)).is_err())
            .collect()
    }
}
