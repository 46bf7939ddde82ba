//! Which heap the calling thread uses.
//!
//! A thread gets its own heap on first use (adopting an abandoned one if any). When the thread
//! exits, a TLS destructor flushes its pending remote frees, drains what came back, and marks the
//! heap abandoned: the central pool services it until another thread adopts it. Threads with no
//! heap (all [`crate::heap::MAX_HEAPS`] slots taken, or code running after the thread's TLS
//! destructors) share the fallback heap under a spin lock.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::{acquire_heap, fallback_heap, Heap, RETAIN_EMPTY_SEGMENTS, STATE_ABANDONED};
use crate::sync::SpinLock;

pub(crate) static FALLBACK_LOCK: SpinLock = SpinLock::new();

thread_local! {
    static CUR: Cell<*const Heap> = const { Cell::new(ptr::null()) };
    static DEAD: Cell<bool> = const { Cell::new(false) };
    static GUARD: ExitGuard = const { ExitGuard };
}

struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let h = CUR.with(|c| c.replace(ptr::null()));
        DEAD.with(|d| d.set(true));
        if h.is_null() {
            return;
        }
        // SAFETY: this thread owns `h` until the release store below.
        unsafe {
            (*h).flush();
            // bounded: the central pool may keep refilling the ring while we drain
            for _ in 0..64 {
                if (*h).shared.back.is_empty() {
                    break;
                }
                (*h).drain_back(crate::heap::DRAIN_BUDGET);
            }
            (*h).trim(RETAIN_EMPTY_SEGMENTS);
            (*h).shared.state.store(STATE_ABANDONED, Ordering::Release);
        }
        crate::central::central_pool_pass(crate::heap::OPPORTUNISTIC_PASS_BUDGET);
    }
}

/// Runs `f` with the calling thread's heap (owned exclusively for the duration of `f`).
/// `f` must not re-enter the allocator.
#[inline]
pub(crate) fn with_heap<R>(f: impl FnOnce(&Heap) -> R) -> R {
    let h = CUR.with(|c| c.get());
    if !h.is_null() {
        // SAFETY: CUR only holds a heap this thread owns; published heaps are never unmapped.
        return f(unsafe { &*h });
    }
    with_heap_slow(f)
}

#[cold]
fn with_heap_slow<R>(f: impl FnOnce(&Heap) -> R) -> R {
    if !DEAD.with(|d| d.get()) {
        let h = acquire_heap();
        if !h.is_null() {
            CUR.with(|c| c.set(h));
            // registering the exit guard may allocate (it then finds CUR set)
            if GUARD.try_with(|_| ()).is_ok() {
                // SAFETY: we own h.
                return f(unsafe { &*h });
            }
            // TLS is being torn down: give the heap back at once.
            CUR.with(|c| c.set(ptr::null()));
            DEAD.with(|d| d.set(true));
            // SAFETY: h is ours and unused.
            unsafe { (*h).shared.state.store(STATE_ABANDONED, Ordering::Release) };
        }
    }
    crate::heap::FALLBACK_USES.fetch_add(1, Ordering::Relaxed);
    let fb = fallback_heap();
    if fb.is_null() {
        // the OS refused the first 12 KiB: nothing can be allocated at all
        std::process::abort();
    }
    FALLBACK_LOCK.lock();
    // SAFETY: the lock makes this thread the fallback heap's owner. fb is null only if the OS
    // refused the first 12 KiB, in which case nothing can be allocated anyway.
    let r = f(unsafe { &*fb });
    FALLBACK_LOCK.unlock();
    r
}

/// Id of the calling thread's own heap, if it has one yet.
#[inline]
pub(crate) fn current_heap() -> *const Heap {
    CUR.with(|c| c.get())
}

/// Makes sure the calling thread has its own heap (not the fallback); returns it or null.
pub(crate) fn ensure_own_heap() -> *const Heap {
    let h = current_heap();
    if !h.is_null() {
        return h;
    }
    with_heap(|_| ());
    current_heap()
}
