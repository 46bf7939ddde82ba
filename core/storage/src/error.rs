//! The error type of the storage layer's public API.
//!
//! Owns the error variants and their messages. Knows no backend beyond the classified [`DbError`]
//! they report.

use super::backend::DbError;

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
    Db(#[from] DbError),
    /// A migration failed or the migration list is inconsistent.
    #[error("migration: {0}")]
    Migration(String),
    /// A backup or restore failed (nothing was restored or no backup file was left).
    #[error("{0}")]
    Backup(String),
    /// A wait ran out of time; the operation may still complete later.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}
