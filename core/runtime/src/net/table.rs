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

/// A socket that carried a `Resume`, on its way to the session it resumes.
#[derive(Default)]
struct Transfer {
    /// Where the socket goes (set on the cell of the session that read the `Resume`).
    handover: Option<Handover>,
    /// Bytes read from the socket and not yet given to the session: what followed a `Resume` in
    /// the same read, carried to the session the socket goes to.
    pending_input: Vec<u8>,
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
    /// Present only while a socket that carried a `Resume` moves to its session (boxed: rare, and
    /// every idle session would pay 48 bytes for it inline).
    transfer: RefCell<Option<Box<Transfer>>>,
    /// While closing with output the socket does not take: until when to keep trying.
    /// (`MonoTime` nanoseconds; `u64::MAX` = not lingering: 8 bytes where an `Option` takes 16.)
    linger_until: Cell<u64>,
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
            transfer: RefCell::new(None),
            linger_until: Cell::new(u64::MAX),
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

    /// Until when a closing session keeps trying to write to a socket that does not take it, once
    /// set.
    pub(crate) fn linger_until(&self) -> Option<MonoTime> {
        let v = self.linger_until.get();
        (v != u64::MAX).then_some(MonoTime(v))
    }

    pub(crate) fn set_linger_until(&self, until: MonoTime) {
        self.linger_until.set(until.0.min(u64::MAX - 1));
    }

    /// Stores the connection task's waker while it waits.
    pub(crate) fn set_waker(&self, w: Waker) {
        self.waker.set(Some(w));
    }

    /// True while the socket of this cell is to be handed to another session.
    // Inlined: checked after every frame read.
    #[inline]
    pub(crate) fn has_handover(&self) -> bool {
        self.transfer
            .borrow()
            .as_ref()
            .is_some_and(|t| t.handover.is_some())
    }

    /// The socket of this cell goes to another session (`Local`) or shard (`Remote`).
    pub(crate) fn set_handover(&self, h: Handover) {
        self.transfer
            .borrow_mut()
            .get_or_insert_with(Box::default)
            .handover = Some(h);
    }

    /// Takes where the socket was to go.
    pub(crate) fn take_handover(&self) -> Option<Handover> {
        let mut t = self.transfer.borrow_mut();
        let h = t.as_mut()?.handover.take();
        Self::drop_if_empty(&mut t);
        h
    }

    /// Takes the bytes read ahead for this session (empty when there are none).
    // Inlined: once per pass of the connection task; almost always there is nothing.
    #[inline]
    pub(crate) fn take_pending_input(&self) -> Vec<u8> {
        let mut t = self.transfer.borrow_mut();
        let Some(tr) = t.as_mut() else {
            return Vec::new();
        };
        let v = std::mem::take(&mut tr.pending_input);
        Self::drop_if_empty(&mut t);
        v
    }

    /// Gives the session bytes read ahead on the socket it now has (replacing any held).
    pub(crate) fn set_pending_input(&self, v: Vec<u8>) {
        let mut t = self.transfer.borrow_mut();
        match t.as_mut() {
            Some(tr) => {
                tr.pending_input = v;
                Self::drop_if_empty(&mut t);
            }
            None if v.is_empty() => {}
            None => {
                *t = Some(Box::new(Transfer {
                    handover: None,
                    pending_input: v,
                }))
            }
        }
    }

    /// Keeps bytes read after a `Resume` for the session the socket goes to.
    pub(crate) fn extend_pending_input(&self, b: &[u8]) {
        self.transfer
            .borrow_mut()
            .get_or_insert_with(Box::default)
            .pending_input
            .extend_from_slice(b);
    }

    fn drop_if_empty(t: &mut Option<Box<Transfer>>) {
        if t.as_ref()
            .is_some_and(|tr| tr.handover.is_none() && tr.pending_input.is_empty())
        {
            *t = None;
        }
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

    /// Every connection holds one cell (in an `Rc`): the bound fails when a field makes every
    /// session larger. Raise it only with bench/README.md's idle-memory figure measured again.
    #[test]
    fn a_cell_stays_small() {
        let n = std::mem::size_of::<SessionCell>();
        eprintln!("size_of SessionCell {n} B");
        assert!(n <= 336, "SessionCell is {n} B");
    }

    #[test]
    fn linger_deadline_reads_back_and_saturates_below_the_sentinel() {
        let mut t = SessionTable::default();
        let id = add(&mut t);
        let cell = t.get(id).unwrap().clone();
        assert_eq!(cell.linger_until(), None);
        cell.set_linger_until(MonoTime(0));
        assert_eq!(cell.linger_until(), Some(MonoTime(0)));
        cell.set_linger_until(MonoTime(u64::MAX));
        assert_eq!(cell.linger_until(), Some(MonoTime(u64::MAX - 1)));
    }

    #[test]
    fn the_transfer_box_comes_and_goes() {
        let mut t = SessionTable::default();
        let id = add(&mut t);
        let cell = t.get(id).unwrap().clone();
        assert!(!cell.has_handover() && cell.take_pending_input().is_empty());
        cell.extend_pending_input(b"ab");
        cell.set_handover(Handover::Remote);
        assert!(cell.has_handover());
        assert!(matches!(cell.take_handover(), Some(Handover::Remote)));
        assert!(!cell.has_handover());
        assert!(cell.transfer.borrow().is_some(), "input still held");
        assert_eq!(cell.take_pending_input(), b"ab");
        assert!(cell.transfer.borrow().is_none(), "released once empty");
        cell.set_pending_input(Vec::new());
        assert!(cell.transfer.borrow().is_none(), "nothing to hold");
        cell.set_pending_input(b"c".to_vec());
        assert_eq!(cell.take_pending_input(), b"c");
        assert!(cell.transfer.borrow().is_none());
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
