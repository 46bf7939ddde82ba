//! Networking: the sans-IO frame codec, session ids and table, the acceptor and the per-connection
//! task. Codec and session state never touch a socket; `conn.rs` is the only file that does I/O on
//! client sockets.

pub mod acceptor;
pub mod compress;
pub(crate) mod conn;
pub mod frame;
pub mod session;

pub use frame::{Decoder, Frame, FrameError, FrameHeader};
pub use session::{CloseReason, SessionId};

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
    /// Client listen address.
    pub listen: String,
    /// Connection spreading.
    pub balance: Balance,
    /// Largest frame accepted or sent, header included.
    pub max_frame: u32,
    /// Bytes a session may have queued for its socket before it is closed ("send buffer overflow").
    pub send_buffer_limit: usize,
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
}
