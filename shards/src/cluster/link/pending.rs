//! The requests a link carried that were not answered yet, per client session: when the peer is
//! given up (down past the grace, or it lost the link's session), each is answered
//! `NODE_UNAVAILABLE` so no client waits for an answer that cannot come.
//!
//! Bounded by `cluster.link_max_unanswered` per link, with the link's queue: the shards add
//! [`Pending::len`] (an atomic) to the queue's length under the queue's lock before they queue a
//! request, and answer `BUSY` past the bound; the writer moves a request from the queue to here
//! under that lock. So a peer that takes requests and never answers some cannot grow this map
//! without limit. A client session that closes drops its entries.
//!
//! A stopping gate's shards wait while anything is pending, on its way to an inbox or in it
//! ([`LinkHandle::awaiting_replies`]). So an answer is always counted somewhere: the reader counts
//! it as delivering before it removes its entry and until it is queued, and
//! [`Pending::drain_with`] removes the entries only after its callback queued their errors.
//! Without that, the last answers were in no counted place for a moment and the drain could
//! close their sessions without them (a CI run lost five Pongs so).
//!
//! [`LinkHandle::awaiting_replies`]: super::client::LinkHandle::awaiting_replies

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Unanswered requests: client session → request id → opcode.
#[derive(Debug, Default)]
pub struct Pending {
    map: Mutex<HashMap<u64, HashMap<u32, u16>>>,
    /// Entries in `map`, changed under its lock, read without it.
    count: AtomicUsize,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HashMap<u32, u16>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request went out. Request id 0 is not tracked: its answer cannot be told from a push.
    pub fn sent(&self, origin: u64, request_id: u32, opcode: u16) {
        if request_id != 0 {
            let mut g = self.lock();
            if g.entry(origin)
                .or_default()
                .insert(request_id, opcode)
                .is_none()
            {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The request id of a frame for a client (bytes 8..12 of its header; 0 for a push or a
    /// frame too short to have one).
    pub fn request_id(frame: &[u8]) -> u32 {
        frame
            .get(8..12)
            .map_or(0, |r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
    }

    /// The answer to `origin`'s request `rid` (from [`Pending::request_id`]) came: that request
    /// is no longer pending. Request id 0 is not tracked.
    pub fn answered(&self, origin: u64, rid: u32) {
        if rid == 0 {
            return;
        }
        let mut g = self.lock();
        if let Some(m) = g.get_mut(&origin) {
            if m.remove(&rid).is_some() {
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
            if m.is_empty() {
                g.remove(&origin);
            }
        }
    }

    /// The client session closed: nothing to answer any more.
    pub fn closed(&self, origin: u64) {
        if let Some(m) = self.lock().remove(&origin) {
            self.count.fetch_sub(m.len(), Ordering::AcqRel);
        }
    }

    /// Hands every pending request to `answer` (origin, request id, opcode), then forgets them
    /// all: they count as pending until `answer` has queued each one's answer.
    pub fn drain_with(&self, mut answer: impl FnMut(u64, u32, u16)) {
        let mut g = self.lock();
        for (origin, m) in g.iter() {
            for (rid, op) in m {
                answer(*origin, *rid, *op);
            }
        }
        g.clear();
        self.count.store(0, Ordering::Release);
    }

    /// Requests pending.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_until_answered_or_closed() {
        let p = Pending::default();
        p.sent(1, 10, 4);
        p.sent(1, 11, 4);
        p.sent(2, 10, 12);
        p.sent(3, 0, 4); // not tracked
        p.sent(1, 11, 4); // the same request id again: one entry
        assert_eq!(p.len(), 3);
        let reply = lattice_wire::frame::encode(5, 0, 10, b"");
        assert_eq!(Pending::request_id(&reply), 10);
        assert_eq!(Pending::request_id(b"short"), 0);
        p.answered(1, Pending::request_id(&reply));
        p.answered(1, Pending::request_id(b"short"));
        let push = lattice_wire::frame::encode(13, 0, 0, b"");
        p.answered(2, Pending::request_id(&push));
        assert_eq!(p.len(), 2);
        p.answered(1, 10); // answered twice: counted once
        p.closed(2);
        p.closed(7); // never sent anything
        assert_eq!(p.len(), 1);
        p.sent(4, 1, 4);
        let mut left = Vec::new();
        // Each still counts while its answer is being queued.
        p.drain_with(|o, r, op| left.push((o, r, op, p.len())));
        left.sort_unstable();
        assert_eq!(left, vec![(1, 11, 4, 2), (4, 1, 4, 2)]);
        assert!(p.is_empty());
    }
}
