//! Atomics shim (loom under `cfg(loom)`) and the two tiny synchronisation primitives the
//! allocator uses off its hot path: a try-only duty flag and a spin lock for the fallback heap.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};

use core::sync::atomic::Ordering;

/// A flag that at most one thread holds; acquiring never waits (try-only), so a thread that
/// finds it taken simply skips the duty. Release/acquire on the flag orders everything the
/// previous holder did before everything the next holder does.
pub struct DutyFlag(AtomicBool);

impl DutyFlag {
    /// A free flag.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self(AtomicBool::new(false))
    }
    /// A free flag.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }
    /// Takes the flag if free. Cost: one relaxed load, and one compare-exchange when free.
    /// (A failed compare-exchange writes nothing; with `swap`, loom 0.7 reports a lost release
    /// in the model, see `tests/loom_remote_free.rs`.)
    #[inline]
    pub fn try_acquire(&self) -> bool {
        !self.0.load(Ordering::Relaxed)
            && self
                .0
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }
    /// Gives the flag back; only the holder may call this.
    #[inline]
    pub fn release(&self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Default for DutyFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// Spin lock guarding the shared fallback heap (threads without a heap of their own). Spins,
/// then yields to the scheduler; never allocates.
#[cfg(not(loom))]
pub(crate) struct SpinLock(core::sync::atomic::AtomicBool);

#[cfg(not(loom))]
impl SpinLock {
    pub(crate) const fn new() -> Self {
        Self(core::sync::atomic::AtomicBool::new(false))
    }
    pub(crate) fn lock(&self) {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
    pub(crate) fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
    pub(crate) fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}
