//! One-shot completions handed back to callers: block on them (`wait`) or `.await` them from any
//! executor (the waker may be called from a storage thread).
//!
//! Owns the ticket types, the values they complete with ([`MarkAck`], [`FlushReport`]) and the
//! completing side (`AckGuard`). Knows nothing of the queues or threads that complete them.

use super::{StorageError, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Acknowledgement of a journaled mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkAck {
    /// The mark's journal sequence number.
    pub seq: u64,
}

/// Result of a flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Rows written to the database by this flush.
    pub written: u64,
    /// Rows that went to the dump file instead.
    pub dumped: u64,
    /// Every mark at or below this seq is persisted.
    pub confirmed_seq: u64,
}

struct Inner<T> {
    result: Option<Result<T, StorageError>>,
    waker: Option<Waker>,
    taken: bool,
}

/// Shared cell between the completing storage thread and the waiting caller. One `Arc` allocation;
/// the mutex is touched once by each side (uncontended in practice).
pub(crate) struct Slot<T> {
    inner: Mutex<Inner<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            inner: Mutex::new(Inner {
                result: None,
                waker: None,
                taken: false,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is still a plain
        // Option, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the result (the first one wins) and wakes the waiter.
    pub(crate) fn complete(&self, r: Result<T, StorageError>) {
        let waker = {
            let mut g = self.lock();
            if g.result.is_some() || g.taken {
                return;
            }
            g.result = Some(r);
            g.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<T, StorageError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        loop {
            if let Some(r) = g.result.take() {
                g.taken = true;
                return r;
            }
            if g.taken {
                return Err(StorageError::Closed);
            }
            g = match deadline {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(StorageError::Timeout(timeout.unwrap_or_default()));
                    }
                    self.cv
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<T, StorageError>> {
        let mut g = self.lock();
        if let Some(r) = g.result.take() {
            g.taken = true;
            return Poll::Ready(r);
        }
        if g.taken {
            return Poll::Ready(Err(StorageError::Closed));
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_done(&self) -> bool {
        self.lock().result.is_some()
    }
}

/// The completing side of a ticket, carried with the request through the storage threads. Completes
/// its slot with `Closed` if dropped before a result was set (e.g. left in a queue at shutdown), so no
/// caller waits forever.
pub(crate) struct AckGuard<T>(Option<Arc<Slot<T>>>);

impl<T> AckGuard<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>) -> AckGuard<T> {
        AckGuard(Some(slot))
    }

    pub(crate) fn done(&self, r: Result<T, StorageError>) {
        if let Some(s) = &self.0 {
            s.complete(r);
        }
    }

    /// Drops the guard without completing: for a request that was refused before it was queued,
    /// whose caller gets the error instead of the ticket.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<T> Drop for AckGuard<T> {
    fn drop(&mut self) {
        self.done(Err(StorageError::Closed));
    }
}

macro_rules! ticket {
    ($(#[$doc:meta])* $name:ident, $out:ty) => {
        $(#[$doc])*
        #[must_use = "a ticket tells whether the operation succeeded"]
        pub struct $name(pub(crate) Arc<Slot<$out>>);

        impl $name {
            /// Blocks the calling thread until the result is there. Do not call this on a shard
            /// thread: `.await` the ticket instead.
            pub fn wait(self) -> Result<$out, StorageError> {
                self.0.wait(None)
            }

            /// Like [`wait`](Self::wait) with a time limit; [`StorageError::Timeout`] when it runs out
            /// (the operation itself goes on).
            pub fn wait_timeout(self, t: Duration) -> Result<$out, StorageError> {
                self.0.wait(Some(t))
            }

            /// Whether the result is already there (never blocks).
            pub fn is_done(&self) -> bool {
                self.0.is_done()
            }
        }

        impl Future for $name {
            type Output = Result<$out, StorageError>;
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                self.0.poll(cx)
            }
        }
    };
}

ticket!(
    /// Completes once a mark is in the journal (per the fsync policy): from then on it survives a crash.
    MarkTicket,
    MarkAck
);
ticket!(
    /// Completes once every mark acknowledged before the flush request is written to the database or
    /// the dump file.
    FlushTicket,
    FlushReport
);
ticket!(
    /// Completes with a row's non-key columns (`None`: no such row), dirty data first.
    LoadTicket,
    Option<Vec<Value>>
);
ticket!(
    /// Completes with the rows of a diagnostic query.
    QueryTicket,
    Vec<Vec<Value>>
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn wait_and_poll() {
        let s = Slot::<u32>::new();
        let t = LoadTicketLike(s.clone());
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.complete(Ok(7)));
        assert_eq!(t.0.wait(None).expect("completed"), 7);
        h.join().expect("thread");
        // Second completion is ignored; waiting again reports Closed, not a hang.
        s.complete(Ok(8));
        assert!(matches!(s.wait(None), Err(StorageError::Closed)));

        let s = Slot::<u32>::new();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(s.poll(&mut cx).is_pending());
        s.complete(Err(StorageError::Closed));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            s.poll(&mut cx),
            Poll::Ready(Err(StorageError::Closed))
        ));

        let s = Slot::<u32>::new();
        assert!(matches!(
            s.wait(Some(Duration::from_millis(5))),
            Err(StorageError::Timeout(_))
        ));
    }

    struct LoadTicketLike(Arc<Slot<u32>>);
}
