//! The journal thread: takes marks from the bounded caller queue in groups, appends each group to the
//! journal (one write, fsync per policy), folds the marks into the dirty map, then completes their
//! tickets, so an acknowledgement always follows the append. It also writes the checkpoints the
//! flusher's confirmed seq allows.
//!
//! Owns the caller → journal queue's message ([`Pending`]) and the thread's loop. Knows nothing of
//! the database, the dump file or the read path.

use super::journal::{encode_mark, mark_size, Journal};
use super::mark_queue::MarkRx;
use super::shared::{lock, Shared};
use super::ticket::{AckGuard, MarkAck};
use super::{Op, StorageError, TableId, Value};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A validated mark on its way to the journal.
pub(crate) struct Pending {
    pub(crate) table: TableId,
    pub(crate) op: Op,
    pub(crate) key: Vec<Value>,
    pub(crate) values: Vec<Value>,
    pub(crate) ack: AckGuard<MarkAck>,
}

/// Encoded bytes after which a journal group is written even if fewer than `journal_batch` marks.
const JOURNAL_GROUP_BYTES: usize = 8 << 20;

fn pending_size(shared: &Shared, p: &Pending) -> usize {
    mark_size(&shared.tables[p.table.index()].name, &p.key, &p.values)
}

/// Body of the journal thread. Returns once the flusher has stopped (after its final checkpoint) or,
/// on `halt`, at once; marks still queued then complete with `Closed`.
pub(crate) fn run(shared: Arc<Shared>, mut journal: Journal, rx: MarkRx<Pending>) {
    let cfg = &shared.config;
    let m = &shared.metrics;
    let mut batch: Vec<Pending> = Vec::with_capacity(cfg.journal_batch.min(65_536));
    let mut seq = journal.last_seq();
    // Appends refused in a row (logged once, at the first).
    let mut refused_run: u64 = 0;
    let mut checkpointed = journal.confirmed();
    let mut acks: Vec<(AckGuard<MarkAck>, u64)> = Vec::with_capacity(batch.capacity());
    // A failed checkpoint is retried with the storage retry backoff (it only delays deleting
    // journal segments; marks keep being journaled meanwhile).
    let mut checkpoint_backoff = Duration::ZERO;
    let mut next_checkpoint = Instant::now();
    loop {
        let c = shared.confirmed.load(Ordering::Acquire);
        if c > checkpointed
            && !shared.halt.load(Ordering::Acquire)
            && Instant::now() >= next_checkpoint
        {
            match journal.checkpoint(c) {
                Ok(()) => {
                    checkpointed = c;
                    checkpoint_backoff = Duration::ZERO;
                }
                Err(e) => {
                    m.journal_errors.fetch_add(1, Ordering::Relaxed);
                    checkpoint_backoff = (checkpoint_backoff * 2)
                        .max(Duration::from_millis(cfg.retry_backoff_ms))
                        .min(Duration::from_millis(cfg.retry_backoff_max_ms));
                    next_checkpoint = Instant::now() + checkpoint_backoff;
                    tracing::error!(error = %e, retry_in_ms = checkpoint_backoff.as_millis() as u64, "journal checkpoint failed; will retry");
                }
            }
            m.journal_bytes.store(journal.bytes(), Ordering::Relaxed);
        }
        if shared.flusher_done.load(Ordering::Acquire) {
            // The flusher may have confirmed its last flush after the load above.
            let c = shared.confirmed.load(Ordering::Acquire);
            if c > checkpointed && !shared.halt.load(Ordering::Acquire) {
                if let Err(e) = journal.checkpoint(c) {
                    tracing::error!(error = %e, "final journal checkpoint failed; the next start replays the last flush (harmless)");
                }
            }
            break;
        }
        let closing = shared.closing.load(Ordering::Acquire);
        if shared.halt.load(Ordering::Acquire) {
            // Crash simulation: stop taking marks, leave the journal as it is.
            shared.journal_drained.store(true, Ordering::Release);
            shared.flush_notify.notify_one();
            break;
        }
        // Hard bound on dirty rows: stop taking marks until the flusher drains the map.
        {
            let d = lock(&shared.dirty);
            if d.len() >= cfg.dirty_limit && !closing {
                m.dirty_limit_hits.fetch_add(1, Ordering::Relaxed);
                shared.flush_notify.notify_one();
                let _ = shared.space.wait_timeout(d, Duration::from_millis(50));
                continue;
            }
        }
        let wait = match journal.tick() {
            Ok(w) => w.min(Duration::from_millis(50)),
            Err(e) => {
                tracing::error!(error = %e, "journal fsync failed");
                m.journal_errors.fetch_add(1, Ordering::Relaxed);
                Duration::from_millis(50)
            }
        };
        let first = if closing {
            rx.try_recv().ok()
        } else {
            match rx.recv_timeout(wait) {
                Ok(p) => Some(p),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        if let Some(p) = first {
            let mut bytes = pending_size(&shared, &p);
            batch.push(p);
            // Bounded group: `journal_batch` marks or JOURNAL_GROUP_BYTES, whichever comes first.
            while batch.len() < cfg.journal_batch && bytes < JOURNAL_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += pending_size(&shared, &p);
                        batch.push(p)
                    }
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            if closing && !shared.journal_drained.load(Ordering::Acquire) {
                if let Err(e) = journal.sync() {
                    tracing::error!(error = %e, "journal fsync at shutdown failed");
                }
                shared.journal_drained.store(true, Ordering::Release);
                shared.flush_notify.notify_one();
            } else if closing {
                std::thread::sleep(Duration::from_millis(2));
            }
            continue;
        }
        // Encode the group, one write, then (per policy) one fsync.
        let mut buf = journal.take_buf();
        let first_seq = seq + 1;
        for p in &batch {
            seq += 1;
            encode_mark(
                &mut buf,
                seq,
                p.op,
                &shared.tables[p.table.index()].name,
                &p.key,
                &p.values,
            );
        }
        let bytes = buf.len() as u64;
        match journal.append(buf, seq) {
            Ok(()) => {
                if refused_run > 0 {
                    tracing::warn!(
                        refused_appends = refused_run,
                        "journal appends succeed again"
                    );
                    refused_run = 0;
                }
                m.journal_appends.fetch_add(1, Ordering::Relaxed);
                m.journal_bytes_written.fetch_add(bytes, Ordering::Relaxed);
                m.journal_bytes.store(journal.bytes(), Ordering::Relaxed);
                let mut coalesced = 0u64;
                let n = batch.len() as u64;
                let len = {
                    let mut d = lock(&shared.dirty);
                    for (i, p) in batch.drain(..).enumerate() {
                        let s = first_seq + i as u64;
                        if d.mark(p.table, p.key, p.op, p.values, s) {
                            coalesced += 1;
                        }
                        acks.push((p.ack, s));
                    }
                    d.len()
                };
                m.dirty_marks.fetch_add(n, Ordering::Relaxed);
                m.coalesced_marks.fetch_add(coalesced, Ordering::Relaxed);
                m.dirty_rows.store(len as u64, Ordering::Relaxed);
                for (ack, s) in acks.drain(..) {
                    ack.done(Ok(MarkAck { seq: s }));
                }
                if len >= cfg.dirty_bound {
                    shared.flush_notify.notify_one();
                }
            }
            Err(e) => {
                m.journal_errors.fetch_add(1, Ordering::Relaxed);
                // One line per run of failures (a full disk refuses every append until space
                // comes back); `journal_errors_total` counts each, the recovery line sums them.
                if refused_run == 0 {
                    tracing::error!(error = %e, marks = batch.len(), "journal append failed; marks refused (further failures until an append succeeds are only counted, in journal_errors_total)");
                }
                refused_run += 1;
                for p in batch.drain(..) {
                    p.ack.done(Err(StorageError::Journal(e.to_string())));
                }
            }
        }
    }
    if let Err(e) = journal.sync() {
        tracing::error!(error = %e, "final journal fsync failed");
    }
    // Marks still queued are dropped here; their tickets complete with `Closed` (never acknowledged).
    drop(rx);
}
