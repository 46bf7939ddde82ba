//! Embedded default backend: one SQLite file through `rusqlite` (bundled library, so nothing needs
//! installing). WAL journal, `synchronous = NORMAL`, cached prepared statements; a flush is one
//! transaction. Calls run synchronously on the flusher thread (they are local file I/O).
//!
//! Implements `backend::Backend`; knows nothing of the write-behind layer above it.

use super::backend::{Backend, DbError, Dialect, ErrorClass};
use super::config::StorageConfig;
use super::Value;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, ToSql};
use std::cell::RefCell;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// One connection to the database file.
pub struct SqliteBackend {
    conn: RefCell<Connection>,
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::UInt(u) => match i64::try_from(*u) {
                Ok(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
                // SQLite integers are signed 64-bit; larger values are stored as text, not wrapped.
                Err(_) => ToSqlOutput::Owned(rusqlite::types::Value::Text(u.to_string())),
            },
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn from_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// Sorts a rusqlite error: busy, locked, disk full and I/O errors are retried (and dumped as
/// network-class, replayed while running, past the budget); everything else is a SQL error with the
/// extended result code.
pub fn classify(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => DbError {
            class: match f.code {
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure => ErrorClass::Network,
                _ => ErrorClass::Sql,
            },
            code: Some(i64::from(f.extended_code)),
            message: msg.clone().unwrap_or_else(|| f.to_string()),
        },
        _ => DbError {
            class: ErrorClass::Sql,
            code: None,
            message: e.to_string(),
        },
    }
}

/// Creates the database file at `path` with mode 0600 if it does not exist: it holds password
/// hashes, and SQLite gives its WAL and shared-memory files the database file's mode. An existing
/// file keeps its mode; an empty file is an empty database to SQLite.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteBackend {
    /// Opens (creating) the file at [`StorageConfig::sqlite_path`], creating its directory.
    pub fn open(config: &StorageConfig) -> Result<SqliteBackend, DbError> {
        let path = config.sqlite_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::config(format!("create {}: {e}", dir.display())))?;
        }
        create_private(&path)
            .map_err(|e| DbError::config(format!("create {}: {e}", path.display())))?;
        let conn = Connection::open(&path).map_err(classify)?;
        conn.busy_timeout(Duration::from_millis(config.op_timeout_ms))
            .map_err(classify)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(classify)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(classify)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(SqliteBackend {
            conn: RefCell::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut c = self.conn.try_borrow_mut().map_err(|_| DbError {
            class: ErrorClass::Network,
            code: None,
            message: "sqlite connection busy".into(),
        })?;
        f(&mut c).map_err(classify)
    }
}

impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn exec(&self, sql: &str, params: &[Vec<Value>]) -> Result<u64, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(sql)?;
            let mut n = 0;
            for p in params {
                n += st.execute(rusqlite::params_from_iter(p.iter()))? as u64;
            }
            Ok(n)
        })
    }

    async fn exec_script(&self, statements: &[String]) -> Result<(), DbError> {
        self.with(|c| {
            for s in statements {
                c.execute_batch(s)?;
            }
            Ok(())
        })
    }

    async fn query_row(&self, sql: &str, params: &[Value]) -> Result<Option<Vec<Value>>, DbError> {
        Ok(self.query_all(sql, params).await?.into_iter().next())
    }

    async fn query_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(sql)?;
            let n = st.column_count();
            let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(from_ref(r.get_ref(i)?));
                }
                out.push(v);
            }
            Ok(out)
        })
    }

    async fn ping(&self) -> Result<(), DbError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn flush_begin(&self) -> Result<(), DbError> {
        self.with(|c| c.execute_batch("BEGIN IMMEDIATE"))
    }

    async fn flush_end(&self) -> Result<(), DbError> {
        self.with(|c| c.execute_batch("COMMIT"))
    }

    async fn close(self) {
        let c = self.conn.into_inner();
        if let Err((_, e)) = c.close() {
            tracing::warn!(error = %e, "sqlite close failed");
        }
    }
}
