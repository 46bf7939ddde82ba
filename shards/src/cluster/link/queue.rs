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

    /// Queues `item`, or gives it back when the queue is full. Never waits.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let mut g = self.lock();
        if g.len() >= self.cap {
            return Err(item);
        }
        g.push_back(item);
        drop(g);
        self.ready.notify_one();
        Ok(())
    }

    /// The next item, waiting at most `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let mut g = self.lock();
        if g.is_empty() {
            g = self
                .ready
                .wait_timeout(g, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        g.pop_front()
    }

    /// The next item, if any.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().pop_front()
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
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert_eq!(q.try_push(3), Err(3));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Some(1));
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), None);
        assert!(q.is_empty());
        let q = std::sync::Arc::new(Queue::new(1));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.try_push(7).unwrap();
        assert_eq!(t.join().unwrap(), Some(7));
    }
}
