//! The mesh: an N×N grid of bounded SPSC rings between shards, plus a control lane per shard.
//!
//! A shard drains its control lane first, then its incoming rings, every loop pass. A shard with
//! nothing to do parks its mesh task; a producer that finds the consumer parked wakes it (the
//! runtime's cross-thread waker, an eventfd write underneath). Rings never drop: a full ring hands
//! the message back and the sender keeps it in its [`backlog::Backlog`], bounded per destination
//! (counted as a ring-full event).
//! This module knows nothing of sockets or roles.

pub mod backlog;
pub mod ring;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use sync::{fence, AtomicBool, Mutex};

/// The synchronisation types of the ring and of park/wake: std's, or loom's checked versions in a
/// `--cfg loom` build, so the model (`tests/loom_mesh.rs`) explores this code and not a copy of it.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::{
        cell::UnsafeCell,
        sync::{
            atomic::{fence, AtomicBool, AtomicUsize},
            Arc, Mutex,
        },
    };
    #[cfg(not(loom))]
    pub(super) use std::sync::{
        atomic::{fence, AtomicBool, AtomicUsize},
        Arc, Mutex,
    };

    /// std's `UnsafeCell` behind loom's closure API, so the ring has one code path for both.
    #[cfg(not(loom))]
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(super) fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a raw pointer to the contents; the caller upholds aliasing.
        #[inline(always)]
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// Admin commands. Delivered through the control lane, which is checked before data every pass,
/// so control works even when data rings are full. Defined with the admin side in
/// [`crate::control`].
#[cfg(not(loom))]
pub use crate::control::Control;

/// The loom model's control command (the real set needs the rest of the crate).
#[cfg(loom)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Stop the shard.
    Shutdown,
}

/// Why [`ShardSignal::push_control`] refused a command.
#[derive(Debug, thiserror::Error)]
#[error("control lane of shard full ({0} commands queued)")]
pub struct ControlFull(pub usize);

/// Per-shard wake-up state and control lane, shared by every thread that sends to the shard.
pub struct ShardSignal {
    parked: AtomicBool,
    waker: Mutex<Option<Waker>>,
    control: Mutex<VecDeque<Control>>,
    control_pending: AtomicBool,
    control_limit: usize,
    /// Open sessions on this shard (read by the acceptor for `least_conns`). Not part of the
    /// park/wake protocol, so std's type even under loom.
    pub open_sessions: std::sync::atomic::AtomicUsize,
}

impl ShardSignal {
    /// A signal whose control lane holds at most `control_limit` commands.
    pub fn new(control_limit: usize) -> Self {
        ShardSignal {
            parked: AtomicBool::new(false),
            waker: Mutex::new(None),
            control: Mutex::new(VecDeque::new()),
            control_pending: AtomicBool::new(false),
            control_limit,
            open_sessions: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Queues a control command and wakes the shard. Fails (nothing queued) when the lane is full.
    pub fn push_control(&self, cmd: Control) -> Result<(), ControlFull> {
        {
            let mut lane = self.control.lock().unwrap_or_else(|p| p.into_inner());
            if lane.len() >= self.control_limit {
                return Err(ControlFull(lane.len()));
            }
            lane.push_back(cmd);
        }
        self.control_pending.store(true, Ordering::SeqCst);
        self.wake();
        Ok(())
    }

    /// Takes every queued control command (cheap when none: one atomic load).
    pub fn take_control(&self) -> Vec<Control> {
        if !self.control_pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.control_pending.store(false, Ordering::SeqCst);
        let mut lane = self.control.lock().unwrap_or_else(|p| p.into_inner());
        lane.drain(..).collect()
    }

    /// True when control commands are waiting.
    pub fn control_pending(&self) -> bool {
        self.control_pending.load(Ordering::SeqCst)
    }

    /// Called by a producer after publishing a message: wakes the consumer only if it parked.
    /// Returns true when it did (the consumer was parked and this call woke it). Cost: one
    /// `SeqCst` fence and a load; a lock and the waker's wake-up only when the consumer parked.
    pub fn wake(&self) -> bool {
        // Store buffering: we store the message (the ring's Release store of `tail`) then load
        // `parked`; the consumer stores `parked` then loads `tail`. Without a SeqCst fence on both
        // sides each may read the other's old value (x86 lets this load pass the earlier store
        // still in the store buffer), and the consumer sleeps with a message queued. With the
        // fences, either the consumer's re-check sees our message or we see `parked == true`.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.wake_parked();
            return true;
        }
        false
    }

    /// Wakes the consumer's registered waker; the caller has just swapped `parked` from true to
    /// false, so exactly one caller does this per park.
    fn wake_parked(&self) {
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// [`ShardSignal::wake`] for a caller on the consumer's own thread (the shard waking its own
    /// loop: queued work, an earlier deadline). No fence: the store that announced the park was
    /// made by this thread, which sees its own stores in program order, so the store-buffering
    /// race `wake` guards against (a producer on another core) cannot happen here. A producer on
    /// another thread that wakes the consumer meanwhile swaps `parked` first; then this call
    /// finds it false and does nothing. Calling it from another thread is a bug (a lost wake-up).
    pub fn wake_own(&self) -> bool {
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            self.wake_parked();
            return true;
        }
        false
    }

    /// Consumer side, step 1 of parking: store the waker and mark the shard parked. The caller must
    /// then re-check every input and call [`ShardSignal::cancel_park`] if it found work.
    /// [`ShardSignal::park`] does all of that.
    pub fn prepare_park(&self, waker: &Waker) {
        {
            let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.parked.store(true, Ordering::SeqCst);
        // Pairs with the fence in `wake`: orders this store before the caller's re-check.
        fence(Ordering::SeqCst);
    }

    /// Consumer side: found work after `prepare_park`, stay awake.
    pub fn cancel_park(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// True while the consumer is parked (no wake-up has arrived since `prepare_park`).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// The consumer's park as a future: the first poll announces the park, re-checks
    /// `has_input` and completes at once if it finds work; otherwise the next poll (a producer's
    /// wake, or anything else that woke the task) completes it. `has_input` must see every input
    /// whose producer calls [`ShardSignal::wake`] after publishing.
    pub fn park<F: Fn() -> bool>(&self, has_input: F) -> Park<'_, F> {
        Park {
            signal: self,
            has_input,
            armed: false,
        }
    }
}

/// Future returned by [`ShardSignal::park`]. Dropping it un-parks (the consumer is running again,
/// so producers need not wake it).
pub struct Park<'a, F: Fn() -> bool> {
    signal: &'a ShardSignal,
    has_input: F,
    armed: bool,
}

// Nothing is pinned structurally: `has_input` is only ever called through `&`.
impl<F: Fn() -> bool> Unpin for Park<'_, F> {}

impl<F: Fn() -> bool> Future for Park<'_, F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let sig = this.signal;
        if this.armed {
            this.armed = false;
            sig.cancel_park();
            return Poll::Ready(());
        }
        debug_assert!(!sig.is_parked(), "a shard parks only once at a time");
        sig.prepare_park(cx.waker());
        this.armed = true;
        // Re-check after announcing the park: a producer that published before seeing `parked`
        // is caught here; one that publishes after sees `parked` and wakes us.
        if (this.has_input)() {
            this.armed = false;
            sig.cancel_park();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<F: Fn() -> bool> Drop for Park<'_, F> {
    fn drop(&mut self) {
        if self.armed {
            self.signal.cancel_park();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_only_a_parked_consumer_once() {
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let sig = ShardSignal::new(4);
        sig.wake();
        assert_eq!(flag.0.load(Ordering::SeqCst), 0, "not parked: no wake");
        sig.prepare_park(&waker);
        sig.wake();
        sig.wake();
        assert_eq!(flag.0.load(Ordering::SeqCst), 1);
        assert!(!sig.is_parked());
    }

    #[test]
    fn wake_own_wakes_a_parked_loop_once_and_reports_it() {
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let sig = ShardSignal::new(4);
        assert!(!sig.wake_own(), "not parked: nothing to wake");
        sig.prepare_park(&waker);
        assert!(sig.wake_own());
        assert!(!sig.wake_own(), "already woken");
        assert!(!sig.wake(), "a producer after it finds the loop awake");
        assert_eq!(flag.0.load(Ordering::SeqCst), 1);
        // A producer that wakes first: the loop's own call then does nothing.
        sig.prepare_park(&waker);
        assert!(sig.wake());
        assert!(!sig.wake_own());
        assert_eq!(flag.0.load(Ordering::SeqCst), 2);
        assert!(!sig.is_parked());
    }

    #[test]
    fn park_rechecks_inputs_and_completes_when_woken() {
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let sig = ShardSignal::new(4);
        let input = std::cell::Cell::new(true);
        let wakes = || flag.0.load(Ordering::SeqCst);

        // Input arrived before the park was announced: the re-check catches it, no sleep.
        let mut park = sig.park(|| input.get());
        assert!(Pin::new(&mut park).poll(&mut cx).is_ready());
        assert!(!sig.is_parked());
        drop(park);

        // Nothing to do: parks, and a producer's wake completes the park.
        input.set(false);
        let mut park = sig.park(|| input.get());
        assert!(Pin::new(&mut park).poll(&mut cx).is_pending());
        assert!(sig.is_parked());
        sig.wake();
        assert_eq!(wakes(), 1);
        assert!(Pin::new(&mut park).poll(&mut cx).is_ready());
        drop(park);

        // Dropped while parked (the timer won): un-parks, so a later publish wakes nobody.
        let mut park = sig.park(|| input.get());
        assert!(Pin::new(&mut park).poll(&mut cx).is_pending());
        drop(park);
        assert!(!sig.is_parked());
        sig.wake();
        assert_eq!(wakes(), 1, "a running consumer is not woken");
    }

    #[test]
    fn control_lane_is_bounded_and_ordered() {
        let sig = ShardSignal::new(2);
        assert!(sig.take_control().is_empty());
        sig.push_control(Control::Shutdown).unwrap();
        sig.push_control(Control::Shutdown).unwrap();
        assert!(sig.push_control(Control::Shutdown).is_err());
        assert!(sig.control_pending());
        assert_eq!(sig.take_control().len(), 2);
        assert!(!sig.control_pending());
    }
}
