//! Bounded single-producer/single-consumer ring.
//!
//! One [`Producer`] and one [`Consumer`] share a power-of-two array of slots. The producer owns
//! `tail`, the consumer owns `head`; each side caches the other's index and re-reads it only when the
//! ring looks full (producer) or empty (consumer), so the steady state touches one shared cache line
//! per batch. A full ring hands the value back to the caller: this ring never drops and never blocks.
//!
//! Invariants (checked by `debug_assert!`s): the capacity is a power of two, and
//! 0 ≤ tail − head ≤ capacity in wrapping arithmetic, as seen by either side. `tests/loom_mesh.rs`
//! model-checks the ring under `--cfg loom`.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

use super::sync::{Arc, AtomicUsize, UnsafeCell};

/// Keeps the two indices on separate cache lines so producer and consumer do not false-share.
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Inner<T> {
    /// Next slot the consumer reads. Written only by the consumer.
    head: Padded,
    /// Next slot the producer writes. Written only by the producer.
    tail: Padded,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: the ring moves `T` values from the producer thread to the consumer thread, so `T: Send` is
// required and sufficient. Slot access is partitioned by the head/tail protocol: the producer writes
// only slots in [tail, head + cap) and the consumer reads only slots in [head, tail); the Release
// store of an index publishes the slot contents to the Acquire load on the other side.
unsafe impl<T: Send> Send for Inner<T> {}
// SAFETY: see above; shared access goes through `Producer` (one owner) and `Consumer` (one owner).
unsafe impl<T: Send> Sync for Inner<T> {}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        // `&mut self`: both halves are gone, and dropping the last `Arc` synchronised with the
        // other half's drop, so Relaxed loads see the final indices.
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        debug_assert!(tail.wrapping_sub(head) <= self.mask + 1);
        // Wrapping walk: `head..tail` as a plain range would skip everything once `tail` wraps.
        let mut i = head;
        while i != tail {
            // SAFETY: neither side is alive; slots in [head, tail) hold values written by the
            // producer and not yet read by the consumer, each dropped exactly once here.
            self.slots[i & self.mask].with_mut(|p| unsafe { (*p).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

/// The sending half. Not `Clone`: exactly one producer exists per ring.
pub struct Producer<T> {
    inner: Arc<Inner<T>>,
    /// Local copy of `tail` (we are its only writer).
    tail: Cell<usize>,
    /// Last `head` we saw; refreshed only when the ring looks full.
    head_cache: Cell<usize>,
}

/// The receiving half. Not `Clone`: exactly one consumer exists per ring.
pub struct Consumer<T> {
    inner: Arc<Inner<T>>,
    head: Cell<usize>,
    tail_cache: Cell<usize>,
}

// SAFETY: each half is owned by one thread at a time; moving it moves that role.
unsafe impl<T: Send> Send for Producer<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Consumer<T> {}

/// Creates a ring holding up to `capacity` values (rounded up to a power of two, at least 2).
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    ring_from(capacity, 0)
}

/// A ring whose indices start at `start` (tests start near `usize::MAX` to cross the wrap).
fn ring_from<T>(capacity: usize, start: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    // Indices are masked, and wrap at usize::MAX: both need a power of two.
    debug_assert!(cap.is_power_of_two());
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let inner = Arc::new(Inner {
        head: Padded(AtomicUsize::new(start)),
        tail: Padded(AtomicUsize::new(start)),
        mask: cap - 1,
        slots,
    });
    (
        Producer {
            inner: inner.clone(),
            tail: Cell::new(start),
            head_cache: Cell::new(start),
        },
        Consumer {
            inner,
            head: Cell::new(start),
            tail_cache: Cell::new(start),
        },
    )
}

impl<T> Producer<T> {
    /// Capacity in values.
    pub fn capacity(&self) -> usize {
        self.inner.mask + 1
    }

    /// Appends `value`, or gives it back when the ring is full. Never blocks, never drops.
    pub fn push(&self, value: T) -> Result<(), T> {
        let tail = self.tail.get();
        let cap = self.inner.mask + 1;
        if tail.wrapping_sub(self.head_cache.get()) >= cap {
            let head = self.inner.head.0.load(Ordering::Acquire);
            // The consumer never passes `tail`, and we never run `cap` past `head`.
            debug_assert!(tail.wrapping_sub(head) <= cap, "head {head} vs tail {tail}");
            self.head_cache.set(head);
            if tail.wrapping_sub(head) >= cap {
                return Err(value);
            }
        }
        debug_assert!(tail.wrapping_sub(self.head_cache.get()) < cap);
        // SAFETY: slot `tail` is outside [head, tail), so the consumer does not touch it, and it is
        // uninitialised (it was never written, or the consumer moved its value out before advancing
        // `head` past it, which the Acquire load above observed).
        self.inner.slots[tail & self.inner.mask].with_mut(|p| unsafe { (*p).write(value) });
        let next = tail.wrapping_add(1);
        self.tail.set(next);
        self.inner.tail.0.store(next, Ordering::Release);
        Ok(())
    }

    /// Values currently queued (a snapshot; the consumer may be draining).
    pub fn len(&self) -> usize {
        let len = self
            .tail
            .get()
            .wrapping_sub(self.inner.head.0.load(Ordering::Acquire));
        debug_assert!(len <= self.capacity());
        len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest value, or `None` when the ring is empty.
    pub fn pop(&self) -> Option<T> {
        let head = self.head.get();
        if head == self.tail_cache.get() {
            self.tail_cache
                .set(self.inner.tail.0.load(Ordering::Acquire));
            if head == self.tail_cache.get() {
                return None;
            }
        }
        // Non-empty and never more than full: 1 ≤ tail − head ≤ capacity.
        debug_assert!((1..=self.inner.mask + 1).contains(&self.tail_cache.get().wrapping_sub(head)));
        // SAFETY: head is in [head, tail): the producer initialised this slot and published it with
        // the Release store of `tail` that our Acquire load observed; we read it exactly once and
        // then advance `head`, giving the slot back to the producer.
        let value = self.inner.slots[head & self.inner.mask]
            .with_mut(|p| unsafe { (*p).assume_init_read() });
        let next = head.wrapping_add(1);
        self.head.set(next);
        self.inner.head.0.store(next, Ordering::Release);
        Some(value)
    }

    /// True when the ring holds nothing (re-reads the producer's index).
    pub fn is_empty(&self) -> bool {
        self.head.get() == self.inner.tail.0.load(Ordering::Acquire)
    }

    /// Values currently queued (a snapshot).
    pub fn len(&self) -> usize {
        let len = self
            .inner
            .tail
            .0
            .load(Ordering::Acquire)
            .wrapping_sub(self.head.get());
        debug_assert!(len <= self.inner.mask + 1);
        len
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn full_and_empty() {
        let (p, c) = ring::<u32>(4);
        assert_eq!(p.capacity(), 4);
        assert!(c.pop().is_none());
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(99), "a full ring hands the value back");
        assert_eq!(p.len(), 4);
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        assert_eq!(
            (1..=4).map(|_| c.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(c.pop().is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn wraps_around_many_times() {
        let (p, c) = ring::<usize>(8);
        let mut next_out = 0;
        for i in 0..10_000 {
            p.push(i).unwrap();
            if i % 3 != 0 {
                assert_eq!(c.pop(), Some(next_out));
                next_out += 1;
            }
            while p.len() >= 7 {
                assert_eq!(c.pop(), Some(next_out));
                next_out += 1;
            }
        }
        while let Some(v) = c.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 10_000);
    }

    #[test]
    fn capacity_rounds_up() {
        assert_eq!(ring::<u8>(0).0.capacity(), 2);
        assert_eq!(ring::<u8>(5).0.capacity(), 8);
    }

    #[test]
    fn drop_releases_queued_values() {
        let marker = Arc::new(());
        let (p, c) = ring(4);
        p.push(marker.clone()).unwrap();
        p.push(marker.clone()).unwrap();
        assert_eq!(Arc::strong_count(&marker), 3);
        drop(p);
        drop(c);
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn indices_wrap_past_usize_max() {
        // Start one slot short of the wrap: pushes, pops and `len` then run with `tail < head`
        // numerically, and the final drop must walk [head, tail) across the wrap.
        let marker = Arc::new(());
        let (p, c) = ring_from(4, usize::MAX - 1);
        for i in 0..4 {
            p.push((i, marker.clone())).unwrap();
        }
        assert!(
            p.push((99, marker.clone())).is_err(),
            "full across the wrap"
        );
        assert_eq!(c.pop().map(|v| v.0), Some(0));
        p.push((4, marker.clone())).unwrap();
        assert_eq!((p.len(), c.len()), (4, 4));
        assert_eq!(Arc::strong_count(&marker), 5);
        drop((p, c));
        assert_eq!(
            Arc::strong_count(&marker),
            1,
            "queued values leaked at the wrap"
        );
    }

    #[test]
    fn two_thread_stress_keeps_order_and_exactly_once() {
        const N: u64 = 2_000_000;
        let (p, c) = ring::<u64>(64);
        let producer = std::thread::spawn(move || {
            let mut full_events = 0u64;
            for i in 0..N {
                let mut v = i;
                loop {
                    match p.push(v) {
                        Ok(()) => break,
                        Err(back) => {
                            full_events += 1;
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            full_events
        });
        let mut expected = 0u64;
        let mut sum = 0u64;
        while expected < N {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, expected, "out of order or duplicated");
                    sum = sum.wrapping_add(v);
                    expected += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none(), "no extra values");
        assert_eq!(sum, N * (N - 1) / 2);
    }
}
