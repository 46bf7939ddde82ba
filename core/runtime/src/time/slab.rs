//! Chunked slab that stores the timer wheel's entries.
//!
//! Entries live in fixed-size chunks that are allocated once and never moved or freed while the
//! wheel lives, so memory per pending timer stays close to `size_of::<Entry<T>>()` at any
//! population (a `Vec` that doubles could waste up to half of its capacity). Freed slots go on an
//! intrusive free list and are reused LIFO, which keeps recently used cache lines hot.
//!
//! Knows nothing about levels or slots; the wheel owns list linking.

/// Index of "no entry" in the intrusive lists.
pub(crate) const NIL: u32 = u32::MAX;

/// `Entry::loc` value of a slot that holds no timer.
pub(crate) const LOC_FREE: u16 = u16::MAX;

/// Entries per chunk (power of two).
const CHUNK_SHIFT: u32 = 10;
const CHUNK_LEN: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u32 = (CHUNK_LEN as u32) - 1;

/// One timer (or one free slot).
///
/// Layout for `T = u64`: 16 (item) + 8 (deadline) + 8 (period) + 4 × 3 (links, generation)
/// + 2 (location) → 48 bytes after padding.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    /// The caller's value; `None` while the slot is free.
    pub(crate) item: Option<T>,
    /// Tick at which the timer is due (already clamped to the wheel's time at insertion).
    pub(crate) deadline: u64,
    /// Period in ticks for a periodic timer, 0 for one-shot.
    pub(crate) period: u64,
    /// Previous entry in its slot list, or `NIL`.
    pub(crate) prev: u32,
    /// Next entry in its slot list (or in the free list), or `NIL`.
    pub(crate) next: u32,
    /// Bumped each time the slot is freed, so stale handles are detected.
    pub(crate) generation: u32,
    /// Which list holds the entry (`level * 64 + slot`, the overflow list) or `LOC_FREE`.
    pub(crate) loc: u16,
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
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free_head: NIL,
            len: 0,
            high_water: 0,
        }
    }

    /// Number of slots in use.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
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
            prev: NIL,
            next: NIL,
            generation: 0,
            loc: LOC_FREE,
        }));
        self.chunks.push(chunk);
    }

    /// Takes a free slot and returns its index; the caller fills it in.
    ///
    /// `max_index` bounds the number of slots (the wheel's capacity); `None` when it is reached.
    #[inline]
    pub(crate) fn alloc(&mut self, max_slots: u32) -> Option<u32> {
        if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.get(idx).next;
            self.len += 1;
            return Some(idx);
        }
        if self.high_water >= max_slots {
            return None;
        }
        let idx = self.high_water;
        if (idx as usize) >= self.chunks.len() * CHUNK_LEN {
            self.push_chunk();
        }
        self.high_water += 1;
        self.len += 1;
        Some(idx)
    }

    /// Returns a slot to the free list and bumps its generation; gives back the item.
    #[inline]
    pub(crate) fn release(&mut self, idx: u32) -> Option<T> {
        let head = self.free_head;
        let e = self.get_mut(idx);
        let item = e.item.take();
        e.generation = e.generation.wrapping_add(1);
        e.loc = LOC_FREE;
        e.prev = NIL;
        e.next = head;
        self.free_head = idx;
        self.len -= 1;
        item
    }

    #[inline]
    pub(crate) fn get(&self, idx: u32) -> &Entry<T> {
        &self.chunks[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut Entry<T> {
        &mut self.chunks[(idx >> CHUNK_SHIFT) as usize][(idx & CHUNK_MASK) as usize]
    }

    /// The entry at `idx` if `idx` was ever allocated.
    #[inline]
    pub(crate) fn try_get(&self, idx: u32) -> Option<&Entry<T>> {
        if idx >= self.high_water {
            return None;
        }
        Some(self.get(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_stay_within_64_bytes() {
        use std::mem::size_of;
        assert_eq!(size_of::<Entry<u64>>(), 48);
        assert_eq!(size_of::<Entry<u32>>(), 40);
        assert_eq!(size_of::<Entry<(u64, u64)>>(), 56);
        assert_eq!(size_of::<Entry<String>>(), 56);
        assert_eq!(size_of::<Entry<[u64; 3]>>(), 64);
    }

    #[test]
    fn alloc_release_reuses_and_bumps_generation() {
        let mut s: Slab<u64> = Slab::new();
        let a = s.alloc(10).expect("slot");
        s.get_mut(a).item = Some(7);
        let g = s.get(a).generation;
        assert_eq!(s.release(a), Some(7));
        assert_eq!(s.get(a).generation, g + 1);
        let b = s.alloc(10).expect("slot");
        assert_eq!(a, b, "free list reuses the last freed slot");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn alloc_respects_bound() {
        let mut s: Slab<u8> = Slab::new();
        assert!(s.alloc(2).is_some());
        assert!(s.alloc(2).is_some());
        assert!(s.alloc(2).is_none());
        assert!(s.try_get(5).is_none());
    }
}
