//! The bounded queue between services and the journal thread.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates and touches all `n` slots when it is created: with
//! the default `storage.queue_capacity` (65,536 marks) that was 4.5 MiB of resident memory at
//! start for a queue that is almost always empty. This queue is std's unbounded channel (blocks of
//! slots allocated as they fill, freed as they drain) with the bound kept by a counter: a send that
//! would make more than `cap` marks wait is refused as `Full`, exactly as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// Why a mark was not queued; the mark comes back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// `cap` marks are waiting.
    Full(T),
    /// The journal thread is gone.
    Disconnected(T),
}

/// Sending side; cheap to clone (one per service handle).
pub(crate) struct MarkTx<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl<T> Clone for MarkTx<T> {
    fn clone(&self) -> Self {
        MarkTx {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
            cap: self.cap,
        }
    }
}

/// Receiving side (the journal thread).
pub(crate) struct MarkRx<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

/// A queue that holds at most `cap` (≥ 1) items; memory grows with what waits, not with `cap`.
pub(crate) fn bounded<T>(cap: usize) -> (MarkTx<T>, MarkRx<T>) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        MarkTx {
            tx,
            queued: Arc::clone(&queued),
            cap: cap.max(1),
        },
        MarkRx { rx, queued },
    )
}

impl<T> MarkTx<T> {
    /// Queues `v` unless `cap` items wait or the receiver is gone. Never blocks.
    pub(crate) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        // Reserve a place first, so concurrent senders can never exceed the bound together.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(v));
        }
        self.tx.send(v).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.0)
        })
    }
}

impl<T> MarkRx<T> {
    /// The next item, if one waits.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let v = self.rx.try_recv()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(v)
    }

    /// The next item, waiting up to `d`.
    pub(crate) fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        let v = self.rx.recv_timeout(d)?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_frees_places_as_items_are_taken() {
        let (tx, rx) = bounded::<u32>(2);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv().unwrap(), 1);
        tx2.try_send(4).unwrap();
        assert!(matches!(tx2.try_send(5), Err(TrySendError::Full(5))));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)).unwrap(), 2);
        assert_eq!(rx.try_recv().unwrap(), 4);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        ));
        drop(rx);
        assert!(matches!(tx.try_send(6), Err(TrySendError::Disconnected(6))));
        // A refused send gives its place back.
        assert_eq!(tx.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn concurrent_senders_never_exceed_the_bound() {
        let (tx, rx) = bounded::<usize>(100);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tx = tx.clone();
                std::thread::spawn(move || (0..1000).filter(|&i| tx.try_send(i).is_ok()).count())
            })
            .collect();
        let sent: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(sent, 100);
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 100);
    }
}
