//! Versioned schema migrations: applied at start when `auto_migrate` is on, or printed as one SQL
//! script (`lattice tool migrate --print`) for operators who apply schema changes by hand.
//!
//! Applied versions are recorded in `lattice_schema_migrations`. MySQL runs DDL outside transactions,
//! so a migration that fails half-way leaves its earlier statements applied and its version
//! unrecorded: write migrations that can be re-run (`IF NOT EXISTS`).
//!
//! Owns the migration list, its checks, apply/verify and the printed script. Knows databases only
//! through the `Backend` trait, and nothing of the write-behind threads.

use super::backend::Backend;
use super::config::{BackendKind, StorageConfig};
use super::metrics::{Metrics, StmtKind};
use super::{StorageError, Value};
use std::fmt::Write as _;
use std::time::Instant;

/// Table that records applied migrations.
pub const VERSION_TABLE: &str = "lattice_schema_migrations";

/// One schema version: statements for each backend (often the same text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Version, > 0, unique; applied in ascending order.
    pub version: u32,
    /// Short description.
    pub name: String,
    /// Statements for MySQL/MariaDB.
    pub mysql: Vec<String>,
    /// Statements for SQLite.
    pub sqlite: Vec<String>,
}

impl Migration {
    /// A migration with different SQL per backend.
    pub fn new(version: u32, name: &str, mysql: &[&str], sqlite: &[&str]) -> Migration {
        Migration {
            version,
            name: name.to_owned(),
            mysql: mysql.iter().map(|s| (*s).to_owned()).collect(),
            sqlite: sqlite.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A migration whose SQL works on both backends.
    pub fn portable(version: u32, name: &str, statements: &[&str]) -> Migration {
        Migration::new(version, name, statements, statements)
    }

    /// Statements for one backend.
    pub fn statements(&self, kind: BackendKind) -> &[String] {
        match kind {
            BackendKind::Mysql => &self.mysql,
            BackendKind::Sqlite => &self.sqlite,
        }
    }
}

fn version_table_sql(kind: BackendKind) -> String {
    match kind {
        BackendKind::Mysql => format!(
            "CREATE TABLE IF NOT EXISTS `{VERSION_TABLE}` (version INT UNSIGNED NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at_ms BIGINT NOT NULL) ENGINE=InnoDB"
        ),
        BackendKind::Sqlite => format!(
            "CREATE TABLE IF NOT EXISTS \"{VERSION_TABLE}\" (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"
        ),
    }
}

/// Sorts migrations by version; fails on version 0, duplicates, or an empty statement list.
pub fn check(migrations: &[Migration]) -> Result<Vec<&Migration>, StorageError> {
    let mut v: Vec<&Migration> = migrations.iter().collect();
    v.sort_by_key(|m| m.version);
    for w in v.windows(2) {
        if w[0].version == w[1].version {
            return Err(StorageError::Migration(format!(
                "version {} defined twice",
                w[0].version
            )));
        }
    }
    if let Some(m) = v.iter().find(|m| m.version == 0) {
        return Err(StorageError::Migration(format!(
            "migration {:?}: version must be > 0",
            m.name
        )));
    }
    if let Some(m) = v.iter().find(|m| m.mysql.is_empty() || m.sqlite.is_empty()) {
        return Err(StorageError::Migration(format!(
            "migration {} has no statements",
            m.version
        )));
    }
    Ok(v)
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The whole schema as one script for `kind`: create the database (MySQL), the version table, then
/// every migration followed by the row that records it (`INSERT IGNORE` / `INSERT OR IGNORE`, so the
/// script can be applied twice). Statements end with `;` on their own line.
pub fn print_sql_for(
    kind: BackendKind,
    database: &str,
    migrations: &[Migration],
) -> Result<String, StorageError> {
    let ms = check(migrations)?;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "-- Lattice schema for {} database {database}: {} migration(s)",
        kind.as_str(),
        ms.len()
    );
    if kind == BackendKind::Mysql {
        let _ = writeln!(
            o,
            "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4;"
        );
        let _ = writeln!(o, "USE `{database}`;");
    }
    let _ = writeln!(o, "{};", version_table_sql(kind));
    let now = match kind {
        BackendKind::Mysql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        BackendKind::Sqlite => "CAST(strftime('%s','now') AS INTEGER) * 1000",
    };
    // The script may run again (an operator re-applying it): a version already recorded keeps its
    // row, so every statement of the script is idempotent.
    let insert = match kind {
        BackendKind::Mysql => "INSERT IGNORE INTO",
        BackendKind::Sqlite => "INSERT OR IGNORE INTO",
    };
    for m in ms {
        let _ = writeln!(o, "\n-- version {}: {}", m.version, m.name);
        for s in m.statements(kind) {
            let _ = writeln!(o, "{};", s.trim_end().trim_end_matches(';'));
        }
        let _ = writeln!(
            o,
            "{insert} {VERSION_TABLE} (version, name, applied_at_ms) VALUES ({}, {}, {now});",
            m.version,
            sql_str(&m.name)
        );
    }
    Ok(o)
}

/// [`print_sql_for`] with the backend and database name of `config`.
pub fn print_sql(config: &StorageConfig, migrations: &[Migration]) -> Result<String, StorageError> {
    print_sql_for(config.backend, &config.database_name(), migrations)
}

/// Applied versions, ascending.
pub async fn applied<B: Backend>(b: &B, kind: BackendKind) -> Result<Vec<u32>, StorageError> {
    b.exec_script(&[version_table_sql(kind)]).await?;
    let rows = b
        .query_all(
            &format!("SELECT version FROM {VERSION_TABLE} ORDER BY version"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_i64))
        .filter_map(|v| u32::try_from(v).ok())
        .collect())
}

/// Applies every migration not yet recorded, in order; returns the versions applied now.
pub async fn apply<B: Backend>(
    b: &B,
    kind: BackendKind,
    migrations: &[Migration],
    metrics: &Metrics,
) -> Result<Vec<u32>, StorageError> {
    let ms = check(migrations)?;
    let done = applied(b, kind).await?;
    warn_if_newer(done.iter().map(|&v| i64::from(v)), &ms);
    let mut now_applied = Vec::new();
    for m in ms.into_iter().filter(|m| !done.contains(&m.version)) {
        let t0 = Instant::now();
        let r = b.exec_script(m.statements(kind)).await;
        metrics.statement(StmtKind::Ddl, 0, t0.elapsed(), r.is_ok());
        r.map_err(|e| StorageError::Migration(format!("version {} ({}): {e}", m.version, m.name)))?;
        b.exec(
            &format!("INSERT INTO {VERSION_TABLE} (version, name, applied_at_ms) VALUES (?, ?, ?)"),
            &[vec![
                Value::Int(i64::from(m.version)),
                Value::Text(m.name.clone()),
                Value::Int(super::dump::now_ms() as i64),
            ]],
        )
        .await?;
        tracing::info!(version = m.version, name = %m.name, "applied migration");
        now_applied.push(m.version);
    }
    Ok(now_applied)
}

/// Logs a `WARN` when the database records a version above every migration this binary knows (a
/// newer binary ran on it, e.g. before a rollback): the server still starts.
fn warn_if_newer(done: impl Iterator<Item = i64>, ms: &[&Migration]) {
    let known_max = ms.last().map_or(0, |m| m.version);
    if let Some(newer) = done.filter(|&v| v > i64::from(known_max)).max() {
        tracing::warn!(
            version = newer,
            known_max,
            "database schema is newer than this binary's migrations"
        );
    }
}

/// Fails unless every migration is recorded (used when `auto_migrate` is off).
pub async fn verify<B: Backend>(b: &B, migrations: &[Migration]) -> Result<(), StorageError> {
    let ms = check(migrations)?;
    let rows = b
        .query_all(&format!("SELECT version FROM {VERSION_TABLE}"), &[])
        .await
        .map_err(|e| {
            StorageError::Migration(format!(
                "cannot read {VERSION_TABLE} ({e}); apply `lattice tool migrate --print` first"
            ))
        })?;
    let done: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_i64))
        .collect();
    warn_if_newer(done.iter().copied(), &ms);
    let missing: Vec<u32> = ms
        .iter()
        .map(|m| m.version)
        .filter(|v| !done.contains(&i64::from(*v)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StorageError::Migration(format!(
            "schema versions {missing:?} not applied and auto_migrate is off; apply `lattice tool migrate --print`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_and_check() {
        let ms = vec![
            Migration::portable(2, "add note", &["ALTER TABLE kv ADD COLUMN note TEXT"]),
            Migration::new(
                1,
                "kv's table",
                &["CREATE TABLE kv (id BIGINT PRIMARY KEY) ENGINE=InnoDB"],
                &["CREATE TABLE kv (id BIGINT PRIMARY KEY)"],
            ),
        ];
        let s = print_sql_for(BackendKind::Mysql, "logic0", &ms).expect("prints");
        assert!(s.contains("CREATE DATABASE IF NOT EXISTS `logic0`"));
        let p1 = s.find("ENGINE=InnoDB;").expect("v1");
        let p2 = s.find("ADD COLUMN note TEXT;").expect("v2");
        assert!(p1 < p2, "ordered by version");
        assert!(s.contains("VALUES (1, 'kv''s table',"), "{s}");
        let s = print_sql_for(BackendKind::Sqlite, "logic0", &ms).expect("prints");
        assert!(!s.contains("CREATE DATABASE"));
        assert!(s.contains("CREATE TABLE kv (id BIGINT PRIMARY KEY);"));
        let dup = vec![
            Migration::portable(1, "a", &["x"]),
            Migration::portable(1, "b", &["y"]),
        ];
        assert!(matches!(check(&dup), Err(StorageError::Migration(_))));
        assert!(check(&[Migration::portable(0, "zero", &["x"])]).is_err());
        assert!(check(&[Migration::portable(3, "empty", &[])]).is_err());
    }
}
