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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;

/// Admin commands. Delivered through the control lane, which is checked before data every pass,
/// so control works even when data rings are full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Stop reading client input, flush replies (bounded wait), close sessions, stop the shard.
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
    /// Open sessions on this shard (read by the acceptor for `least_conns`).
    pub open_sessions: AtomicUsize,
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
            open_sessions: AtomicUsize::new(0),
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
    pub fn wake(&self) {
        // SeqCst pairs with `prepare_park`: either the consumer sees our message on its re-check,
        // or we see `parked == true` here and wake it.
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Consumer side, step 1 of parking: store the waker and mark the shard parked. The caller must
    /// then re-check every input and call [`ShardSignal::cancel_park`] if it found work.
    pub fn prepare_park(&self, waker: &Waker) {
        {
            let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.parked.store(true, Ordering::SeqCst);
    }

    /// Consumer side: found work after `prepare_park`, stay awake.
    pub fn cancel_park(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// True while the consumer is parked (no wake-up has arrived since `prepare_park`).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
