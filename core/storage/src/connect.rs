//! Picks the backend the configuration names and opens it, behind one type the flusher can hold.
//!
//! Owns the only place that knows both concrete backends, so neither `backend.rs` nor the engine
//! has to. Knows nothing of flushing, retries or the journal.

use super::backend::{Backend, DbError, Dialect};
use super::config::{BackendKind, StorageConfig};
use super::mysql::MysqlBackend;
use super::sqlite::SqliteBackend;
use super::Value;

/// Either backend, chosen by the config at run time.
pub enum AnyBackend {
    /// MySQL / MariaDB.
    Mysql(MysqlBackend),
    /// SQLite.
    Sqlite(SqliteBackend),
}

impl Backend for AnyBackend {
    fn dialect(&self) -> Dialect {
        match self {
            AnyBackend::Mysql(b) => b.dialect(),
            AnyBackend::Sqlite(b) => b.dialect(),
        }
    }

    async fn exec(&self, sql: &str, params: &[Vec<Value>]) -> Result<u64, DbError> {
        match self {
            AnyBackend::Mysql(b) => b.exec(sql, params).await,
            AnyBackend::Sqlite(b) => b.exec(sql, params).await,
        }
    }

    async fn exec_script(&self, statements: &[String]) -> Result<(), DbError> {
        match self {
            AnyBackend::Mysql(b) => b.exec_script(statements).await,
            AnyBackend::Sqlite(b) => b.exec_script(statements).await,
        }
    }

    async fn query_row(&self, sql: &str, params: &[Value]) -> Result<Option<Vec<Value>>, DbError> {
        match self {
            AnyBackend::Mysql(b) => b.query_row(sql, params).await,
            AnyBackend::Sqlite(b) => b.query_row(sql, params).await,
        }
    }

    async fn query_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        match self {
            AnyBackend::Mysql(b) => b.query_all(sql, params).await,
            AnyBackend::Sqlite(b) => b.query_all(sql, params).await,
        }
    }

    async fn ping(&self) -> Result<(), DbError> {
        match self {
            AnyBackend::Mysql(b) => b.ping().await,
            AnyBackend::Sqlite(b) => b.ping().await,
        }
    }

    async fn flush_begin(&self) -> Result<(), DbError> {
        match self {
            AnyBackend::Mysql(b) => b.flush_begin().await,
            AnyBackend::Sqlite(b) => b.flush_begin().await,
        }
    }

    async fn flush_end(&self) -> Result<(), DbError> {
        match self {
            AnyBackend::Mysql(b) => b.flush_end().await,
            AnyBackend::Sqlite(b) => b.flush_end().await,
        }
    }

    async fn close(self) {
        match self {
            AnyBackend::Mysql(b) => b.close().await,
            AnyBackend::Sqlite(b) => b.close().await,
        }
    }
}

/// Opens the configured backend once; the caller decides whether to retry.
pub(crate) async fn connect(cfg: &StorageConfig) -> Result<AnyBackend, DbError> {
    match cfg.backend {
        BackendKind::Mysql => Ok(AnyBackend::Mysql(MysqlBackend::connect(cfg).await?)),
        BackendKind::Sqlite => Ok(AnyBackend::Sqlite(SqliteBackend::open(cfg)?)),
    }
}
