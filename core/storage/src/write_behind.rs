//! The write-behind engine's public face: [`Storage`] (open, shutdown) and the [`StorageHandle`]
//! services mark, flush, load and query through.
//!
//! Owns input validation, the wiring of the bounded queues, and the start and stop of the two storage
//! threads (`journal_thread.rs`, `flusher.rs`); loads and queries are handed to `reads.rs`. Knows
//! nothing of how a thread does its work: what the journal writes, how rows reach the database, or
//! where a read is answered from.
//!
//! ```text
//!  shard threads ──mark()──► bounded queue ──► journal thread ──append+fsync──► journal segments
//!        ▲                                         │ insert (coalesce) + ack
//!        └──────────── MarkTicket completes ◄──────┤
//!                                                  ▼
//!                                        dirty map (mutex, 2 storage threads only)
//!                                                  │ take at interval / bound / request
//!                                                  ▼
//!                          flusher thread (tokio current-thread) ──► database │ dump file
//!                                                  │ confirmed seq
//!                                                  └──► journal thread writes checkpoint, drops segments
//! ```

use super::config::StorageConfig;
use super::dirty::DirtyMap;
use super::journal::{mark_size, Journal, MAX_RECORD};
use super::journal_thread::{self, Pending};
use super::mark_queue::{self, MarkTx, TrySendError};
use super::metrics::{Metrics, MetricsSnapshot};
use super::reads::{self, ReadQueue};
use super::shared::{lock, Shared};
use super::ticket::{AckGuard, FlushTicket, LoadTicket, MarkTicket, QueryTicket, Slot};
use super::{flusher, migrate, Op, Schema, StorageError, TableId, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

// Kept here too so `write_behind::{MarkAck, FlushReport}` still name them; they live with the
// tickets that complete with them.
pub use super::ticket::{FlushReport, MarkAck};

/// Cheap, cloneable, `Send` handle for services: mark rows dirty, request flushes, load rows, read
/// metrics. Never blocks except in the explicitly blocking `*_wait` methods.
#[derive(Clone)]
pub struct StorageHandle {
    shared: Arc<Shared>,
    tx: MarkTx<Pending>,
    reads: ReadQueue,
}

/// An open storage: owns the journal and flusher threads. Dropping it shuts down cleanly (final flush);
/// prefer [`Storage::shutdown`] to see the result.
pub struct Storage {
    handle: StorageHandle,
    journal: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<Result<(), StorageError>>>,
}

impl StorageHandle {
    /// Id of a registered table.
    pub fn table(&self, name: &str) -> Option<TableId> {
        self.shared.names.get(name).copied()
    }

    /// Marks a row dirty. Non-blocking: validates, then pushes into the bounded queue. The returned
    /// ticket completes once the mark is in the journal — only then is it acknowledged and safe
    /// against a crash. Fails with [`StorageError::Backpressure`] when the queue is full (counted),
    /// [`StorageError::Arity`] / [`StorageError::UnknownTable`] / [`StorageError::RowTooLarge`] for
    /// bad input, [`StorageError::Closed`] after shutdown.
    pub fn mark(
        &self,
        table: TableId,
        op: Op,
        key: Vec<Value>,
        values: Vec<Value>,
    ) -> Result<MarkTicket, StorageError> {
        let spec = self
            .shared
            .tables
            .get(table.index())
            .ok_or(StorageError::UnknownTable(table.0))?;
        if key.len() != spec.key.len() {
            return Err(StorageError::Arity {
                table: spec.name.clone(),
                what: "key",
                expected: spec.key.len(),
                got: key.len(),
            });
        }
        let want = if op == Op::Delete {
            0
        } else {
            spec.columns.len()
        };
        if values.len() != want {
            return Err(StorageError::Arity {
                table: spec.name.clone(),
                what: "column",
                expected: want,
                got: values.len(),
            });
        }
        let size = mark_size(&spec.name, &key, &values);
        if size > MAX_RECORD {
            return Err(StorageError::RowTooLarge(size));
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let slot = Slot::new();
        let p = Pending {
            table,
            op,
            key,
            values,
            ack: AckGuard::new(slot.clone()),
        };
        match self.tx.try_send(p) {
            Ok(()) => Ok(MarkTicket(slot)),
            Err(TrySendError::Full(p)) => {
                self.shared
                    .metrics
                    .backpressure
                    .fetch_add(1, Ordering::Relaxed);
                // Not queued: the caller gets the error, not the ticket.
                p.ack.disarm();
                Err(StorageError::Backpressure(
                    self.shared.config.queue_capacity,
                ))
            }
            Err(TrySendError::Disconnected(p)) => {
                p.ack.disarm();
                Err(StorageError::Closed)
            }
        }
    }

    /// [`mark`](Self::mark) with [`Op::Insert`].
    pub fn insert(
        &self,
        table: TableId,
        key: Vec<Value>,
        values: Vec<Value>,
    ) -> Result<MarkTicket, StorageError> {
        self.mark(table, Op::Insert, key, values)
    }

    /// [`mark`](Self::mark) with [`Op::Update`].
    pub fn update(
        &self,
        table: TableId,
        key: Vec<Value>,
        values: Vec<Value>,
    ) -> Result<MarkTicket, StorageError> {
        self.mark(table, Op::Update, key, values)
    }

    /// [`mark`](Self::mark) with [`Op::Delete`].
    pub fn delete(&self, table: TableId, key: Vec<Value>) -> Result<MarkTicket, StorageError> {
        self.mark(table, Op::Delete, key, Vec::new())
    }

    /// Asks the flusher to flush now (non-blocking, idempotent).
    pub fn flush_now(&self) {
        self.shared.flush_requested.store(true, Ordering::Release);
        self.shared.flush_notify.notify_one();
    }

    /// Requests a flush; the ticket completes once every mark acknowledged before this call is
    /// persisted (database or dump file). Await it on a shard; `wait` elsewhere.
    ///
    /// At most `read_queue` flush requests wait at once; beyond that the call fails with
    /// [`StorageError::Backpressure`] (counted): the flushes already waiting cover this one's marks.
    pub fn flush(&self) -> Result<FlushTicket, StorageError> {
        if self.shared.flusher_done.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let slot = Slot::new();
        {
            let mut waiters = lock(&self.shared.flush_waiters);
            if waiters.len() >= self.shared.config.read_queue {
                self.shared
                    .metrics
                    .backpressure
                    .fetch_add(1, Ordering::Relaxed);
                return Err(StorageError::Backpressure(waiters.len()));
            }
            waiters.push(AckGuard::new(slot.clone()));
        }
        if self.shared.flusher_done.load(Ordering::Acquire) {
            // The flusher stopped between the check and the push: nobody will take the waiter.
            lock(&self.shared.flush_waiters).clear();
            return Err(StorageError::Closed);
        }
        self.flush_now();
        Ok(FlushTicket(slot))
    }

    /// Blocking [`flush`](Self::flush) with a time limit (for logout/shutdown paths off the shards).
    pub fn flush_and_wait(&self, timeout: Duration) -> Result<FlushReport, StorageError> {
        self.flush()?.wait_timeout(timeout)
    }

    /// Reads a row's non-key columns: the dirty or in-flight value if there is one, else a `SELECT`.
    /// Fails with [`StorageError::Backpressure`] when the read queue is full.
    pub fn load(&self, table: TableId, key: Vec<Value>) -> Result<LoadTicket, StorageError> {
        let spec = self
            .shared
            .tables
            .get(table.index())
            .ok_or(StorageError::UnknownTable(table.0))?;
        if key.len() != spec.key.len() {
            return Err(StorageError::Arity {
                table: spec.name.clone(),
                what: "key",
                expected: spec.key.len(),
                got: key.len(),
            });
        }
        self.reads.load(&self.shared, table, key)
    }

    /// Runs a query on the flusher thread's connection (diagnostics, tools, tests). Counted by its
    /// statement kind. Do not use it to write rows that the write-behind layer also writes.
    pub fn query(&self, sql: &str, params: Vec<Value>) -> Result<QueryTicket, StorageError> {
        self.reads.query(&self.shared, sql, params)
    }

    /// Current counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The configuration in use.
    pub fn config(&self) -> &StorageConfig {
        &self.shared.config
    }
}

impl Storage {
    /// Opens the storage: recovers the journal, connects (retrying network errors within the retry
    /// budget), applies or verifies migrations, replays the dump file, writes the recovered marks,
    /// then starts the threads. Fails with a typed error if any step cannot complete; nothing in the
    /// journal or dump file is lost by a failed open.
    pub fn open(config: StorageConfig, schema: Schema) -> Result<Storage, StorageError> {
        Self::open_until(config, schema, Arc::new(AtomicBool::new(false)))
    }

    /// [`Storage::open`], giving up the connection retries as soon as `stop` is set (a signal
    /// during start-up): the open then fails with the last connection error, and nothing in the
    /// journal or dump file is lost.
    pub fn open_until(
        config: StorageConfig,
        schema: Schema,
        stop: Arc<AtomicBool>,
    ) -> Result<Storage, StorageError> {
        config.validate()?;
        migrate::check(&schema.migrations)?;
        let jdir = config.journal_dir();
        let (journal, rec) = Journal::open(
            &jdir,
            config.fsync,
            Duration::from_millis(config.fsync_interval_ms),
            config.journal_segment_bytes,
        )
        .map_err(|e| StorageError::Journal(format!("open {}: {e}", jdir.display())))?;
        let names: HashMap<String, TableId> = schema
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), TableId(i as u16)))
            .collect();
        let mut dirty = DirtyMap::new(schema.tables.len());
        let replayed = rec.entries.len();
        for e in rec.entries {
            let id = *names.get(&e.table).ok_or_else(|| {
                StorageError::Schema(format!(
                    "journal holds marks for unknown table {:?}; register it",
                    e.table
                ))
            })?;
            let spec = &schema.tables[id.index()];
            let want = if e.op == Op::Delete {
                0
            } else {
                spec.columns.len()
            };
            if e.key.len() != spec.key.len() || e.values.len() != want {
                return Err(StorageError::Schema(format!(
                    "journal mark for {} does not match its columns",
                    spec.name
                )));
            }
            dirty.mark(id, e.key, e.op, e.values, e.seq);
        }
        if replayed > 0 || rec.truncated_bytes > 0 {
            tracing::info!(
                replayed,
                confirmed = rec.confirmed,
                cut_bytes = rec.truncated_bytes,
                "journal recovered"
            );
        }
        let metrics = Metrics::default();
        metrics
            .journal_replayed
            .store(replayed as u64, Ordering::Relaxed);
        metrics.journal_missing.store(
            rec.missing.iter().map(|(a, b)| b - a + 1).sum(),
            Ordering::Relaxed,
        );
        metrics
            .dirty_rows
            .store(dirty.len() as u64, Ordering::Relaxed);
        metrics
            .journal_bytes
            .store(journal.bytes(), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            tables: schema.tables.clone(),
            names,
            metrics,
            dirty: Mutex::new(dirty),
            space: Condvar::new(),
            flush_notify: tokio::sync::Notify::new(),
            flush_requested: AtomicBool::new(false),
            flush_waiters: Mutex::new(Vec::new()),
            dump_network_pending: AtomicU64::new(0),
            confirmed: AtomicU64::new(rec.confirmed),
            closing: AtomicBool::new(false),
            journal_drained: AtomicBool::new(false),
            flusher_done: AtomicBool::new(false),
            halt: AtomicBool::new(false),
            open_stop: stop,
            config,
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let (read_tx, read_rx) = reads::queue(shared.config.read_queue);
        let fs = shared.clone();
        let migrations = schema.migrations;
        let flusher = std::thread::Builder::new()
            .name("lattice-storage-flush".into())
            .spawn(move || flusher::run(fs, migrations, ready_tx, read_rx))
            .map_err(|e| StorageError::Config(format!("spawn flusher thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = flusher.join();
                return Err(e);
            }
            Err(_) => {
                return Err(match flusher.join() {
                    Ok(Err(e)) => e,
                    _ => StorageError::Closed,
                })
            }
        }
        let (tx, rx) = mark_queue::bounded(shared.config.queue_capacity);
        let js = shared.clone();
        let journal = match std::thread::Builder::new()
            .name("lattice-storage-journal".into())
            .spawn(move || journal_thread::run(js, journal, rx))
        {
            Ok(j) => j,
            Err(e) => {
                shared.halt.store(true, Ordering::Release);
                shared.closing.store(true, Ordering::Release);
                shared.journal_drained.store(true, Ordering::Release);
                shared.flush_notify.notify_one();
                let _ = flusher.join();
                return Err(StorageError::Config(format!("spawn journal thread: {e}")));
            }
        };
        Ok(Storage {
            handle: StorageHandle {
                shared,
                tx,
                reads: read_tx,
            },
            journal: Some(journal),
            flusher: Some(flusher),
        })
    }

    /// A handle for services (clone it per shard).
    pub fn handle(&self) -> StorageHandle {
        self.handle.clone()
    }

    /// Current counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.handle.metrics()
    }

    /// Stops accepting marks, journals what is queued, flushes everything, records the final
    /// checkpoint and joins the threads. Bounded by the retry budget. Returns the flusher's error if
    /// the last flush could not be persisted (the journal then still holds it for the next start).
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.stop(false)
    }

    /// Test hook: stops both threads without the final flush or checkpoint, as a crash would leave
    /// things (acknowledged marks stay only in the journal).
    #[doc(hidden)]
    pub fn halt_without_flush(mut self) {
        let _ = self.stop(true);
    }

    fn stop(&mut self, halt: bool) -> Result<(), StorageError> {
        let s = &self.handle.shared;
        if halt {
            s.halt.store(true, Ordering::Release);
        }
        s.closing.store(true, Ordering::Release);
        s.flush_notify.notify_one();
        s.space.notify_all();
        let mut result = Ok(());
        if let Some(f) = self.flusher.take() {
            result = match f.join() {
                Ok(r) => r,
                Err(_) => Err(StorageError::Closed),
            };
        }
        if let Some(j) = self.journal.take() {
            let _ = j.join();
        }
        result
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.flusher.is_some() || self.journal.is_some() {
            if let Err(e) = self.stop(false) {
                tracing::error!(error = %e, "storage shutdown on drop failed; the journal keeps unflushed marks");
            }
        }
    }
}
