//! Chunked slab that stores the timer wheel's entries, split in a hot and a cold half.
//!
//! The hot half of a slot is 8 bytes: its generation and its link (see below). It is all that
//! cancel, the liveness test of a record and compaction read, so at a million timers they touch
//! an 8 MB array instead of 40 MB of entries (one cache miss into a smaller, more often cached
//! working set). The cold half holds the item, deadline and period; insert, fire and cascade
//! read it.
//!
//! Both halves live in fixed-size chunks that are allocated once and never moved or freed while
//! the wheel lives, so memory per pending timer stays close to 8 + `size_of::<Cold<T>>()` at any
//! population (a `Vec` that doubles could waste up to half of its capacity, and would copy
//! megabytes in the middle of an insert). Freed slots go on an intrusive free list (through the
//! hot link) and are reused LIFO, which keeps recently used cache lines hot.
//!
//! A cold chunk is a `Vec` with room for exactly one chunk that is never grown: a slot's cold
//! half is written (pushed) the first time the slot is handed out, together with the timer, so
//! a fresh chunk is not filled with empty entries first (that was 32 bytes written twice per
//! slot, and about 10 instructions per insert while the wheel grows). Cold slots exist exactly
//! for the indices below the high-water mark.
//!
//! A slot's generation is odd while it holds a timer and even while it is free; it moves on at
//! every allocation and every release, so a handle (index, odd generation) names one timer only.
//! A slot whose generation would wrap is retired instead of reused (once per 2^31 timers in that
//! slot), so a stale handle can never reach a later timer.
//!
//! Knows nothing about levels or slot lists; the wheel keeps `link` pointing at the timer's
//! record (see [`super::records`]).

/// "No slot" in the free list.
pub(crate) const NIL: u32 = u32::MAX;

/// Entries per chunk (power of two).
const CHUNK_SHIFT: u32 = 10;
const CHUNK_LEN: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u32 = (CHUNK_LEN as u32) - 1;

/// The hot half of a slot: what cancel and every liveness test read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hot {
    /// Odd while the slot holds a timer, even while free.
    pub(crate) generation: u32,
    /// Live: the address of the timer's record in its slot list. Free: the next free slot.
    pub(crate) link: u32,
}

const FREE_HOT: Hot = Hot {
    generation: 0,
    link: NIL,
};

/// The cold half of a slot.
///
/// Layout for `T = u64`: 16 (item) + 8 (deadline) + 8 (period) → 32 bytes, so with the 8-byte
/// hot half a timer costs 40 bytes of slab.
#[derive(Debug)]
pub(crate) struct Cold<T> {
    /// The caller's value; `None` once handed out. For a `T` without drop glue a cancelled
    /// timer's value is left here (it is dead data) until the slot is reused.
    pub(crate) item: Option<T>,
    /// Tick at which the timer is due (already clamped to the wheel's time at insertion).
    pub(crate) deadline: u64,
    /// Period in ticks for a periodic timer, 0 for one-shot.
    pub(crate) period: u64,
}

type HotChunk = Box<[Hot; CHUNK_LEN]>;
/// Holds `CHUNK_LEN` entries of capacity, filled up to the slab's high-water mark; never grown.
type ColdChunk<T> = Vec<Cold<T>>;

/// Fixed-chunk slab with an intrusive free list.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    hot: Vec<HotChunk>,
    cold: Vec<ColdChunk<T>>,
    /// Head of the free list (`NIL` when every allocated slot is in use).
    free_head: u32,
    /// Number of slots handed out and not yet released.
    len: u32,
    /// Slots ever allocated (chunks × chunk length, minus the unused tail of the last chunk).
    high_water: u32,
    /// Most slots ever handed out (the wheel's `max_timers`).
    max_slots: u32,
    /// Fresh slots below this index can be handed out without a new chunk: the smaller of the
    /// chunks' room and `max_slots`. One comparison on the fresh path instead of two (bound,
    /// room); [`Self::grow`] moves it.
    fresh_end: u32,
    /// Slots retired because their generation would wrap.
    retired: u64,
}

impl<T> Slab<T> {
    /// An empty slab that hands out at most `max_slots` slots.
    pub(crate) fn new(max_slots: u32) -> Self {
        Self {
            max_slots,
            hot: Vec::new(),
            cold: Vec::new(),
            free_head: NIL,
            len: 0,
            high_water: 0,
            fresh_end: 0,
            retired: 0,
        }
    }

    /// Number of slots in use.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Slots retired at a generation wrap (never reused).
    pub(crate) fn retired(&self) -> u64 {
        self.retired
    }

    /// Bytes held by the chunks and the chunk tables.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.hot.len() * CHUNK_LEN * (std::mem::size_of::<Hot>() + std::mem::size_of::<Cold<T>>())
            + self.hot.capacity() * std::mem::size_of::<HotChunk>()
            + self.cold.capacity() * std::mem::size_of::<ColdChunk<T>>()
    }

    /// Makes sure at least `n` slots exist without further allocation.
    pub(crate) fn reserve_total(&mut self, n: usize) {
        while (self.hot.len() * CHUNK_LEN) < n {
            self.push_chunk();
        }
    }

    fn push_chunk(&mut self) {
        // Built in place on the heap (a `Box::new([..])` would be built on the stack and
        // copied: 40 KB per chunk). Fixed-size chunks let the inner index skip its bounds
        // check (index & mask).
        let hot: Box<[Hot]> = vec![FREE_HOT; CHUNK_LEN].into_boxed_slice();
        let hot: HotChunk = match hot.try_into() {
            Ok(chunk) => chunk,
            Err(_) => Box::new([FREE_HOT; CHUNK_LEN]),
        };
        // Room for the whole chunk, filled as slots are first handed out (see the module doc).
        self.hot.push(hot);
        self.cold.push(Vec::with_capacity(CHUNK_LEN));
    }

    /// Makes room for fresh slot `high_water` (a chunk, when it is the first of one), or says
    /// `false` when `max_slots` slots exist already. Out of line: runs once per chunk, or on
    /// every insert of a full wheel.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) -> bool {
        let idx = self.high_water;
        if idx >= self.max_slots {
            return false;
        }
        if (idx as usize) >= self.hot.len() * CHUNK_LEN {
            self.push_chunk();
        }
        let room = u32::try_from(self.hot.len() * CHUNK_LEN).unwrap_or(u32::MAX);
        self.fresh_end = room.min(self.max_slots);
        true
    }

    /// Takes a free slot, stores `cold` in it and returns its index and new (odd) generation;
    /// the caller sets the hot link.
    ///
    /// `None` when `max_slots` slots are in use or retired
    /// (`cold` is dropped then). A reused slot's old cold half is overwritten (dropping it: its
    /// item is `None`, or a value without drop glue); a fresh slot's is written once.
    #[inline]
    pub(crate) fn alloc(&mut self, cold: Cold<T>) -> Option<(u32, u32)> {
        let idx = if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.hot(idx).link;
            *self.cold_mut(idx) = cold;
            idx
        } else {
            let idx = self.high_water;
            if idx >= self.fresh_end && !self.grow() {
                return None;
            }
            let chunk = &mut self.cold[(idx >> CHUNK_SHIFT) as usize];
            debug_assert_eq!(chunk.len(), (idx & CHUNK_MASK) as usize);
            debug_assert!(chunk.len() < chunk.capacity(), "a cold chunk never grows");
            chunk.push(cold);
            self.high_water += 1;
            idx
        };
        self.len += 1;
        let h = self.hot_mut(idx);
        h.generation = h.generation.wrapping_add(1);
        debug_assert!(h.generation & 1 == 1);
        Some((idx, h.generation))
    }

    /// Frees a slot: its generation moves on (stale handles stop matching) and it goes on the
    /// free list, or is retired when its generation wraps. Touches only the hot half; the item
    /// is the caller's to take (or to leave, when it has no drop glue).
    #[inline]
    pub(crate) fn release(&mut self, idx: u32) {
        let head = self.free_head;
        self.len -= 1;
        let h = self.hot_mut(idx);
        debug_assert!(h.generation & 1 == 1, "release of a free slot");
        h.generation = h.generation.wrapping_add(1);
        if h.generation == 0 {
            // Reusing it would hand out generation 1 again: a handle from 2^31 timers ago
            // would match. 40 bytes per 2^31 timers is the price of never confusing them.
            h.link = NIL;
            self.retired += 1;
            return;
        }
        h.link = head;
        self.free_head = idx;
    }

    #[inline]
    pub(crate) fn hot(&self, idx: u32) -> &Hot {
        &self.hot[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    #[inline]
    pub(crate) fn hot_mut(&mut self, idx: u32) -> &mut Hot {
        &mut self.hot[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    #[inline]
    pub(crate) fn cold(&self, idx: u32) -> &Cold<T> {
        &self.cold[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    #[inline]
    pub(crate) fn cold_mut(&mut self, idx: u32) -> &mut Cold<T> {
        &mut self.cold[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    /// Whether `idx` holds the timer of generation `generation` (an odd number from
    /// [`Self::alloc`]). Reads the hot half only.
    #[inline]
    pub(crate) fn is_live(&self, idx: u32, generation: u32) -> bool {
        idx < self.high_water && self.hot(idx).generation == generation && generation & 1 == 1
    }

    /// The record address a live slot points at; `None` for a free slot. Hot half only.
    #[inline]
    pub(crate) fn live_link(&self, idx: u32) -> Option<u32> {
        let h = self.hot(idx);
        (h.generation & 1 == 1).then_some(h.link)
    }

    /// Points a live slot at its record's new address.
    #[inline]
    pub(crate) fn set_link(&mut self, idx: u32, addr: u32) {
        debug_assert!(self.hot(idx).generation & 1 == 1);
        self.hot_mut(idx).link = addr;
    }

    /// Test hook: put a slot's generation just before the wrap.
    #[cfg(test)]
    pub(crate) fn set_generation(&mut self, idx: u32, generation: u32) {
        self.hot_mut(idx).generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold<T>(item: T) -> Cold<T> {
        Cold {
            item: Some(item),
            deadline: 7,
            period: 0,
        }
    }

    #[test]
    fn slot_sizes() {
        use std::mem::size_of;
        // Per timer: 8 hot bytes + the cold half (+ 4 bytes of record in its slot list).
        assert_eq!(size_of::<Hot>(), 8);
        assert_eq!(size_of::<Cold<u64>>(), 32);
        assert_eq!(size_of::<Cold<u32>>(), 24);
        assert_eq!(size_of::<Cold<(u64, u64)>>(), 40);
        assert_eq!(size_of::<Cold<String>>(), 40);
        assert_eq!(size_of::<Cold<[u64; 3]>>(), 48);
    }

    #[test]
    fn alloc_release_reuses_and_bumps_generation() {
        let mut s: Slab<u64> = Slab::new(10);
        let (a, g) = s.alloc(cold(1)).expect("slot");
        assert!(s.is_live(a, g));
        s.release(a);
        assert!(!s.is_live(a, g));
        assert_eq!(s.hot(a).generation, g + 1);
        let (b, g2) = s.alloc(cold(2)).expect("slot");
        assert_eq!(a, b, "free list reuses the last freed slot");
        assert_eq!(g2, g + 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.cold(b).item, Some(2), "reuse overwrites the cold half");
    }

    #[test]
    fn alloc_respects_bound() {
        let mut s: Slab<u64> = Slab::new(2);
        assert!(s.alloc(cold(1)).is_some());
        assert!(s.alloc(cold(2)).is_some());
        assert!(s.alloc(cold(3)).is_none());
        // A freed slot is handed out again; the bound counts slots, not calls.
        s.release(0);
        assert!(s.alloc(cold(4)).is_some());
        assert!(s.alloc(cold(5)).is_none());
        assert!(!s.is_live(5, 1));
    }

    /// The fresh-slot bound holds across chunk boundaries and with chunks reserved ahead.
    #[test]
    fn bound_holds_across_chunks_and_reserve() {
        for reserve in [0, CHUNK_LEN, 3 * CHUNK_LEN] {
            let max = (CHUNK_LEN + 5) as u32;
            let mut s: Slab<u64> = Slab::new(max);
            s.reserve_total(reserve);
            for i in 0..max {
                let (idx, g) = s.alloc(cold(u64::from(i))).expect("below the bound");
                assert_eq!((idx, g), (i, 1));
                assert_eq!(s.cold(idx).item, Some(u64::from(i)));
            }
            assert!(s.alloc(cold(0)).is_none(), "reserve {reserve}");
            assert_eq!(s.len(), max as usize);
        }
    }

    #[test]
    fn slot_is_retired_instead_of_wrapping() {
        let mut s: Slab<u64> = Slab::new(10);
        let (a, _) = s.alloc(cold(1)).expect("slot");
        s.set_generation(a, u32::MAX);
        assert!(s.is_live(a, u32::MAX));
        s.release(a);
        assert!(!s.is_live(a, u32::MAX));
        assert_eq!(s.retired(), 1);
        let (b, g) = s.alloc(cold(2)).expect("slot");
        assert_ne!(a, b, "a retired slot is never handed out again");
        assert_eq!(g, 1);
    }
}
