//! State shared by the caller-facing handle, the journal thread and the flusher thread: the dirty
//! map, the flush requests and waiters, and the flags that order shutdown.
//!
//! Owns only data and its locking rule. Knows nothing of the journal file, the database or the queues
//! that feed the threads.

use super::config::StorageConfig;
use super::dirty::DirtyMap;
use super::metrics::Metrics;
use super::ticket::{AckGuard, FlushReport};
use super::{TableId, TableSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) struct Shared {
    pub(crate) config: StorageConfig,
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) names: HashMap<String, TableId>,
    pub(crate) metrics: Metrics,
    /// Locked by the two storage threads only; callers never touch it.
    pub(crate) dirty: Mutex<DirtyMap>,
    /// Signalled when the flusher empties the dirty map (the journal thread waits on it at
    /// `dirty_limit`).
    pub(crate) space: Condvar,
    pub(crate) flush_notify: tokio::sync::Notify,
    pub(crate) flush_requested: AtomicBool,
    pub(crate) flush_waiters: Mutex<Vec<AckGuard<FlushReport>>>,
    /// Network-class records in the dump file (rows a database outage kept from the database):
    /// while there are any, a load the dirty map and the snapshot cannot answer fails instead of
    /// reading what those records will overwrite. Set by the flusher.
    pub(crate) dump_network_pending: AtomicU64,
    /// Highest seq persisted (database or dump), set by the flusher.
    pub(crate) confirmed: AtomicU64,
    /// No new marks are accepted.
    pub(crate) closing: AtomicBool,
    /// The journal thread has taken every queued mark after `closing`.
    pub(crate) journal_drained: AtomicBool,
    /// The flusher has written its last flush and stopped.
    pub(crate) flusher_done: AtomicBool,
    /// Stop without a final flush (crash simulation for tests).
    pub(crate) halt: AtomicBool,
    /// Set by the opener (a signal during start-up): the connection retries of the open give up
    /// at once instead of running out their budget.
    pub(crate) open_stop: std::sync::Arc<AtomicBool>,
}

/// Locks `m`, ignoring poisoning: a panic elsewhere while holding one of these locks leaves plain
/// data behind (maps, lists), still consistent enough to keep persisting.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
