//! The per-shard session table: a slot per live session, found by [`SessionId`].

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;

use lattice_wire::{Binding, MonoTime, Session, SessionId};

use crate::time::TimerHandle;

/// Where the socket of a session goes when it carried a `Resume` (see `ShardCx::rebind` and
/// `ShardCx::hand_over`).
pub(crate) enum Handover {
    /// To a session of this shard, as its binding `binding` (a newer resume may have fenced that
    /// binding meanwhile: the socket is then closed as stale).
    Local(Rc<SessionCell>, Binding),
    /// To another shard, with the application's message (kept by the shard's context).
    Remote,
}

/// A live session on its shard: the sans-IO [`Session`] plus the runtime's handles on it (the
/// connection task's waker, the session's timer in the shard's wheel, and a pending socket
/// handover).
pub struct SessionCell {
    /// The protocol state. Borrowed briefly (never across an application callback).
    pub session: RefCell<Session>,
    peer: Cell<SocketAddr>,
    opened: MonoTime,
    waker: Cell<Option<Waker>>,
    pub(crate) timer: Cell<Option<TimerHandle>>,
    pub(crate) handover: RefCell<Option<Handover>>,
    /// Bytes read from the socket and not yet given to the session: what followed a `Resume` in
    /// the same read, carried to the session the socket goes to.
    pub(crate) pending_input: RefCell<Vec<u8>>,
    /// While closing with output the socket does not take: until when to keep trying.
    pub(crate) linger_until: Cell<Option<MonoTime>>,
}

impl SessionCell {
    /// A cell for `session` from `peer`, opened at `opened`.
    pub fn new(session: Session, peer: SocketAddr, opened: MonoTime) -> Self {
        SessionCell {
            session: RefCell::new(session),
            peer: Cell::new(peer),
            opened,
            waker: Cell::new(None),
            timer: Cell::new(None),
            handover: RefCell::new(None),
            pending_input: RefCell::new(Vec::new()),
            linger_until: Cell::new(None),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.session.borrow().id()
    }

    /// The address of the socket serving the session (the newest one after a resume).
    pub fn peer(&self) -> SocketAddr {
        self.peer.get()
    }

    pub(crate) fn set_peer(&self, peer: SocketAddr) {
        self.peer.set(peer);
    }

    /// When the session was opened (shard clock).
    pub fn opened(&self) -> MonoTime {
        self.opened
    }

    /// Stores the connection task's waker while it waits.
    pub(crate) fn set_waker(&self, w: Waker) {
        self.waker.set(Some(w));
    }

    /// Wakes the connection task if it waits (after output was queued or a close was asked).
    pub fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Slot table of a shard's live sessions. Stale ids (an older generation of a reused slot) find
/// nothing.
///
/// Invariants (checked in debug builds): `live` equals the number of occupied slots; every free
/// slot is empty and listed once in `free`.
#[derive(Default)]
pub struct SessionTable {
    slots: Vec<(u32, Option<Rc<SessionCell>>)>,
    free: Vec<u32>,
    live: usize,
}

impl SessionTable {
    /// The id the next [`SessionTable::insert`] will use (its slot and generation).
    pub fn next_id(&self, shard: usize) -> SessionId {
        let slot = match self.free.last() {
            Some(&s) => s,
            None => self.slots.len() as u32,
        };
        let generation = self.slots.get(slot as usize).map_or(0, |e| e.0);
        SessionId::new(shard, slot, generation)
    }

    /// Inserts a cell made for [`SessionTable::next_id`].
    pub fn insert(&mut self, cell: Rc<SessionCell>) {
        let id = cell.id();
        let slot = id.slot();
        match self.free.last() {
            Some(&s) => {
                assert_eq!(s, slot, "insert must use next_id");
                self.free.pop();
            }
            None => {
                assert_eq!(slot as usize, self.slots.len(), "insert must use next_id");
                self.slots.push((0, None));
            }
        }
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.1.is_none(), "slot {slot} reused while occupied");
        debug_assert_eq!(entry.0 & 0xff_ffff, id.generation());
        entry.1 = Some(cell);
        self.live += 1;
        self.check();
    }

    /// The live session with this exact id.
    pub fn get(&self, id: SessionId) -> Option<&Rc<SessionCell>> {
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
        self.check();
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
    pub fn iter(&self) -> impl Iterator<Item = &Rc<SessionCell>> {
        self.slots.iter().filter_map(|(_, s)| s.as_ref())
    }

    #[inline]
    fn check(&self) {
        debug_assert_eq!(self.live + self.free.len(), self.slots.len());
        debug_assert!(self
            .free
            .iter()
            .all(|&f| self.slots[f as usize].1.is_none()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_wire::SessionLimits;

    fn add(t: &mut SessionTable) -> SessionId {
        let id = t.next_id(1);
        let limits = SessionLimits::basic(64, 64, None);
        t.insert(Rc::new(SessionCell::new(
            Session::new(id, limits, MonoTime(0)),
            "127.0.0.1:1".parse().unwrap(),
            MonoTime(0),
        )));
        id
    }

    #[test]
    fn stale_ids_find_nothing_after_reuse() {
        let mut t = SessionTable::default();
        let a = add(&mut t);
        assert!(t.get(a).is_some());
        assert!(t.remove(a));
        assert!(!t.remove(a), "double remove is refused");
        let b = add(&mut t);
        assert_eq!(a.slot(), b.slot(), "slot reused");
        assert_ne!(a, b);
        assert!(
            t.get(a).is_none(),
            "stale id does not reach the new session"
        );
        assert_eq!(t.len(), 1);
        let c = add(&mut t);
        assert_ne!(c.slot(), b.slot());
        assert_eq!(t.iter().count(), 2);
    }
}
