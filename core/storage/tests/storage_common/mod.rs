//! Helpers shared by the storage integration tests (both backends).
#![allow(dead_code)]

use lattice_storage::{
    BackendKind, Migration, Schema, StorageConfig, StorageHandle, TableSpec, Value,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Which backend a test instance runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Mysql,
}

/// The MariaDB/MySQL URL of the test server. Fails (never skips) when it is missing.
pub fn mysql_url() -> String {
    match std::env::var("LATTICE_TEST_MYSQL_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "LATTICE_TEST_MYSQL_URL is not set. Start the throwaway MariaDB first: \
             `eval \"$(deploy/ci/mariadb.sh start)\"` (installs mariadb-server from Debian's packages if missing)"
        ),
    }
}

/// A fresh directory for one test, under `$TMPDIR/lattice-storage-tests/<pid>/`. Tests run as one
/// process each and leave their data for a failure to be inspected, so the first call in a process
/// removes the directories of processes that no longer exist: the leftovers stay bounded by the
/// tests running at once.
pub fn temp_dir(name: &str) -> PathBuf {
    static SWEPT: OnceLock<()> = OnceLock::new();
    let root = std::env::temp_dir().join("lattice-storage-tests");
    SWEPT.get_or_init(|| sweep_dead(&root));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = root
        .join(std::process::id().to_string())
        .join(format!("{name}-{nanos}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Removes `root/<pid>` for every pid without a `/proc/<pid>`.
fn sweep_dead(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A config for `db` with the private data dir `dir` and (MySQL) a private database.
pub fn config_in(db: Db, name: &str, dir: PathBuf) -> StorageConfig {
    let database: String = format!("lt_{name}_{}", std::process::id())
        .chars()
        .take(64)
        .collect();
    StorageConfig {
        backend: match db {
            Db::Sqlite => BackendKind::Sqlite,
            Db::Mysql => BackendKind::Mysql,
        },
        url: match db {
            Db::Sqlite => None,
            Db::Mysql => Some(mysql_url()),
        },
        database: Some(database),
        data_dir: dir,
        flush_interval_ms: 60_000,
        dirty_bound: 100_000,
        retry_max: 3,
        retry_backoff_ms: 10,
        retry_backoff_max_ms: 100,
        op_timeout_ms: 5_000,
        ping_interval_ms: 0,
        ..StorageConfig::default()
    }
}

/// A config for `db` with a fresh data dir and (MySQL) a private database, tuned for fast tests.
pub fn config(db: Db, name: &str) -> StorageConfig {
    config_in(db, name, temp_dir(name))
}

/// `kv(id, val NOT NULL, note)` and `pair((a, b), c)`.
pub fn schema() -> Schema {
    Schema::new()
        .table(TableSpec::new("kv", &["id"], &["val", "note"]).expect("kv spec"))
        .and_then(|s| s.table(TableSpec::new("pair", &["a", "b"], &["c"]).expect("pair spec")))
        .expect("schema")
        .migration(Migration::portable(
            1,
            "kv table",
            &["CREATE TABLE IF NOT EXISTS kv (id BIGINT NOT NULL PRIMARY KEY, val BIGINT NOT NULL, note VARCHAR(64) NULL)"],
        ))
        .migration(Migration::portable(
            2,
            "pair table",
            &["CREATE TABLE IF NOT EXISTS pair (a BIGINT NOT NULL, b VARCHAR(32) NOT NULL, c BLOB NULL, PRIMARY KEY (a, b))"],
        ))
}

/// All rows of `kv` as (id, val, note), ordered by id.
pub fn kv_rows(h: &StorageHandle) -> Vec<(i64, i64, Option<String>)> {
    h.query("SELECT id, val, note FROM kv ORDER BY id", vec![])
        .expect("query queued")
        .wait_timeout(Duration::from_secs(30))
        .expect("query ran")
        .into_iter()
        .map(|r| {
            let id = r[0].as_i64().expect("id");
            let val = r[1].as_i64().expect("val");
            let note = r[2].as_str().map(str::to_owned);
            (id, val, note)
        })
        .collect()
}

/// Drops the MySQL test database (best effort) so the throwaway server does not fill up.
pub fn drop_database(h: &StorageHandle) {
    if h.config().backend == BackendKind::Mysql {
        let db = h.config().database_name();
        if let Ok(t) = h.query(&format!("DROP DATABASE IF EXISTS `{db}`"), vec![]) {
            let _ = t.wait_timeout(Duration::from_secs(30));
        }
    }
}

/// Values for a kv row.
pub fn kv(val: i64, note: Option<&str>) -> Vec<Value> {
    vec![
        Value::Int(val),
        note.map_or(Value::Null, |n| Value::Text(n.to_owned())),
    ]
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        logs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Installs (once per process) a global subscriber that keeps every log line in memory.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
    });
}

/// Everything logged so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
