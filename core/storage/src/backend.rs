//! The backend trait both databases implement, the SQL dialect a backend speaks, and the error
//! classification the flusher acts on.
//!
//! Owns the contract between the write-behind layer and a database. Knows no concrete backend: they
//! import this module, never the reverse (`connect.rs` picks one at run time).

use super::Value;
use std::fmt;
use std::future::Future;

/// SQL flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL / MariaDB.
    Mysql,
    /// SQLite 3.24+.
    Sqlite,
}

/// How the flusher treats a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Lost connection, refused connection, timeout, server going away, deadlock: retried with backoff,
    /// then dumped.
    Network,
    /// The statement itself is wrong for the data (syntax, constraint, type): dumped at once with the
    /// server's code, never retried.
    Sql,
    /// Bad URL or settings: nothing to retry.
    Config,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Network => "network",
            ErrorClass::Sql => "sql",
            ErrorClass::Config => "config",
        })
    }
}

/// A database error with its class and the server's error code when there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{class} error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
pub struct DbError {
    /// Retry or not.
    pub class: ErrorClass,
    /// Server error code (MySQL error number; SQLite extended result code).
    pub code: Option<i64>,
    /// Message.
    pub message: String,
}

impl DbError {
    /// A network-class error without a code.
    pub fn network(message: impl Into<String>) -> DbError {
        DbError {
            class: ErrorClass::Network,
            code: None,
            message: message.into(),
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> DbError {
        DbError {
            class: ErrorClass::Config,
            code: None,
            message: message.into(),
        }
    }

    /// Whether the flusher retries it.
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Network
    }
}

/// A database the write-behind layer can write to. Calls run on the flusher thread's runtime; each
/// is bounded by the configured operation timeout (the implementation enforces it).
pub trait Backend {
    /// SQL flavour for statement text.
    fn dialect(&self) -> Dialect;

    /// Executes `sql` once per parameter set (all on one connection, in order); returns the affected
    /// rows summed. An empty `params` executes nothing.
    fn exec(&self, sql: &str, params: &[Vec<Value>]) -> impl Future<Output = Result<u64, DbError>>;

    /// Executes statements without parameters (migrations), in order.
    fn exec_script(&self, statements: &[String]) -> impl Future<Output = Result<(), DbError>>;

    /// First row of a query, as values.
    fn query_row(
        &self,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<Option<Vec<Value>>, DbError>>;

    /// All rows of a query (used by migrations and tests; keep results small).
    fn query_all(
        &self,
        sql: &str,
        params: &[Value],
    ) -> impl Future<Output = Result<Vec<Vec<Value>>, DbError>>;

    /// Checks the connection.
    fn ping(&self) -> impl Future<Output = Result<(), DbError>>;

    /// Called before a flush writes its statements (SQLite opens a transaction; MySQL autocommits each
    /// statement).
    fn flush_begin(&self) -> impl Future<Output = Result<(), DbError>>;

    /// Called after a flush (SQLite commits).
    fn flush_end(&self) -> impl Future<Output = Result<(), DbError>>;

    /// Closes connections.
    fn close(self) -> impl Future<Output = ()>;
}
