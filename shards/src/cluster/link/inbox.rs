//! A shard's inbox of frames that arrived over node links for its client sessions: filled by link
//! threads, emptied by the shard (a task awaits [`Inbox::take`]). Bounded: a full inbox makes the
//! link thread wait, so the link stops reading and TCP pushes back on the peer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lattice_wire::SessionId;

/// What a link hands to a shard for one of its client sessions.
#[derive(Debug)]
pub enum Inbound {
    /// A frame to deliver.
    Frame(SessionId, Vec<u8>),
    /// Close the session with this reason.
    Close(SessionId, String),
}

struct Inner {
    q: VecDeque<Inbound>,
    waker: Option<Waker>,
}

/// One shard's inbox.
pub struct Inbox {
    inner: Mutex<Inner>,
    not_full: Condvar,
    cap: usize,
    /// Times a link thread found it full and waited.
    pub full_total: AtomicU64,
}

/// Most frames one [`Inbox::take`] hands to the shard (its loop pass stays bounded).
const BATCH: usize = 256;

impl Inbox {
    /// An inbox of at most `cap` frames.
    pub fn new(cap: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            inner: Mutex::new(Inner {
                q: VecDeque::new(),
                waker: None,
            }),
            not_full: Condvar::new(),
            cap: cap.max(1),
            full_total: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` (link threads). Waits while the inbox is full (counted once per wait),
    /// returning false if `stop()` turns true meanwhile (the item is not queued).
    pub fn push(&self, item: Inbound, stop: impl Fn() -> bool) -> bool {
        let mut g = self.lock();
        if g.q.len() >= self.cap {
            self.full_total.fetch_add(1, Ordering::Relaxed);
            while g.q.len() >= self.cap {
                if stop() {
                    return false;
                }
                g = self
                    .not_full
                    .wait_timeout(g, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        g.q.push_back(item);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
        true
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().q.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes with the next batch of frames (at most 256) once there is one.
    pub fn take(self: &Arc<Self>) -> Take {
        Take(self.clone())
    }
}

/// The future of [`Inbox::take`].
pub struct Take(Arc<Inbox>);

impl Future for Take {
    type Output = Vec<Inbound>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.0.lock();
        if g.q.is_empty() {
            g.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = g.q.len().min(BATCH);
        let batch: Vec<_> = g.q.drain(..n).collect();
        drop(g);
        self.0.not_full.notify_all();
        Poll::Ready(batch)
    }
}
