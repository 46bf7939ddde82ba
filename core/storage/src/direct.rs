//! A blocking connection to the configured database, outside the write-behind engine: for operator
//! tools (`lattice tool …`) and for the center's machine-id lease, which needs compare-and-set
//! statements and must not wait behind the flusher's batches or retries.
//!
//! Owns one backend connection (MySQL: a small pool; SQLite: one connection to the same file, which
//! WAL lets a running server share) and a private tokio current-thread runtime that drives it. Knows
//! nothing of the journal, the dirty map or the dump file: what it writes is written at once, never
//! journaled. Never call it from a shard thread: every call blocks the calling thread for up to
//! `op_timeout_ms`.

use super::backend::{Backend, Dialect};
use super::config::{BackendKind, StorageConfig};
use super::connect::{connect, AnyBackend};
use super::metrics::Metrics;
use super::{migrate, Migration, StorageError, Value};

/// One blocking connection. Not `Send`-shared: give each thread its own.
pub struct Direct {
    rt: tokio::runtime::Runtime,
    backend: Option<AnyBackend>,
    kind: BackendKind,
    database: String,
}

impl Direct {
    /// Connects once (no retry: the caller decides). MySQL with `auto_migrate` creates the database
    /// if it is missing, as the engine does. Fails with [`StorageError::Db`] when the server is
    /// unreachable or the URL is bad, [`StorageError::Config`] for a bad configuration.
    pub fn open(config: &StorageConfig) -> Result<Direct, StorageError> {
        config.validate()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StorageError::Config(format!("tokio runtime: {e}")))?;
        let backend = rt.block_on(connect(config))?;
        Ok(Direct {
            rt,
            backend: Some(backend),
            kind: config.backend,
            database: config.database_name(),
        })
    }

    fn b(&self) -> &AnyBackend {
        self.backend
            .as_ref()
            .expect("backend is present until drop")
    }

    /// The SQL flavour of the connection.
    pub fn dialect(&self) -> Dialect {
        self.b().dialect()
    }

    /// The backend kind.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The database name in use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Executes one statement; returns the rows it changed (MySQL counts changed rows only).
    pub fn exec(&self, sql: &str, params: Vec<Value>) -> Result<u64, StorageError> {
        Ok(self.rt.block_on(self.b().exec(sql, &[params]))?)
    }

    /// Executes statements without parameters, in order (DDL).
    pub fn exec_script(&self, statements: &[String]) -> Result<(), StorageError> {
        Ok(self.rt.block_on(self.b().exec_script(statements))?)
    }

    /// All rows of a query. Keep results small: they are held in memory.
    pub fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Vec<Value>>, StorageError> {
        Ok(self.rt.block_on(self.b().query_all(sql, &params))?)
    }

    /// Applies missing migrations (with `auto_migrate`) or checks that all are applied (without),
    /// exactly as [`super::Storage::open`] does; returns the versions applied now.
    pub fn migrate(
        &self,
        migrations: &[Migration],
        auto_migrate: bool,
    ) -> Result<Vec<u32>, StorageError> {
        if auto_migrate {
            self.rt.block_on(migrate::apply(
                self.b(),
                self.kind,
                migrations,
                &Metrics::default(),
            ))
        } else {
            self.rt.block_on(migrate::verify(self.b(), migrations))?;
            Ok(Vec::new())
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if let Some(b) = self.backend.take() {
            self.rt.block_on(b.close());
        }
    }
}
