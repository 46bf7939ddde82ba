//! A typed object pool with the allocator's ownership rules.
//!
//! An [`ObjectPool<T>`] belongs to one thread (it is neither `Send` nor `Sync`). Values it hands
//! out ([`Pooled`]) borrow the pool, so they are dropped on the owning thread and their slot goes
//! back on the pool's free list (bounded by `capacity`; beyond it the slot goes back to the heap,
//! counted). To hand a value to another thread, turn it into a [`RemoteBox`]: dropping that on
//! any thread frees the slot through the allocator, which batches it back to the owning heap
//! like any remote free. Slots come from [`crate::LatticeAlloc`] whatever the global allocator is.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use crate::LatticeAlloc;

const ALLOC: LatticeAlloc = LatticeAlloc::new();

/// Why a pool could not hand out a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// The allocator could not get memory from the OS.
    OutOfMemory,
    /// `T`'s layout is not served by the pool (alignment above 4096).
    UnsupportedLayout,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory => write!(f, "out of memory"),
            Self::UnsupportedLayout => write!(f, "type alignment above 4096 is not pooled"),
        }
    }
}

impl std::error::Error for PoolError {}

/// Pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Values handed out and not yet returned (locally) — remote ones leave this count when
    /// converted into a [`RemoteBox`].
    pub live: usize,
    /// Free slots kept on the pool's list.
    pub cached: usize,
    /// Allocations served from the free list.
    pub hits: u64,
    /// Allocations that went to the heap.
    pub misses: u64,
    /// Returns that found the free list at capacity (slot freed to the heap instead).
    pub capacity_hits: u64,
}

struct FreeSlot {
    next: *mut FreeSlot,
}

/// A thread-owned pool of `T` slots. See the module docs for the ownership rules.
pub struct ObjectPool<T> {
    free: Cell<*mut FreeSlot>,
    capacity: usize,
    stats: Cell<PoolStats>,
    _own: PhantomData<*mut T>, // !Send + !Sync
}

impl<T> ObjectPool<T> {
    fn layout() -> Layout {
        let l = Layout::new::<T>();
        // room for the free-list link; cannot fail for align ≤ 4096
        Layout::from_size_align(l.size().max(16), l.align().max(8)).unwrap_or(l)
    }

    /// A pool keeping at most `capacity` free slots. Nothing is allocated until first use.
    pub fn new(capacity: usize) -> Self {
        Self {
            free: Cell::new(ptr::null_mut()),
            capacity,
            stats: Cell::new(PoolStats::default()),
            _own: PhantomData,
        }
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        self.stats.get()
    }

    /// Moves `value` into a slot. Cost: a free-list pop, or one small allocation.
    /// Fails when the OS refuses memory or `T` is aligned above 4096 bytes.
    pub fn try_alloc(&self, value: T) -> Result<Pooled<'_, T>, PoolError> {
        if Layout::new::<T>().align() > crate::MAX_SLAB_ALIGN {
            return Err(PoolError::UnsupportedLayout);
        }
        let mut st = self.stats.get();
        let head = self.free.get();
        let slot = if !head.is_null() {
            // SAFETY: list slots are ours and hold a FreeSlot.
            self.free.set(unsafe { (*head).next });
            st.cached -= 1;
            st.hits += 1;
            head as *mut T
        } else {
            // SAFETY: non-zero size layout.
            let p = unsafe { ALLOC.alloc(Self::layout()) } as *mut T;
            if p.is_null() {
                return Err(PoolError::OutOfMemory);
            }
            st.misses += 1;
            p
        };
        st.live += 1;
        self.stats.set(st);
        // SAFETY: slot is valid, aligned, unused memory for a T.
        unsafe { slot.write(value) };
        // SAFETY: non-null by construction.
        Ok(Pooled {
            ptr: unsafe { NonNull::new_unchecked(slot) },
            pool: self,
        })
    }

    fn give_back(&self, slot: *mut T) {
        let mut st = self.stats.get();
        st.live -= 1;
        if st.cached < self.capacity {
            let s = slot as *mut FreeSlot;
            // SAFETY: the slot's T was dropped; it is ours and big enough for a FreeSlot.
            unsafe { (*s).next = self.free.get() };
            self.free.set(s);
            st.cached += 1;
        } else {
            st.capacity_hits += 1;
            // SAFETY: slot came from ALLOC with this layout.
            unsafe { ALLOC.dealloc(slot as *mut u8, Self::layout()) };
        }
        self.stats.set(st);
    }
}

impl<T> Drop for ObjectPool<T> {
    fn drop(&mut self) {
        let mut p = self.free.get();
        while !p.is_null() {
            // SAFETY: list slots are ours; read next before freeing.
            unsafe {
                let next = (*p).next;
                ALLOC.dealloc(p as *mut u8, Self::layout());
                p = next;
            }
        }
    }
}

/// A value in a pool slot, owned by the pool's thread.
pub struct Pooled<'p, T> {
    ptr: NonNull<T>,
    pool: &'p ObjectPool<T>,
}

impl<T> Pooled<'_, T> {
    /// Detaches the value so it can cross threads; its slot is freed through the allocator
    /// wherever the box is dropped.
    pub fn into_remote(self) -> RemoteBox<T> {
        let me = ManuallyDrop::new(self);
        let mut st = me.pool.stats.get();
        st.live -= 1;
        me.pool.stats.set(st);
        RemoteBox {
            ptr: me.ptr,
            _own: PhantomData,
        }
    }
}

impl<T> Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot holds a live T for our lifetime.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Pooled<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: unique owner of a live T.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        // SAFETY: live T, dropped once; then the slot goes back.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
        self.pool.give_back(self.ptr.as_ptr());
    }
}

/// A pooled value detached from its pool; may move to and be dropped on any thread.
pub struct RemoteBox<T> {
    ptr: NonNull<T>,
    _own: PhantomData<T>,
}

// SAFETY: RemoteBox owns its T uniquely, like Box<T>.
unsafe impl<T: Send> Send for RemoteBox<T> {}
// SAFETY: shared access only gives &T.
unsafe impl<T: Sync> Sync for RemoteBox<T> {}

impl<T> RemoteBox<T> {
    /// Moves the value out and frees the slot.
    pub fn into_inner(self) -> T {
        let me = ManuallyDrop::new(self);
        // SAFETY: live T read once; the slot is then freed without dropping T again.
        unsafe {
            let v = me.ptr.as_ptr().read();
            ALLOC.dealloc(me.ptr.as_ptr() as *mut u8, ObjectPool::<T>::layout());
            v
        }
    }
}

impl<T> Deref for RemoteBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: live T.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for RemoteBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: unique owner.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for RemoteBox<T> {
    fn drop(&mut self) {
        // SAFETY: live T dropped once; slot from ALLOC with this layout.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            ALLOC.dealloc(self.ptr.as_ptr() as *mut u8, ObjectPool::<T>::layout());
        }
    }
}
