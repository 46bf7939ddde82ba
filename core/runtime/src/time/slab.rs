//! Chunked slab that stores the timer wheel's entries.
//!
//! Entries live in fixed-size chunks that are allocated once and never moved or freed while the
//! wheel lives, so memory per pending timer stays close to `size_of::<Entry<T>>()` at any
//! population (a `Vec` that doubles could waste up to half of its capacity). Freed slots go on an
//! intrusive free list and are reused LIFO, which keeps recently used cache lines hot.
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

/// One timer (or one free slot).
///
/// Layout for `T = u64`: 16 (item) + 8 (deadline) + 8 (period) + 4 (generation) + 4 (link)
/// → 40 bytes.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    /// The caller's value; `None` once handed out.
    pub(crate) item: Option<T>,
    /// Tick at which the timer is due (already clamped to the wheel's time at insertion).
    pub(crate) deadline: u64,
    /// Period in ticks for a periodic timer, 0 for one-shot.
    pub(crate) period: u64,
    /// Odd while the slot holds a timer, even while free.
    pub(crate) generation: u32,
    /// Live: the address of the timer's record in its slot list. Free: the next free slot.
    pub(crate) link: u32,
}

/// Fixed-chunk slab with an intrusive free list.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    chunks: Vec<Box<[Entry<T>; CHUNK_LEN]>>,
    /// Head of the free list (`NIL` when every allocated slot is in use).
    free_head: u32,
    /// Number of slots handed out and not yet released.
    len: u32,
    /// Slots ever allocated (chunks × chunk length, minus the unused tail of the last chunk).
    high_water: u32,
    /// Slots retired because their generation would wrap.
    retired: u64,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free_head: NIL,
            len: 0,
            high_water: 0,
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

    /// Bytes held by the chunks and the chunk table.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_LEN * std::mem::size_of::<Entry<T>>()
            + self.chunks.capacity() * std::mem::size_of::<Box<[Entry<T>; CHUNK_LEN]>>()
    }

    /// Makes sure at least `n` slots exist without further allocation.
    pub(crate) fn reserve_total(&mut self, n: usize) {
        while (self.chunks.len() * CHUNK_LEN) < n {
            self.push_chunk();
        }
    }

    fn push_chunk(&mut self) {
        // A fixed-size chunk lets the inner index skip its bounds check (index & mask).
        let chunk: Box<[Entry<T>; CHUNK_LEN]> = Box::new(std::array::from_fn(|_| Entry {
            item: None,
            deadline: 0,
            period: 0,
            generation: 0,
            link: NIL,
        }));
        self.chunks.push(chunk);
    }

    /// Takes a free slot and returns its index and new (odd) generation; the caller fills it in.
    ///
    /// `max_slots` bounds the number of slots (the wheel's capacity); `None` when it is reached.
    #[inline]
    pub(crate) fn alloc(&mut self, max_slots: u32) -> Option<(u32, u32)> {
        let idx = if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.get(idx).link;
            idx
        } else {
            if self.high_water >= max_slots {
                return None;
            }
            let idx = self.high_water;
            if (idx as usize) >= self.chunks.len() * CHUNK_LEN {
                self.push_chunk();
            }
            self.high_water += 1;
            idx
        };
        self.len += 1;
        let e = self.get_mut(idx);
        e.generation = e.generation.wrapping_add(1);
        debug_assert!(e.generation & 1 == 1);
        Some((idx, e.generation))
    }

    /// Frees a slot: its generation moves on (stale handles stop matching) and it goes on the
    /// free list, or is retired when its generation wraps. The item is the caller's to take.
    #[inline]
    pub(crate) fn release(&mut self, idx: u32) {
        let head = self.free_head;
        self.len -= 1;
        let e = self.get_mut(idx);
        debug_assert!(e.generation & 1 == 1, "release of a free slot");
        e.generation = e.generation.wrapping_add(1);
        if e.generation == 0 {
            // Reusing it would hand out generation 1 again: a handle from 2^31 timers ago
            // would match. 40 bytes per 2^31 timers is the price of never confusing them.
            e.link = NIL;
            self.retired += 1;
            return;
        }
        e.link = head;
        self.free_head = idx;
    }

    #[inline]
    pub(crate) fn get(&self, idx: u32) -> &Entry<T> {
        &self.chunks[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut Entry<T> {
        &mut self.chunks[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    /// Whether `idx` holds the timer of generation `generation` (an odd number from
    /// [`Self::alloc`]).
    #[inline]
    pub(crate) fn is_live(&self, idx: u32, generation: u32) -> bool {
        idx < self.high_water && self.get(idx).generation == generation && generation & 1 == 1
    }

    /// The record address a live slot points at; `None` for a free slot.
    #[inline]
    pub(crate) fn live_link(&self, idx: u32) -> Option<u32> {
        let e = self.get(idx);
        (e.generation & 1 == 1).then_some(e.link)
    }

    /// Test hook: put a free slot's generation just before the wrap.
    #[cfg(test)]
    pub(crate) fn set_generation(&mut self, idx: u32, generation: u32) {
        self.get_mut(idx).generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_stay_within_64_bytes() {
        use std::mem::size_of;
        assert_eq!(size_of::<Entry<u64>>(), 40);
        assert_eq!(size_of::<Entry<u32>>(), 32);
        assert_eq!(size_of::<Entry<(u64, u64)>>(), 48);
        assert_eq!(size_of::<Entry<String>>(), 48);
        assert_eq!(size_of::<Entry<[u64; 3]>>(), 56);
    }

    #[test]
    fn alloc_release_reuses_and_bumps_generation() {
        let mut s: Slab<u64> = Slab::new();
        let (a, g) = s.alloc(10).expect("slot");
        assert!(s.is_live(a, g));
        s.release(a);
        assert!(!s.is_live(a, g));
        assert_eq!(s.get(a).generation, g + 1);
        let (b, g2) = s.alloc(10).expect("slot");
        assert_eq!(a, b, "free list reuses the last freed slot");
        assert_eq!(g2, g + 2);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn alloc_respects_bound() {
        let mut s: Slab<u8> = Slab::new();
        assert!(s.alloc(2).is_some());
        assert!(s.alloc(2).is_some());
        assert!(s.alloc(2).is_none());
        assert!(!s.is_live(5, 1));
    }

    #[test]
    fn slot_is_retired_instead_of_wrapping() {
        let mut s: Slab<u8> = Slab::new();
        let (a, _) = s.alloc(10).expect("slot");
        s.set_generation(a, u32::MAX);
        assert!(s.is_live(a, u32::MAX));
        s.release(a);
        assert!(!s.is_live(a, u32::MAX));
        assert_eq!(s.retired(), 1);
        let (b, g) = s.alloc(10).expect("slot");
        assert_ne!(a, b, "a retired slot is never handed out again");
        assert_eq!(g, 1);
    }
}
