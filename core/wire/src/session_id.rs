//! Session ids and close reasons.

use std::fmt;

/// Identifies a session anywhere in the process: the owning shard, a slot in that shard's table and
/// the slot's generation (so a stale id never reaches a newer session in a reused slot).
///
/// Packed in a `u64`: shard in bits 56..64, generation in bits 32..56, slot in bits 0..32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// Largest shard index a session id can carry.
    pub const MAX_SHARD: usize = 255;
    const GEN_MASK: u32 = (1 << 24) - 1;

    /// Packs the fields. `generation` is truncated to 24 bits.
    pub fn new(shard: usize, slot: u32, generation: u32) -> Self {
        debug_assert!(shard <= Self::MAX_SHARD);
        SessionId(
            ((shard as u64) << 56) | (((generation & Self::GEN_MASK) as u64) << 32) | slot as u64,
        )
    }

    /// The shard that owns the session's socket.
    pub fn shard(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// Slot in the owner's table.
    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    /// Generation of the slot when the session was created.
    pub fn generation(self) -> u32 {
        ((self.0 >> 32) as u32) & Self::GEN_MASK
    }

    /// The packed value (sent to clients in `Welcome.session_id`).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Unpacks a value made by [`SessionId::as_u64`].
    pub fn from_u64(v: u64) -> Self {
        SessionId(v)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {}.{}.{}",
            self.shard(),
            self.slot(),
            self.generation()
        )
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a session ended; logged and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection cleanly.
    PeerClosed,
    /// The peer's input broke the protocol (the frame error's text).
    Protocol(String),
    /// The peer did not read its replies fast enough and the send buffer passed its limit.
    SendBufferOverflow,
    /// A socket error.
    Io(String),
    /// The application asked for it (e.g. version mismatch).
    App(String),
    /// Server shutdown.
    Shutdown,
    /// Nothing arrived from the peer for `net.idle_timeout_ms`.
    IdleTimeout,
    /// The peer passed a rate limit whose policy closes the session.
    RateLimited,
    /// A resumable session lost its socket (the text says why) and no `Resume` came within
    /// `session.resume_window_ms`.
    ResumeExpired(String),
    /// An operator closed it (admin API or an IP rule change; the text says which).
    Admin(String),
    /// A temporary session whose socket carried a `Resume`: the socket now serves the resumed
    /// session (on this shard or another); nothing was lost.
    HandedOver,
}

impl CloseReason {
    /// Short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Protocol(_) => "protocol_error",
            CloseReason::SendBufferOverflow => "send_buffer_overflow",
            CloseReason::Io(_) => "io_error",
            CloseReason::App(_) => "app",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Admin(_) => "admin",
            CloseReason::ResumeExpired(_) => "resume_expired",
            CloseReason::HandedOver => "handed_over",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::SendBufferOverflow => f.write_str("send buffer overflow"),
            CloseReason::Io(e) => write!(f, "io error: {e}"),
            CloseReason::App(e) => write!(f, "closed by server: {e}"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::RateLimited => f.write_str("rate limited"),
            CloseReason::Admin(why) => write!(f, "closed by operator: {why}"),
            CloseReason::ResumeExpired(why) => {
                write!(f, "resume window expired (socket lost: {why})")
            }
            CloseReason::HandedOver => f.write_str("socket handed to a resumed session"),
        }
    }
}
