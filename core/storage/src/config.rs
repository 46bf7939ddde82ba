//! `[storage]` configuration: one typed struct with defaults.
//!
//! Owns the settings, their defaults (parsed from `storage.toml`, their one source) and their
//! validation. Knows nothing of the threads or backends that read them.

use super::StorageError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Which database the write-behind layer writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Embedded SQLite file (default: works with no database server).
    #[default]
    Sqlite,
    /// MySQL or MariaDB through `mysql_async`.
    Mysql,
}

impl BackendKind {
    /// Lower-case name, as in the config file and dump records.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Mysql => "mysql",
        }
    }
}

/// When the journal calls `fsync`. Every policy writes each mark to the OS (a `write(2)`) before the
/// mark is acknowledged, so all three survive `kill -9` of the process; they differ on power loss or a
/// kernel crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fdatasync` before acknowledging each group of marks (group commit): survives power loss.
    Always,
    /// `fdatasync` at most every `fsync_interval_ms`: a power loss loses at most that window.
    #[default]
    Interval,
    /// Never call `fsync`; the OS writes back when it likes (typically within 30 s).
    Os,
}

/// Storage settings, section `[storage]` of the server config. Every field has a default, given in
/// [`DEFAULTS`] (`storage.toml`); unknown keys are rejected.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `"sqlite"` (default) or `"mysql"`.
    pub backend: BackendKind,
    /// MySQL: `mysql://user:pass@host:port[/ignored]` (the database name comes from `database`).
    /// SQLite: path of the database file (default `<data_dir>/<database>.sqlite3`).
    /// An empty string means "not set" (TOML has no null).
    #[serde(deserialize_with = "empty_as_none")]
    pub url: Option<String>,
    /// Database name; default `<role><machine_id>`, e.g. `logic1`. Empty = not set.
    #[serde(deserialize_with = "empty_as_none")]
    pub database: Option<String>,
    /// Role part of the default database name.
    pub role: String,
    /// Machine-id part of the default database name.
    pub machine_id: u32,
    /// Directory for the default journal, dump and SQLite paths.
    pub data_dir: PathBuf,
    /// Journal directory (segments); default `<data_dir>/<database>.journal`. Empty = not set.
    #[serde(deserialize_with = "empty_as_none")]
    pub journal_dir: Option<PathBuf>,
    /// Journal fsync policy.
    pub fsync: FsyncPolicy,
    /// Interval for [`FsyncPolicy::Interval`], in ms.
    pub fsync_interval_ms: u64,
    /// A journal segment is closed past this size; closed segments are deleted once every mark in
    /// them is written to the database (or the dump file).
    pub journal_segment_bytes: u64,
    /// Most marks appended in one journal write (one group commit).
    pub journal_batch: usize,
    /// Bound of the queue between callers and the journal thread; a full queue rejects marks with
    /// [`StorageError::Backpressure`].
    pub queue_capacity: usize,
    /// Flush dirty rows at least this often, in ms.
    pub flush_interval_ms: u64,
    /// Flush early once this many distinct rows are dirty.
    pub dirty_bound: usize,
    /// Hard bound on distinct dirty rows: past it the journal thread stops taking marks (the queue then
    /// fills and rejects) until the flusher drains the map.
    pub dirty_limit: usize,
    /// Most rows in one multi-row statement (1 = one statement per row).
    pub batch_rows: usize,
    /// Retries of a statement after a network error, before it goes to the dump file.
    pub retry_max: u32,
    /// First retry delay in ms; doubles each retry.
    pub retry_backoff_ms: u64,
    /// Largest retry delay in ms.
    pub retry_backoff_max_ms: u64,
    /// Dump file (JSON lines); default `<data_dir>/<database>.dump.jsonl`.
    #[serde(deserialize_with = "empty_as_none")]
    pub dump_path: Option<PathBuf>,
    /// Most dump records replayed at start or before a flush in one pass.
    pub dump_replay_max: usize,
    /// Apply migrations (and create the MySQL database) at start. Off in production, where operators
    /// apply `lattice tool migrate --print` by script.
    pub auto_migrate: bool,
    /// MySQL pool: connections kept open.
    pub pool_min: usize,
    /// MySQL pool: most connections.
    pub pool_max: usize,
    /// Ping the database when idle at this interval, in ms (0 = never).
    pub ping_interval_ms: u64,
    /// Time limit for one database call, in ms.
    pub op_timeout_ms: u64,
    /// Bound of the read-request queue to the flusher thread.
    pub read_queue: usize,
}

/// The documented defaults of the `[storage]` section: the one source of every default below. The
/// server makes it part of its configuration schema (so `lattice --help` lists it), and
/// [`StorageConfig::default`] parses it.
pub const DEFAULTS: &str = include_str!("storage.toml");

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig::from_toml("").expect("storage.toml matches StorageConfig")
    }
}

impl StorageConfig {
    /// The defaults with the keys of `text` (the body of a `[storage]` section) over them.
    /// Unknown keys and wrong types are errors.
    pub fn from_toml(text: &str) -> Result<StorageConfig, toml::de::Error> {
        let defaults: toml::Table = DEFAULTS.parse().expect("storage.toml parses");
        let mut section = match defaults.get("storage") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => unreachable!("storage.toml has a [storage] section"),
        };
        let overrides: toml::Table = text.parse()?;
        section.extend(overrides);
        toml::Value::Table(section).try_into()
    }
}

impl StorageConfig {
    /// The database name: `database`, or `<role><machine_id>`.
    pub fn database_name(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("{}{}", self.role, self.machine_id))
    }

    /// Journal directory actually used.
    pub fn journal_dir(&self) -> PathBuf {
        self.journal_dir.clone().unwrap_or_else(|| {
            self.data_dir
                .join(format!("{}.journal", self.database_name()))
        })
    }

    /// Dump file actually used.
    pub fn dump_path(&self) -> PathBuf {
        self.dump_path.clone().unwrap_or_else(|| {
            self.data_dir
                .join(format!("{}.dump.jsonl", self.database_name()))
        })
    }

    /// SQLite file actually used.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.url {
            Some(u) => PathBuf::from(u.strip_prefix("sqlite://").unwrap_or(u)),
            None => self
                .data_dir
                .join(format!("{}.sqlite3", self.database_name())),
        }
    }

    /// Flush interval as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Checks bounds and names; fails with [`StorageError::Config`] naming the key.
    pub fn validate(&self) -> Result<(), StorageError> {
        self.check()
            .map_err(|(key, m)| StorageError::Config(format!("{key}: {m}")))
    }

    /// Checks bounds and names; on failure, the key at fault (`storage.<key>`) and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = |key: &'static str, m: &str| Err((key, m.to_owned()));
        if super::ident::check_ident(&self.database_name()).is_err() {
            let key = if self.database.is_some() {
                "storage.database"
            } else {
                "storage.role"
            };
            return Err((
                key,
                format!(
                    "database name {:?} is not [A-Za-z0-9_]{{1,64}}",
                    self.database_name()
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad(
                "storage.data_dir",
                "must not be empty (\".\" for the working directory)",
            );
        }
        if self.backend == BackendKind::Mysql && self.url.is_none() {
            return bad(
                "storage.url",
                "backend = \"mysql\" needs url = \"mysql://user:pass@host:port\"",
            );
        }
        if let Some(u) = &self.url {
            if self.backend == BackendKind::Mysql {
                if let Err(e) = mysql_async::Opts::from_url(u) {
                    return Err((
                        "storage.url",
                        format!("url is not a MySQL URL (mysql://user:pass@host:port): {e}"),
                    ));
                }
            } else if u.starts_with("mysql://") {
                // Taken as an SQLite file path it would silently make a file named like the URL.
                return bad(
                    "storage.url",
                    "is a mysql:// URL but storage.backend is \"sqlite\" (the url is then a file path): set storage.backend = \"mysql\"",
                );
            }
        }
        let positive: [(&'static str, u64); 8] = [
            ("storage.queue_capacity", self.queue_capacity as u64),
            ("storage.journal_batch", self.journal_batch as u64),
            ("storage.batch_rows", self.batch_rows as u64),
            ("storage.dirty_limit", self.dirty_limit as u64),
            ("storage.flush_interval_ms", self.flush_interval_ms),
            ("storage.op_timeout_ms", self.op_timeout_ms),
            ("storage.read_queue", self.read_queue as u64),
            ("storage.dump_replay_max", self.dump_replay_max as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return bad(key, "must be > 0");
            }
        }
        if self.dirty_bound == 0 || self.dirty_bound > self.dirty_limit {
            return bad("storage.dirty_bound", "need 0 < dirty_bound <= dirty_limit");
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return bad(
                "storage.fsync_interval_ms",
                "fsync = \"interval\" needs fsync_interval_ms > 0",
            );
        }
        if self.pool_max == 0 {
            return bad("storage.pool_max", "must be > 0");
        }
        if self.pool_min > self.pool_max {
            return bad("storage.pool_min", "need pool_min <= pool_max");
        }
        if self.journal_segment_bytes < 4096 {
            return bad("storage.journal_segment_bytes", "must be >= 4096");
        }
        if self.retry_backoff_ms > self.retry_backoff_max_ms {
            return bad(
                "storage.retry_backoff_ms",
                "need retry_backoff_ms <= retry_backoff_max_ms",
            );
        }
        Ok(())
    }

    /// Delay before retry number `attempt` (1-based): `retry_backoff_ms * 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        let ms = self
            .retry_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.retry_backoff_max_ms);
        Duration::from_millis(ms)
    }
}

/// Deserialises an optional string-like value where `""` means `None`.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(T::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let key = |toml: &str| {
            StorageConfig::from_toml(toml)
                .expect("parses")
                .check()
                .expect_err(toml)
                .0
        };
        assert_eq!(key("dirty_limit = 5"), "storage.dirty_bound");
        assert_eq!(key("dirty_limit = 0"), "storage.dirty_limit");
        assert_eq!(key("batch_rows = 0"), "storage.batch_rows");
        assert_eq!(key("role = \"bad-role\""), "storage.role");
        assert_eq!(key("pool_min = 9"), "storage.pool_min");
        assert_eq!(
            key("retry_backoff_ms = 10000\nretry_backoff_max_ms = 5000"),
            "storage.retry_backoff_ms"
        );
        assert_eq!(key("url = \"mysql://u:p@127.0.0.1:3306\""), "storage.url");
        assert_eq!(key("data_dir = \"\""), "storage.data_dir");
    }

    #[test]
    fn defaults_and_toml() {
        let c = StorageConfig::from_toml("").expect("empty section parses");
        assert_eq!(c.backend, BackendKind::Sqlite);
        assert_eq!(c.database_name(), "logic0");
        c.validate().expect("defaults are valid");
        let c = StorageConfig::from_toml(
            "backend = \"mysql\"\nurl = \"mysql://u:p@127.0.0.1:3306\"\nrole = \"gate\"\nmachine_id = 7\nfsync = \"always\"",
        )
        .expect("parses");
        assert_eq!(c.database_name(), "gate7");
        assert_eq!(c.fsync, FsyncPolicy::Always);
        c.validate().expect("valid");
        assert!(StorageConfig::from_toml("bogus = 1").is_err());
        assert!(StorageConfig::from_toml("backend = \"oracle\"").is_err());
    }

    #[test]
    fn validation_rejects_bad_values() {
        let c = StorageConfig {
            backend: BackendKind::Mysql,
            ..StorageConfig::default()
        };
        assert!(matches!(c.validate(), Err(StorageError::Config(_))));
        let c = StorageConfig {
            database: Some("a;drop".into()),
            ..StorageConfig::default()
        };
        assert!(matches!(c.validate(), Err(StorageError::Config(_))));
        let c = StorageConfig {
            dirty_bound: 10,
            dirty_limit: 5,
            ..StorageConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = StorageConfig {
            retry_backoff_ms: 10,
            retry_backoff_max_ms: 50,
            ..StorageConfig::default()
        };
        let ms: Vec<u128> = (1..=5).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![10, 20, 40, 50, 50]);
        assert_eq!(c.backoff(200).as_millis(), 50);
    }
}
