//! The write-behind engine: the caller-facing handle, the journal thread and the flusher thread.
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

use super::backend::{AnyBackend, Backend, DbError, ErrorClass};
use super::config::{BackendKind, StorageConfig};
use super::dirty::{DirtyMap, RowRef};
use super::dump::{now_ms, DumpError, DumpFile, DumpLine, DumpRecord};
use super::journal::{encode_mark, mark_size, Journal, MAX_RECORD};
use super::metrics::{Metrics, MetricsSnapshot, StmtKind};
use super::mysql::MysqlBackend;
use super::sql::{self, Stmt};
use super::sqlite::SqliteBackend;
use super::ticket::{FlushTicket, LoadTicket, MarkTicket, Slot};
use super::{migrate, Op, Schema, StorageError, TableId, TableSpec, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
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

/// Completes its slot with `Closed` if dropped before a result was set (e.g. left in the queue at
/// shutdown), so no caller waits forever.
struct AckGuard<T>(Arc<Slot<T>>);

impl<T> AckGuard<T> {
    fn done(&self, r: Result<T, StorageError>) {
        self.0.complete(r);
    }
}

impl<T> Drop for AckGuard<T> {
    fn drop(&mut self) {
        self.0.complete(Err(StorageError::Closed));
    }
}

struct Pending {
    table: TableId,
    op: Op,
    key: Vec<Value>,
    values: Vec<Value>,
    ack: AckGuard<MarkAck>,
}

enum ReadReq {
    Load {
        table: TableId,
        key: Vec<Value>,
        ack: AckGuard<Option<Vec<Value>>>,
    },
    Query {
        sql: String,
        params: Vec<Value>,
        ack: AckGuard<Vec<Vec<Value>>>,
    },
}

struct Shared {
    config: StorageConfig,
    tables: Vec<TableSpec>,
    names: HashMap<String, TableId>,
    metrics: Metrics,
    dirty: Mutex<DirtyMap>,
    space: Condvar,
    flush_notify: tokio::sync::Notify,
    flush_requested: AtomicBool,
    flush_waiters: Mutex<Vec<AckGuard<FlushReport>>>,
    /// Highest seq persisted (database or dump), set by the flusher.
    confirmed: AtomicU64,
    /// No new marks are accepted.
    closing: AtomicBool,
    /// The journal thread has taken every queued mark after `closing`.
    journal_drained: AtomicBool,
    /// The flusher has written its last flush and stopped.
    flusher_done: AtomicBool,
    /// Stop without a final flush (crash simulation for tests).
    halt: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cheap, cloneable, `Send` handle for services: mark rows dirty, request flushes, load rows, read
/// metrics. Never blocks except in the explicitly blocking `*_wait` methods.
#[derive(Clone)]
pub struct StorageHandle {
    shared: Arc<Shared>,
    tx: SyncSender<Pending>,
    reads: tokio::sync::mpsc::Sender<ReadReq>,
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
            ack: AckGuard(slot.clone()),
        };
        match self.tx.try_send(p) {
            Ok(()) => Ok(MarkTicket(slot)),
            Err(TrySendError::Full(p)) => {
                self.shared
                    .metrics
                    .backpressure
                    .fetch_add(1, Ordering::Relaxed);
                // Not queued: the caller gets the error, not the ticket.
                std::mem::forget(p.ack);
                Err(StorageError::Backpressure(
                    self.shared.config.queue_capacity,
                ))
            }
            Err(TrySendError::Disconnected(p)) => {
                std::mem::forget(p.ack);
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
    pub fn flush(&self) -> Result<FlushTicket, StorageError> {
        if self.shared.flusher_done.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let slot = Slot::new();
        lock(&self.shared.flush_waiters).push(AckGuard(slot.clone()));
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
        let slot = Slot::new();
        self.send_read(ReadReq::Load {
            table,
            key,
            ack: AckGuard(slot.clone()),
        })?;
        Ok(LoadTicket(slot))
    }

    /// Runs a query on the flusher thread's connection (diagnostics, tools, tests). Counted by its
    /// statement kind. Do not use it to write rows that the write-behind layer also writes.
    pub fn query(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<super::ticket::QueryTicket, StorageError> {
        let slot = Slot::new();
        self.send_read(ReadReq::Query {
            sql: sql.to_owned(),
            params,
            ack: AckGuard(slot.clone()),
        })?;
        Ok(super::ticket::QueryTicket(slot))
    }

    fn send_read(&self, r: ReadReq) -> Result<(), StorageError> {
        match self.reads.try_send(r) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(r)) => {
                self.shared
                    .metrics
                    .backpressure
                    .fetch_add(1, Ordering::Relaxed);
                forget_read(r);
                Err(StorageError::Backpressure(self.shared.config.read_queue))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(r)) => {
                forget_read(r);
                Err(StorageError::Closed)
            }
        }
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

fn forget_read(r: ReadReq) {
    match r {
        ReadReq::Load { ack, .. } => std::mem::forget(ack),
        ReadReq::Query { ack, .. } => std::mem::forget(ack),
    }
}

impl Storage {
    /// Opens the storage: recovers the journal, connects (retrying network errors within the retry
    /// budget), applies or verifies migrations, replays the dump file, writes the recovered marks,
    /// then starts the threads. Fails with a typed error if any step cannot complete; nothing in the
    /// journal or dump file is lost by a failed open.
    pub fn open(config: StorageConfig, schema: Schema) -> Result<Storage, StorageError> {
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
            confirmed: AtomicU64::new(rec.confirmed),
            closing: AtomicBool::new(false),
            journal_drained: AtomicBool::new(false),
            flusher_done: AtomicBool::new(false),
            halt: AtomicBool::new(false),
            config,
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let (read_tx, read_rx) = tokio::sync::mpsc::channel(shared.config.read_queue);
        let fs = shared.clone();
        let migrations = schema.migrations;
        let flusher = std::thread::Builder::new()
            .name("lattice-storage-flush".into())
            .spawn(move || flusher_main(fs, migrations, ready_tx, read_rx))
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
        let (tx, rx) = mpsc::sync_channel(shared.config.queue_capacity);
        let js = shared.clone();
        let journal = match std::thread::Builder::new()
            .name("lattice-storage-journal".into())
            .spawn(move || journal_main(js, journal, rx))
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

// ---------------------------------------------------------------------------------------------
// Journal thread

/// Encoded bytes after which a journal group is written even if fewer than `journal_batch` marks.
const JOURNAL_GROUP_BYTES: usize = 8 << 20;

fn pending_size(shared: &Shared, p: &Pending) -> usize {
    mark_size(&shared.tables[p.table.index()].name, &p.key, &p.values)
}

fn journal_main(shared: Arc<Shared>, mut journal: Journal, rx: Receiver<Pending>) {
    let cfg = &shared.config;
    let m = &shared.metrics;
    let mut batch: Vec<Pending> = Vec::with_capacity(cfg.journal_batch.min(65_536));
    let mut seq = journal.last_seq();
    let mut checkpointed = journal.confirmed();
    let mut acks: Vec<(AckGuard<MarkAck>, u64)> = Vec::with_capacity(batch.capacity());
    loop {
        let c = shared.confirmed.load(Ordering::Acquire);
        if c > checkpointed && !shared.halt.load(Ordering::Acquire) {
            match journal.checkpoint(c) {
                Ok(()) => checkpointed = c,
                Err(e) => tracing::error!(error = %e, "journal checkpoint failed; will retry"),
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
                tracing::error!(error = %e, marks = batch.len(), "journal append failed; marks refused");
                for p in batch.drain(..) {
                    p.ack.done(Err(StorageError::Journal(e.to_string())));
                }
                // Records after a torn one would be unreadable: continue in a fresh segment.
                if let Err(e) = journal.restart_segment(seq) {
                    tracing::error!(error = %e, "journal: could not start a new segment after a failed append");
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

// ---------------------------------------------------------------------------------------------
// Flusher thread

struct Flusher {
    shared: Arc<Shared>,
    backend: Rc<AnyBackend>,
    kind: BackendKind,
    dump: DumpFile,
    /// Rows taken from the dirty map and not yet persisted; reads look here after the dirty map.
    in_flight: Rc<std::cell::RefCell<Option<Rc<DirtyMap>>>>,
    /// A snapshot could be persisted nowhere: stop advancing the checkpoint (journal keeps all).
    stuck: bool,
    last_activity: Instant,
}

fn flusher_main(
    shared: Arc<Shared>,
    migrations: Vec<migrate::Migration>,
    ready: mpsc::Sender<Result<(), StorageError>>,
    reads: tokio::sync::mpsc::Receiver<ReadReq>,
) -> Result<(), StorageError> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StorageError::Config(format!("tokio runtime: {e}"))));
            return Err(StorageError::Closed);
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut f = match Flusher::start(shared.clone(), &migrations).await {
            Ok(f) => f,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Err(StorageError::Closed);
            }
        };
        let _ = ready.send(Ok(()));
        tokio::task::spawn_local(read_loop(
            shared.clone(),
            f.backend.clone(),
            f.in_flight.clone(),
            reads,
        ));
        let r = f.run().await;
        shared.flusher_done.store(true, Ordering::Release);
        // Waiters that arrived after the last flush: their tickets complete with `Closed`.
        lock(&shared.flush_waiters).clear();
        if let Ok(b) = Rc::try_unwrap(f.backend) {
            b.close().await;
        }
        r
    })
}

async fn connect(cfg: &StorageConfig) -> Result<AnyBackend, DbError> {
    match cfg.backend {
        BackendKind::Mysql => Ok(AnyBackend::Mysql(MysqlBackend::connect(cfg).await?)),
        BackendKind::Sqlite => Ok(AnyBackend::Sqlite(SqliteBackend::open(cfg)?)),
    }
}

impl Flusher {
    async fn start(
        shared: Arc<Shared>,
        migrations: &[migrate::Migration],
    ) -> Result<Flusher, StorageError> {
        let cfg = &shared.config;
        let mut attempt = 0;
        let backend = loop {
            match connect(cfg).await {
                Ok(b) => break b,
                Err(e) if e.is_retryable() && attempt < cfg.retry_max => {
                    attempt += 1;
                    shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "storage connect failed; retrying");
                    tokio::time::sleep(cfg.backoff(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if cfg.auto_migrate {
            migrate::apply(&backend, cfg.backend, migrations, &shared.metrics).await?;
        } else {
            migrate::verify(&backend, migrations).await?;
        }
        let dump = DumpFile::open(&cfg.dump_path())
            .map_err(|e| StorageError::Dump(format!("open {}: {e}", cfg.dump_path().display())))?;
        let mut f = Flusher {
            kind: cfg.backend,
            backend: Rc::new(backend),
            dump,
            in_flight: Rc::new(std::cell::RefCell::new(None)),
            stuck: false,
            last_activity: Instant::now(),
            shared,
        };
        f.shared
            .metrics
            .dump_pending
            .store(f.dump.records(), Ordering::Relaxed);
        if f.dump.records() > 0 {
            let (ok, kept) = f.replay_dump(true).await?;
            tracing::info!(replayed = ok, kept, "dump file replayed at start");
        }
        // Marks recovered from the journal are in the dirty map: write them before serving.
        f.flush_cycle().await;
        Ok(f)
    }

    async fn run(&mut self) -> Result<(), StorageError> {
        let cfg = self.shared.config.clone();
        let interval = cfg.flush_interval();
        let ping_every =
            (cfg.ping_interval_ms > 0).then(|| Duration::from_millis(cfg.ping_interval_ms));
        let mut next_flush = Instant::now() + interval;
        loop {
            let s = &self.shared;
            let closing =
                s.closing.load(Ordering::Acquire) && s.journal_drained.load(Ordering::Acquire);
            if s.halt.load(Ordering::Acquire) && s.journal_drained.load(Ordering::Acquire) {
                return Ok(());
            }
            if !closing {
                let mut wait = next_flush.saturating_duration_since(Instant::now());
                if let Some(p) = ping_every {
                    wait = wait
                        .min((self.last_activity + p).saturating_duration_since(Instant::now()));
                }
                let _ = tokio::time::timeout(
                    wait.max(Duration::from_millis(1)),
                    s.flush_notify.notified(),
                )
                .await;
            }
            let s = &self.shared;
            if s.halt.load(Ordering::Acquire) {
                continue;
            }
            let due = closing
                || Instant::now() >= next_flush
                || s.flush_requested.swap(false, Ordering::AcqRel)
                || lock(&s.dirty).len() >= cfg.dirty_bound
                || !lock(&s.flush_waiters).is_empty();
            if due {
                self.flush_cycle().await;
                next_flush = Instant::now() + interval;
            } else if let Some(p) = ping_every {
                if self.last_activity.elapsed() >= p {
                    self.ping().await;
                }
            }
            if closing {
                if self.stuck {
                    return Err(StorageError::Journal(
                        "some flushes could be written neither to the database nor to the dump file; they stay in the journal for the next start".into(),
                    ));
                }
                return Ok(());
            }
        }
    }

    async fn ping(&mut self) {
        self.last_activity = Instant::now();
        self.shared.metrics.pings.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.backend.ping().await {
            self.shared
                .metrics
                .ping_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "storage ping failed");
        }
    }

    /// Takes the dirty map and persists it; completes the flush waiters registered before the take.
    async fn flush_cycle(&mut self) {
        let s = self.shared.clone();
        let waiters: Vec<AckGuard<FlushReport>> = std::mem::take(&mut *lock(&s.flush_waiters));
        let (snap, seq) = {
            let mut d = lock(&s.dirty);
            let r = d.take_map();
            s.metrics.dirty_rows.store(0, Ordering::Relaxed);
            r
        };
        s.space.notify_all();
        let snap = Rc::new(snap);
        let mut report = FlushReport {
            confirmed_seq: s.confirmed.load(Ordering::Acquire),
            ..FlushReport::default()
        };
        let mut persisted = true;
        if !snap.is_empty() {
            self.last_activity = Instant::now();
            *self.in_flight.borrow_mut() = Some(snap.clone());
            let (w, d, ok) = self.write_snapshot(&snap).await;
            *self.in_flight.borrow_mut() = None;
            s.metrics.flush_size(snap.len() as u64);
            report.written = w;
            report.dumped = d;
            persisted = ok;
        }
        if !persisted && !self.stuck {
            self.stuck = true;
            s.metrics.unpersisted.fetch_add(1, Ordering::Relaxed);
            tracing::error!("flush could not be persisted to the database or the dump file; journal keeps it, checkpoint frozen");
        }
        if !self.stuck && seq > report.confirmed_seq {
            s.confirmed.store(seq, Ordering::Release);
            report.confirmed_seq = seq;
        }
        for w in waiters {
            if self.stuck {
                w.done(Err(StorageError::Journal(
                    "flush not persisted; kept in the journal".into(),
                )));
            } else {
                w.done(Ok(report));
            }
        }
    }

    /// Writes every row of `snap`. Returns (written, dumped, persisted).
    async fn write_snapshot(&mut self, snap: &DirtyMap) -> (u64, u64, bool) {
        let cfg = self.shared.config.clone();
        let tables = self.shared.tables.clone();
        let d = self.backend.dialect();
        let batches = sql::plan(&tables, snap.rows(), cfg.batch_rows);
        let mut written = 0u64;
        let mut dumped = 0u64;
        let mut down: Option<(DbError, u32)> = None;
        let mut persisted = true;
        let began = match self.backend.flush_begin().await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "flush could not begin; dumping its rows");
                down = Some((e, 1));
                false
            }
        };
        for b in &batches {
            let spec = &tables[b.table.index()];
            if let Some((e, attempts)) = &down {
                let (n, ok) = self.dump_rows(spec, &b.rows, e, *attempts);
                dumped += n;
                persisted &= ok;
                continue;
            }
            let stmt = sql::batch_stmt(d, spec, b);
            match self.exec_retry(&stmt).await {
                Ok(()) => written += b.rows.len() as u64,
                Err((e, attempts)) if e.class != ErrorClass::Sql || b.rows.len() == 1 => {
                    if e.class == ErrorClass::Sql {
                        log_sql_error(spec, &stmt, &e);
                    } else {
                        tracing::error!(error = %e, attempts, table = %spec.name, "database unreachable past the retry budget; dumping");
                        down = Some((e.clone(), attempts));
                    }
                    let (n, ok) = self.dump_rows(spec, &b.rows, &e, attempts);
                    dumped += n;
                    persisted &= ok;
                }
                Err(_) => {
                    // A SQL error in a multi-row statement: find the bad rows one by one.
                    for r in &b.rows {
                        let one = std::slice::from_ref(r);
                        if let Some((e, attempts)) = &down {
                            let (n, ok) = self.dump_rows(spec, one, e, *attempts);
                            dumped += n;
                            persisted &= ok;
                            continue;
                        }
                        let st = row_stmt(d, spec, r);
                        match self.exec_retry(&st).await {
                            Ok(()) => written += 1,
                            Err((e, attempts)) => {
                                if e.class == ErrorClass::Sql {
                                    log_sql_error(spec, &st, &e);
                                } else {
                                    down = Some((e.clone(), attempts));
                                }
                                let (n, ok) = self.dump_rows(spec, one, &e, attempts);
                                dumped += n;
                                persisted &= ok;
                            }
                        }
                    }
                }
            }
        }
        if began {
            if let Err(e) = self.backend.flush_end().await {
                // SQLite commit failed: this flush's rows are not in the database. The journal
                // keeps them (checkpoint frozen) for the next start.
                tracing::error!(error = %e, "flush commit failed");
                let _ = self.backend.exec_script(&["ROLLBACK".to_owned()]).await;
                persisted = false;
            }
        }
        (written, dumped, persisted)
    }

    /// Executes with retries on network errors; replays pending network dump records first so older
    /// data lands before newer. Returns the last error and the attempts made.
    async fn exec_retry(&mut self, stmt: &Stmt) -> Result<(), (DbError, u32)> {
        let cfg = self.shared.config.clone();
        let mut attempt: u32 = 0;
        loop {
            let r = if self.dump.network_pending() > 0 {
                match self.replay_dump(false).await {
                    Ok(_) if self.dump.network_pending() == 0 => self.exec_stmt(stmt).await,
                    Ok(_) => Err(DbError::network(
                        "older dumped writes are still waiting for the database",
                    )),
                    Err(e) => Err(DbError::network(format!("dump replay: {e}"))),
                }
            } else {
                self.exec_stmt(stmt).await
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < cfg.retry_max => {
                    attempt += 1;
                    self.shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "statement failed; retrying");
                    tokio::time::sleep(cfg.backoff(attempt)).await;
                }
                Err(e) => return Err((e, attempt + 1)),
            }
        }
    }

    async fn exec_stmt(&self, stmt: &Stmt) -> Result<(), DbError> {
        if stmt.params.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let r = self.backend.exec(&stmt.sql, &stmt.params).await;
        self.shared.metrics.statements(
            stmt.kind,
            stmt.params.len() as u64,
            stmt.rows as u64,
            t0.elapsed(),
            r.is_ok(),
        );
        r.map(|_| ())
    }

    /// Appends one record per row. Returns (records, ok).
    fn dump_rows(
        &mut self,
        spec: &TableSpec,
        rows: &[RowRef<'_>],
        e: &DbError,
        attempts: u32,
    ) -> (u64, bool) {
        let d = self.backend.dialect();
        let db = self.shared.config.database_name();
        let recs: Vec<DumpRecord> = rows
            .iter()
            .filter_map(|r| {
                let st = row_stmt(d, spec, r);
                let params = st.params.into_iter().next()?;
                Some(DumpRecord {
                    v: 1,
                    at_ms: now_ms(),
                    backend: self.kind.as_str().into(),
                    database: db.clone(),
                    table: spec.name.clone(),
                    seq: r.entry.seq,
                    sql: st.sql,
                    params,
                    error: DumpError::from(e),
                    attempts,
                })
            })
            .collect();
        match self.dump.append(&recs) {
            Ok(()) => {
                self.shared
                    .metrics
                    .dumps
                    .fetch_add(recs.len() as u64, Ordering::Relaxed);
                self.shared
                    .metrics
                    .dump_pending
                    .store(self.dump.records(), Ordering::Relaxed);
                (recs.len() as u64, true)
            }
            Err(io) => {
                tracing::error!(error = %io, records = recs.len(), path = %self.dump.path().display(), "dump file write failed");
                (0, false)
            }
        }
    }

    /// Replays the dump file in order. At start every record is tried; while running only
    /// network-class ones (SQL-class ones would fail the same way). Stops at the first network
    /// failure, keeping it and everything after. Returns (replayed, kept).
    async fn replay_dump(&mut self, at_start: bool) -> Result<(u64, u64), StorageError> {
        let lines = self
            .dump
            .load()
            .map_err(|e| StorageError::Dump(e.to_string()))?;
        let max = self.shared.config.dump_replay_max;
        let m = &self.shared.metrics;
        let mut keep: Vec<DumpLine> = Vec::new();
        let mut stop = false;
        let mut tried = 0usize;
        let mut ok = 0u64;
        let mut changed = false;
        for line in lines {
            let mut rec = match line {
                DumpLine::Record(r)
                    if !stop
                        && tried < max
                        && (at_start || r.error.is_network())
                        && r.backend == self.kind.as_str() =>
                {
                    r
                }
                other => {
                    keep.push(other);
                    continue;
                }
            };
            tried += 1;
            let stmt = Stmt {
                kind: StmtKind::of_sql(&rec.sql),
                rows: 1,
                params: vec![rec.params.clone()],
                sql: rec.sql.clone(),
            };
            match self.exec_stmt(&stmt).await {
                Ok(()) => {
                    ok += 1;
                    m.replays.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    m.replay_failures.fetch_add(1, Ordering::Relaxed);
                    changed |= rec.error.class != e.class.to_string();
                    if e.is_retryable() {
                        stop = true;
                    } else {
                        tracing::error!(code = ?e.code, error = %e, table = %rec.table, sql = %rec.sql, "dump record replay failed with a SQL error; kept");
                    }
                    rec.error = DumpError::from(&e);
                    rec.attempts = rec.attempts.saturating_add(1);
                    keep.push(DumpLine::Record(rec));
                }
            }
        }
        // Rewrite only when records went away or changed class; a failed retry alone is not worth
        // rewriting the file (its attempt count is then updated at the next rewrite).
        if ok > 0 || changed || (at_start && tried > 0) {
            self.dump.rewrite(&keep).map_err(|e| {
                StorageError::Dump(format!("rewrite {}: {e}", self.dump.path().display()))
            })?;
        }
        m.dump_pending.store(self.dump.records(), Ordering::Relaxed);
        Ok((ok, keep.len() as u64))
    }
}

fn row_stmt(d: sql::Dialect, spec: &TableSpec, r: &RowRef<'_>) -> Stmt {
    let one = std::slice::from_ref(r);
    match r.entry.op {
        Op::Insert => sql::upsert(d, spec, one),
        Op::Update => sql::update(d, spec, one),
        Op::Delete => sql::delete(d, spec, one),
    }
}

fn log_sql_error(spec: &TableSpec, stmt: &Stmt, e: &DbError) {
    tracing::error!(
        code = ?e.code,
        table = %spec.name,
        sql = %stmt.sql,
        params = ?stmt.params.first(),
        error = %e.message,
        "storage: SQL error {}; statement and data dumped",
        e.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
    );
}

async fn read_loop(
    shared: Arc<Shared>,
    backend: Rc<AnyBackend>,
    in_flight: Rc<std::cell::RefCell<Option<Rc<DirtyMap>>>>,
    mut rx: tokio::sync::mpsc::Receiver<ReadReq>,
) {
    // At most `pool_max` reads run at once; the rest wait in the bounded queue.
    let permits = Arc::new(tokio::sync::Semaphore::new(shared.config.pool_max));
    while let Some(req) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (shared, backend, in_flight) = (shared.clone(), backend.clone(), in_flight.clone());
        tokio::task::spawn_local(async move {
            let _permit = permit;
            match req {
                ReadReq::Load { table, key, ack } => {
                    let hit = {
                        let d = lock(&shared.dirty);
                        d.get(table, &key).cloned()
                    }
                    .or_else(|| {
                        in_flight
                            .borrow()
                            .as_ref()
                            .and_then(|m| m.get(table, &key).cloned())
                    });
                    if let Some(e) = hit {
                        shared.metrics.dirty_reads.fetch_add(1, Ordering::Relaxed);
                        ack.done(Ok((e.op != Op::Delete).then_some(e.values)));
                        return;
                    }
                    let spec = &shared.tables[table.index()];
                    let st = sql::select_one(backend.dialect(), spec, &key);
                    let t0 = Instant::now();
                    let r = backend.query_row(&st.sql, &key).await;
                    shared.metrics.statement(
                        StmtKind::Select,
                        u64::from(matches!(r, Ok(Some(_)))),
                        t0.elapsed(),
                        r.is_ok(),
                    );
                    ack.done(r.map_err(StorageError::from).map(|row| {
                        row.map(|v| {
                            if spec.columns.is_empty() {
                                Vec::new()
                            } else {
                                v
                            }
                        })
                    }));
                }
                ReadReq::Query { sql, params, ack } => {
                    let t0 = Instant::now();
                    let r = backend.query_all(&sql, &params).await;
                    let rows = r.as_ref().map_or(0, |v| v.len() as u64);
                    shared
                        .metrics
                        .statement(StmtKind::of_sql(&sql), rows, t0.elapsed(), r.is_ok());
                    ack.done(r.map_err(StorageError::from));
                }
            }
        });
    }
}
