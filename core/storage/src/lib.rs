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
//! *flusher thread* runs a tokio current-thread runtime for the database client. This crate knows
//! nothing of the network code or the shard runtime.
//!
//! Where things live (each module's doc says what it owns and what it must not know):
//!
//! * engine: [`write_behind`] (the public [`Storage`] / [`StorageHandle`]: validation, queues, open
//!   and shutdown), `journal_thread` (journals marks, completes their tickets, writes checkpoints),
//!   `flusher` (writes dirty rows in batches, retries, dumps and replays), `reads` (load and query,
//!   answered from dirty and in-flight rows first), `shared` (the state those three share), and
//!   [`ticket`] (the tickets callers wait on and the values they complete with);
//! * data and files: `schema` ([`TableSpec`], [`Schema`], [`Op`]), [`value`], [`dirty`] (coalescing),
//!   [`journal`], [`dump`], [`sql`] (statement text), [`migrate`], [`config`] (defaults in
//!   `storage.toml`), [`metrics`], `error` ([`StorageError`]), `ident` (the identifier rule);
//! * databases: [`backend`] (the trait, dialect and error classes), [`mysql`], [`sqlite`], and
//!   [`connect`] (the only module that knows both backends: picks one from the config);
//! * beside the engine, for tools and the center: [`direct`] (a blocking connection that writes at
//!   once, never journaled), [`lease`] (machine-id lease rows over it) and [`backup`] (backup
//!   files and their restore).
//!
//! Imports go one way, from the engine down to the data modules and the backend trait; no module
//! imports one that imports it.

pub mod backend;
pub mod backup;
pub mod config;
pub mod connect;
pub mod direct;
pub mod dirty;
pub mod dump;
mod error;
mod flusher;
mod ident;
pub mod journal;
mod journal_thread;
pub mod lease;
mod mark_queue;
pub mod metrics;
pub mod migrate;
pub mod mysql;
mod reads;
mod schema;
mod shared;
pub mod sql;
pub mod sqlite;
pub mod ticket;
pub mod value;
pub mod write_behind;

pub use config::{BackendKind, FsyncPolicy, StorageConfig};
pub use error::StorageError;
pub use metrics::{MetricsSnapshot, StmtKind};
pub use migrate::Migration;
pub use schema::{Op, Schema, TableId, TableSpec};
pub use ticket::{FlushReport, FlushTicket, LoadTicket, MarkAck, MarkTicket, QueryTicket};
pub use value::Value;
pub use write_behind::{Storage, StorageHandle};
