//! Session ids and the per-shard session table.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;

use crate::time::{MonoTime, TimerHandle};

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
        }
    }
}

/// The part of a session that other code on the shard touches: its output and its close request.
/// The connection task owns the socket and the decoder.
pub struct SessionShared {
    /// Session id.
    pub id: SessionId,
    /// Peer address.
    pub peer: SocketAddr,
    /// Encoded frames waiting to be written, and how much of the front is already written.
    pub out: RefCell<OutBuf>,
    /// Set once; the connection task closes the session with this reason.
    pub closing: RefCell<Option<CloseReason>>,
    /// Waker of the connection task, set while it waits.
    pub waker: Cell<Option<Waker>>,
    /// When the peer last sent bytes.
    pub last_seen: Cell<MonoTime>,
    /// The session's idle timer in the shard's wheel.
    pub idle_timer: Cell<Option<TimerHandle>>,
}

/// A session's bounded send buffer.
#[derive(Default)]
pub struct OutBuf {
    /// Bytes, the first `written` of which are already on the socket.
    pub bytes: Vec<u8>,
    /// Prefix of `bytes` already written.
    pub written: usize,
}

impl OutBuf {
    /// Bytes not yet written.
    pub fn unsent(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Marks `n` more bytes written; releases a large buffer once drained so idle sessions stay
    /// small.
    pub fn consume(&mut self, n: usize) {
        self.written += n;
        debug_assert!(self.written <= self.bytes.len());
        if self.written == self.bytes.len() {
            self.written = 0;
            if self.bytes.capacity() > 4096 {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
    }
}

impl SessionShared {
    /// Asks the connection task to close the session (first reason wins) and wakes it.
    pub fn close(&self, reason: CloseReason) {
        let mut c = self.closing.borrow_mut();
        if c.is_none() {
            *c = Some(reason);
        }
        drop(c);
        self.wake();
    }

    /// Wakes the connection task if it waits.
    pub fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Slot table of a shard's live sessions. Stale ids (older generation) find nothing.
#[derive(Default)]
pub struct SessionTable {
    slots: Vec<(u32, Option<Rc<SessionShared>>)>,
    free: Vec<u32>,
    live: usize,
}

impl SessionTable {
    /// Reserves a slot and returns the id the session will have.
    pub fn insert_with(
        &mut self,
        shard: usize,
        make: impl FnOnce(SessionId) -> Rc<SessionShared>,
    ) -> Rc<SessionShared> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.1.is_none());
        let id = SessionId::new(shard, slot, entry.0);
        let s = make(id);
        entry.1 = Some(s.clone());
        self.live += 1;
        s
    }

    /// The live session with this exact id.
    pub fn get(&self, id: SessionId) -> Option<&Rc<SessionShared>> {
        match self.slots.get(id.slot() as usize) {
            Some((gen, Some(s))) if *gen & 0xff_ffff == id.generation() => Some(s),
            _ => None,
        }
    }

    /// Frees the slot of `id` (bumping its generation). Returns false if the id was stale.
    pub fn remove(&mut self, id: SessionId) -> bool {
        if self.get(id).is_none() {
            return false;
        }
        let entry = &mut self.slots[id.slot() as usize];
        entry.1 = None;
        entry.0 = entry.0.wrapping_add(1);
        self.free.push(id.slot());
        self.live -= 1;
        true
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every live session.
    pub fn iter(&self) -> impl Iterator<Item = &Rc<SessionShared>> {
        self.slots.iter().filter_map(|(_, s)| s.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(id: SessionId) -> Rc<SessionShared> {
        Rc::new(SessionShared {
            id,
            peer: "127.0.0.1:1".parse().unwrap(),
            out: RefCell::default(),
            closing: RefCell::default(),
            waker: Cell::new(None),
            last_seen: Cell::new(MonoTime(0)),
            idle_timer: Cell::new(None),
        })
    }

    #[test]
    fn id_packs_fields() {
        let id = SessionId::new(3, 70_000, 5);
        assert_eq!((id.shard(), id.slot(), id.generation()), (3, 70_000, 5));
        assert_eq!(id.to_string(), "session 3.70000.5");
        assert_eq!(SessionId::from_u64(id.as_u64()), id);
        assert_eq!(SessionId::new(255, u32::MAX, 1 << 24).generation(), 0);
    }

    #[test]
    fn stale_ids_find_nothing_after_reuse() {
        let mut t = SessionTable::default();
        let a = t.insert_with(1, shared).id;
        assert!(t.get(a).is_some());
        assert!(t.remove(a));
        assert!(!t.remove(a), "double remove is refused");
        let b = t.insert_with(1, shared).id;
        assert_eq!(a.slot(), b.slot(), "slot reused");
        assert_ne!(a, b);
        assert!(
            t.get(a).is_none(),
            "stale id does not reach the new session"
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn outbuf_releases_large_buffers_when_drained() {
        let mut o = OutBuf::default();
        o.bytes.extend_from_slice(&[0u8; 10_000]);
        o.consume(4_000);
        assert_eq!(o.unsent(), 6_000);
        o.consume(6_000);
        assert_eq!(o.bytes.capacity(), 0);
    }
}
