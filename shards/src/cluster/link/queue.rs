//! A link's outgoing queue: bounded, filled by the shards without waiting (full = refused),
//! emptied by the link's writer thread. Memory grows with what waits, not with the bound (a
//! `std::sync::mpsc::sync_channel` allocates all its slots up front).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A bounded multi-producer, single-consumer queue.
pub struct Queue<T> {
    q: Mutex<VecDeque<T>>,
    cap: usize,
    ready: Condvar,
}

impl<T> Queue<T> {
    /// A queue of at most `cap` items (at least one).
    pub fn new(cap: usize) -> Queue<T> {
        Queue {
            q: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` when the queue has room and `room(items waiting)` agrees (a second bound
    /// the caller keeps), or gives it back with `true` when the queue was full, `false` when
    /// `room` refused. Never waits.
    pub fn try_push_within(
        &self,
        item: T,
        room: impl FnOnce(usize) -> bool,
    ) -> Result<(), (T, bool)> {
        let mut g = self.lock();
        if g.len() >= self.cap {
            return Err((item, true));
        }
        if !room(g.len()) {
            return Err((item, false));
        }
        g.push_back(item);
        drop(g);
        self.ready.notify_one();
        Ok(())
    }

    /// The next item, waiting at most `timeout` for one; `taken` sees it before the queue's lock
    /// is let go (so a count kept beside the queue never misses it in between).
    pub fn pop_timeout(&self, timeout: Duration, taken: impl FnOnce(&T)) -> Option<T> {
        let mut g = self.lock();
        if g.is_empty() {
            g = self
                .ready
                .wait_timeout(g, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let item = g.pop_front();
        item.as_ref().map(taken);
        item
    }

    /// The next item, if any; `taken` as for [`Queue::pop_timeout`].
    pub fn try_pop(&self, taken: impl FnOnce(&T)) -> Option<T> {
        let mut g = self.lock();
        let item = g.pop_front();
        item.as_ref().map(taken);
        item
    }

    /// Keeps only the waiting items `keep` accepts; returns how many it dropped.
    pub fn retain(&self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let mut g = self.lock();
        let before = g.len();
        g.retain(|t| keep(t));
        before - g.len()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo_that_refuses_when_full() {
        let q = Queue::new(2);
        let any = |_: usize| true;
        assert!(q.try_push_within(1, any).is_ok());
        assert!(q.try_push_within(2, any).is_ok());
        assert_eq!(q.try_push_within(3, any), Err((3, true)), "full");
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_pop(|_| {}), Some(1));
        // The caller's own bound is asked with the number waiting, after the queue's.
        assert_eq!(q.try_push_within(4, |n| n < 1), Err((4, false)));
        assert!(q.try_push_within(5, |n| n < 2).is_ok());
        assert_eq!(q.try_pop(|_| {}), Some(2));
        assert_eq!(q.try_pop(|_| {}), Some(5));
        q.try_push_within(1, any).unwrap();
        q.try_push_within(2, any).unwrap();
        assert_eq!(q.pop_timeout(Duration::from_millis(1), |_| {}), Some(1));
        assert_eq!(q.try_pop(|_| {}), Some(2));
        assert_eq!(q.pop_timeout(Duration::from_millis(1), |_| {}), None);
        assert!(q.is_empty());
        let q = std::sync::Arc::new(Queue::new(1));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(10), |_| {}));
        std::thread::sleep(Duration::from_millis(20));
        q.try_push_within(7, |_| true).unwrap();
        assert_eq!(t.join().unwrap(), Some(7));
        for i in 0..5 {
            q.try_push_within(i, |_| true).ok();
        }
        assert_eq!(q.len(), 1, "cap 1");
        assert_eq!(q.retain(|&i| i != 0), 1);
        assert!(q.is_empty());
    }
}
