//! The requests a link carried that were not answered yet, per client session: when the peer is
//! given up (down past the grace, or it lost the link's session), each is answered
//! `NODE_UNAVAILABLE` so no client waits for an answer that cannot come.
//!
//! Bounded by `cluster.link_max_unanswered` per link, with the link's queue: the shards add
//! [`Pending::len`] (an atomic) to the queue's length under the queue's lock before they queue a
//! request, and answer `BUSY` past the bound; the writer moves a request from the queue to here
//! under that lock. So a peer that takes requests and never answers some cannot grow this map
//! without limit. A client session that closes drops its entries.

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
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A frame for `origin` arrived: when it answers a request (its request id, bytes 8..12 of
    /// the header), that request is no longer pending.
    pub fn answered(&self, origin: u64, frame: &[u8]) {
        let Some(rid) = frame.get(8..12) else { return };
        let rid = u32::from_le_bytes([rid[0], rid[1], rid[2], rid[3]]);
        if rid == 0 {
            return;
        }
        let mut g = self.lock();
        if let Some(m) = g.get_mut(&origin) {
            if m.remove(&rid).is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if m.is_empty() {
                g.remove(&origin);
            }
        }
    }

    /// The client session closed: nothing to answer any more.
    pub fn closed(&self, origin: u64) {
        if let Some(m) = self.lock().remove(&origin) {
            self.count.fetch_sub(m.len(), Ordering::Relaxed);
        }
    }

    /// Takes every pending request: (origin, request id, opcode).
    pub fn drain(&self) -> Vec<(u64, u32, u16)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for (origin, m) in g.drain() {
            out.extend(m.into_iter().map(|(rid, op)| (origin, rid, op)));
        }
        self.count.store(0, Ordering::Relaxed);
        out
    }

    /// Requests pending.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
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
        p.answered(1, &reply);
        p.answered(1, b"short");
        let push = lattice_wire::frame::encode(13, 0, 0, b"");
        p.answered(2, &push);
        assert_eq!(p.len(), 2);
        p.answered(1, &reply); // answered twice: counted once
        p.closed(2);
        p.closed(7); // never sent anything
        assert_eq!(p.len(), 1);
        let mut left = p.drain();
        left.sort_unstable();
        assert_eq!(left, vec![(1, 11, 4)]);
        assert!(p.is_empty());
    }
}
