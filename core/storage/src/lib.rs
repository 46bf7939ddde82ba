//! Write-behind persistence that never loses an acknowledged write.
//!
//! Services keep their state in memory and *mark* rows dirty ([`StorageHandle::mark`]); a mark is
//! appended to a [`journal`] before it is acknowledged, coalesced per `(table, key)` in memory, and
//! written to the database in batches by a flusher thread at an interval, when the dirty count reaches a
//! bound, or on request ([`StorageHandle::flush_and_wait`]). Failed writes are retried with exponential
//! backoff, then appended to a [`dump`] file that is replayed at the next start (and, for network
//! failures, before the next write, so newer data is never overwritten by an older dumped row).
//!
//! Backends sit behind [`backend::Backend`]: MySQL/MariaDB ([`mysql`], `mysql_async`) and the embedded
//! default SQLite ([`sqlite`], `rusqlite` with the bundled library).
//!
//! Threading (see `docs/STORAGE.md`): callers (shard threads) only push into a bounded queue and get a
//! [`MarkTicket`] back; a *journal thread* appends to the journal, then completes the tickets; a
//! *flusher thread* runs a tokio current-thread runtime for the database client. This module knows
//! nothing of the network code or the shard runtime.

pub mod backend;
pub mod config;
pub mod connect;
pub mod dirty;
pub mod dump;
mod flusher;
pub mod journal;
mod journal_thread;
pub mod metrics;
pub mod migrate;
pub mod mysql;
mod reads;
mod shared;
pub mod sql;
pub mod sqlite;
pub mod ticket;
pub mod value;
pub mod write_behind;

pub use config::{BackendKind, FsyncPolicy, StorageConfig};
pub use metrics::{MetricsSnapshot, StmtKind};
pub use migrate::Migration;
pub use ticket::{FlushReport, FlushTicket, LoadTicket, MarkAck, MarkTicket, QueryTicket};
pub use value::Value;
pub use write_behind::{Storage, StorageHandle};

use std::fmt;

/// What a mark does to a row. Insert and update carry the full row (every non-key column).
///
/// Coalescing between two flushes: the newest op wins, except that an `Update` after an `Insert` stays an
/// `Insert` (with the new values), so a row created and then changed is still created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create the row, or overwrite it if it exists (an upsert: replaying it is harmless).
    Insert,
    /// Overwrite the non-key columns of an existing row (`UPDATE ... WHERE key`); no row, no effect.
    Update,
    /// Remove the row if it exists.
    Delete,
}

impl Op {
    pub(crate) fn code(self) -> u8 {
        match self {
            Op::Insert => 1,
            Op::Update => 2,
            Op::Delete => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Op> {
        match c {
            1 => Some(Op::Insert),
            2 => Some(Op::Update),
            3 => Some(Op::Delete),
            _ => None,
        }
    }
}

/// Index of a registered table, returned by [`StorageHandle::table`]. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub(crate) u16);

impl TableId {
    /// Position of the table in the [`Schema`] it was registered with.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Id of the first registered table (for building statements by hand in tests and tools).
    pub fn first() -> TableId {
        TableId(0)
    }
}

/// Shape of a table the write-behind layer writes: its name, key columns and the other columns, in the
/// order marks give their values. The table itself is created by a [`Migration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub(crate) name: String,
    pub(crate) key: Vec<String>,
    pub(crate) columns: Vec<String>,
}

impl TableSpec {
    /// Describes a table. Names must be `[A-Za-z0-9_]{1,64}` (they are spliced into SQL); at least one
    /// key column is required. Fails with [`StorageError::Schema`] otherwise.
    pub fn new(name: &str, key: &[&str], columns: &[&str]) -> Result<TableSpec, StorageError> {
        check_ident(name)?;
        if key.is_empty() {
            return Err(StorageError::Schema(format!("table {name}: no key column")));
        }
        for c in key.iter().chain(columns) {
            check_ident(c)?;
        }
        let mut all: Vec<&str> = key.iter().chain(columns).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(StorageError::Schema(format!(
                "table {name}: duplicate column"
            )));
        }
        Ok(TableSpec {
            name: name.to_owned(),
            key: key.iter().map(|s| (*s).to_owned()).collect(),
            columns: columns.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key column names.
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// Non-key column names, in mark order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

pub(crate) fn check_ident(s: &str) -> Result<(), StorageError> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Schema(format!(
            "identifier {s:?} is not [A-Za-z0-9_]{{1,64}}"
        )))
    }
}

/// Tables and migrations a [`Storage`] is opened with.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) migrations: Vec<Migration>,
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Schema {
        Schema::default()
    }

    /// Adds a table; fails with [`StorageError::Schema`] on a duplicate name or past 65,535 tables.
    pub fn table(mut self, spec: TableSpec) -> Result<Schema, StorageError> {
        if self.tables.iter().any(|t| t.name == spec.name) {
            return Err(StorageError::Schema(format!(
                "table {} registered twice",
                spec.name
            )));
        }
        if self.tables.len() >= u16::MAX as usize {
            return Err(StorageError::Schema("too many tables".into()));
        }
        self.tables.push(spec);
        Ok(self)
    }

    /// Adds a migration (applied in version order when `auto_migrate` is on).
    pub fn migration(mut self, m: Migration) -> Schema {
        self.migrations.push(m);
        self
    }

    /// The registered migrations.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The registered tables.
    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The configuration is unusable (missing URL, bad path, bad bound).
    #[error("storage config: {0}")]
    Config(String),
    /// A table or column definition is invalid, or a journal entry names an unknown table.
    #[error("storage schema: {0}")]
    Schema(String),
    /// A mark has the wrong number of key or column values for its table.
    #[error("table {table}: expected {expected} {what} values, got {got}")]
    Arity {
        /// Table name.
        table: String,
        /// "key" or "column".
        what: &'static str,
        /// Values the table needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The table id does not belong to this storage.
    #[error("unknown table id {0}")]
    UnknownTable(u16),
    /// The mark queue is full (the journal thread is behind or the dirty limit is reached). Nothing was
    /// recorded; retry later. Counted as `backpressure`.
    #[error("storage queue full ({0} pending)")]
    Backpressure(usize),
    /// A mark's encoded size exceeds the journal's record limit (16 MiB).
    #[error("row too large for the journal: {0} bytes")]
    RowTooLarge(usize),
    /// The storage is shutting down or its threads are gone.
    #[error("storage is closed")]
    Closed,
    /// The journal could not be written or read; the mark was NOT acknowledged.
    #[error("journal: {0}")]
    Journal(String),
    /// The dump file could not be read or written.
    #[error("dump file: {0}")]
    Dump(String),
    /// A database call failed (after retries where they apply).
    #[error("database: {0}")]
    Db(#[from] backend::DbError),
    /// A migration failed or the migration list is inconsistent.
    #[error("migration: {0}")]
    Migration(String),
    /// A wait ran out of time; the operation may still complete later.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        })
    }
}
