//! Bounded single-producer/single-consumer ring of batch pointers (the remote-free lanes).
//!
//! Each heap owns two rings: `out` (heap → central pool, the heap produces) and `back`
//! (central pool → heap, the heap consumes). "Single" means one *logical* side at a time: the
//! central side is whoever holds the central duty flag, and a heap's side moves between threads
//! only through an acquire/release hand-off of the heap's state word. Values are never 0.

use crate::sync::AtomicUsize;
use core::sync::atomic::Ordering;

/// Slots per ring (a power of two). A full ring is a counted event, never a wait.
#[cfg(not(loom))]
pub const RING_CAP: usize = 256;
/// Slots per ring under loom: tiny, so the model reaches the full-ring paths.
#[cfg(loom)]
pub const RING_CAP: usize = 2;

#[repr(align(64))]
struct Padded(AtomicUsize);

/// The ring. `push` only from the producer side, `pop` only from the consumer side.
pub struct Ring {
    head: Padded, // next slot to read (consumer)
    tail: Padded, // next slot to write (producer)
    slots: [AtomicUsize; RING_CAP],
}

impl Ring {
    /// An empty ring.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: AtomicUsize = AtomicUsize::new(0);
        Self {
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            slots: [Z; RING_CAP],
        }
    }
    /// An empty ring.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            slots: core::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    /// Appends `v` (non-zero); returns false when the ring is full. Producer side only.
    /// Cost: two loads and two stores, no read-modify-write.
    #[inline]
    pub fn push(&self, v: usize) -> bool {
        debug_assert!(v != 0);
        let t = self.tail.0.load(Ordering::Relaxed);
        let h = self.head.0.load(Ordering::Acquire);
        if t.wrapping_sub(h) >= RING_CAP {
            return false;
        }
        self.slots[t & (RING_CAP - 1)].store(v, Ordering::Relaxed);
        self.tail.0.store(t.wrapping_add(1), Ordering::Release);
        true
    }

    /// Removes the oldest value, if any. Consumer side only.
    #[inline]
    pub fn pop(&self) -> Option<usize> {
        let h = self.head.0.load(Ordering::Relaxed);
        let t = self.tail.0.load(Ordering::Acquire);
        if h == t {
            return None;
        }
        let v = self.slots[h & (RING_CAP - 1)].load(Ordering::Relaxed);
        self.head.0.store(h.wrapping_add(1), Ordering::Release);
        debug_assert!(v != 0);
        Some(v)
    }

    /// Values currently queued (a racy estimate when read from a third thread).
    pub fn len(&self) -> usize {
        let t = self.tail.0.load(Ordering::Acquire);
        let h = self.head.0.load(Ordering::Acquire);
        t.wrapping_sub(h)
    }

    /// True when nothing is queued (racy from a third thread).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(not(loom))]
impl Default for Ring {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_capacity_bound() {
        let r = Ring::new();
        for i in 1..=RING_CAP {
            assert!(r.push(i));
        }
        assert!(!r.push(999), "push beyond capacity must fail");
        assert_eq!(r.len(), RING_CAP);
        for i in 1..=RING_CAP {
            assert_eq!(r.pop(), Some(i));
        }
        assert_eq!(r.pop(), None);
        // wrap-around
        for round in 0..3 * RING_CAP {
            assert!(r.push(round + 1));
            assert_eq!(r.pop(), Some(round + 1));
        }
    }

    #[test]
    fn threads_transfer_every_value_once() {
        let r = std::sync::Arc::new(Ring::new());
        let p = r.clone();
        const N: usize = 100_000;
        let t = std::thread::spawn(move || {
            let mut i = 1;
            while i <= N {
                if p.push(i) {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 1;
        while next <= N {
            if let Some(v) = r.pop() {
                assert_eq!(v, next);
                next += 1;
            } else {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
        assert!(r.is_empty());
    }
}
