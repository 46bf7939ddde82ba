//! Socket glue: the listeners and their acceptor threads, the per-connection task, the per-shard
//! session table, the TLS listeners' certificate source (`tls/`), plus what is checked at accept
//! (IP rules, the per-address connection rate) and the settings of session continuity.
//!
//! The protocol itself (frames, the session state machine, resume) is `lattice-wire`'s; this
//! module only moves bytes between sockets and sessions. `conn.rs` is the only file that does I/O
//! on client sockets, and it knows the shard only through [`conn::ConnHost`].
//!
//! Files: `acceptor.rs` the accept thread; `access.rs` IP rules; `ip_limit.rs` the per-address
//! connection limit; `conn.rs` the connection task; `table.rs` the session table; `tokens.rs`
//! resume tokens; `continuity.rs` the `[session]`, `[limits]` and `[access]` settings;
//! `switch.rs` publishing settings to threads without a lock on their read path.

pub mod acceptor;
pub mod access;
pub(crate) mod conn;
pub mod continuity;
pub mod ip_limit;
pub mod listener;
pub mod switch;
pub mod table;
pub mod tls;
pub mod tokens;

pub use table::{SessionCell, SessionTable};

use std::time::Duration;

use lattice_wire::SessionLimits;

use continuity::ContinuityConfig;

/// `net.balance`: how accepted connections are spread over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Shard 0, 1, 2, … in turn.
    RoundRobin,
    /// The shard with the fewest open sessions.
    LeastConns,
}

/// `[net]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Binary client listen address (frames over TCP); empty = off.
    pub listen: String,
    /// Connection spreading.
    pub balance: Balance,
    /// Largest frame accepted or sent, header included (at least 1024: the server refuses to start below).
    pub max_frame: u32,
    /// Bytes a session may have queued for its socket before it is closed ("send buffer overflow");
    /// one frame always fits an empty queue.
    pub send_buffer_limit: usize,
    /// `send_buffer_limit` of internal sessions (node links, which carry whole gates' traffic).
    pub internal_send_buffer_limit: usize,
    /// Size of the per-shard read buffer every session reads into.
    pub read_buffer: usize,
    /// Reads one session may do before yielding to others.
    pub reads_per_poll: usize,
    /// Open sessions over all shards; further connections are closed at once and counted.
    pub max_connections: usize,
    /// Set TCP_NODELAY on accepted sockets.
    pub nodelay: bool,
    /// A session that sends nothing for this long is closed ("idle timeout"); 0 = never.
    pub idle_timeout_ms: u64,
    /// A frame or WebSocket session without an accepted `Hello` (or `Resume`) this long after
    /// its connection was accepted is closed, whatever it sends; 0 = never.
    pub hello_timeout_ms: u64,
}

impl NetConfig {
    /// Small limits for unit tests: loopback on any port, 4 KiB frames and reads, 1 KiB send
    /// buffer, 10 connections.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        NetConfig {
            listen: "127.0.0.1:0".into(),
            balance: Balance::RoundRobin,
            max_frame: 4096,
            send_buffer_limit: 1024,
            internal_send_buffer_limit: 1024,
            read_buffer: 4096,
            reads_per_poll: 4,
            max_connections: 10,
            nodelay: true,
            idle_timeout_ms: 0,
            hello_timeout_ms: 0,
        }
    }

    /// The limits every session of this listener gets.
    pub fn session_limits(&self, cont: &ContinuityConfig) -> SessionLimits {
        SessionLimits {
            max_frame: self.max_frame,
            send_buffer_limit: self.send_buffer_limit,
            internal_send_buffer_limit: self.internal_send_buffer_limit,
            idle_timeout: (self.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(self.idle_timeout_ms)),
            hello_timeout: (self.hello_timeout_ms > 0)
                .then(|| Duration::from_millis(self.hello_timeout_ms)),
            resume: cont.session.resume_limits(),
            rates: cont.limits.session_rates(),
        }
    }
}
