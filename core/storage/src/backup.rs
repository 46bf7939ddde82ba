//! Backups of the configured database and their restore: a file named `<database>-<YYYYmmdd-HHMMSS>`
//! (UTC), written beside the data or where the operator says.
//!
//! - SQLite: SQLite's online backup API (`rusqlite::backup`), page by page, while a server may be
//!   writing (WAL); the file is itself an SQLite database.
//! - MySQL / MariaDB: `mariadb-dump` (or `mysqldump`) with `--single-transaction` (a consistent
//!   snapshot of InnoDB tables without locking them); the file is SQL text (`CREATE TABLE`,
//!   `INSERT`) without a `CREATE DATABASE`, so it restores into any database name.
//!
//! Both write `<name>.partial` and rename it when complete, so a file with the final name is
//! always whole. Restore: SQLite copies the backup into the database file through the same API
//! (stop the server first: the file is replaced under it); MySQL feeds the file to the `mariadb`
//! (or `mysql`) client. The password never appears on a command line: the clients read it from a
//! private (mode 0600) option file that is deleted afterwards.
//!
//! Owns the file naming and the calls to SQLite's backup API and the dump clients. Knows nothing
//! of the write-behind engine: a restore replaces the database, and marks still in the journal are
//! written on top of it at the next start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{BackendKind, StorageConfig};
use super::StorageError;

/// `YYYYmmdd-HHMMSS` of `t` in UTC.
pub fn stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The backup file name for `config` at `t`: `<database>-<YYYYmmdd-HHMMSS>`.
pub fn file_name(config: &StorageConfig, t: SystemTime) -> String {
    format!("{}-{}", config.database_name(), stamp(t))
}

fn err(msg: impl Into<String>) -> StorageError {
    StorageError::Backup(msg.into())
}

/// Writes a backup of the configured database into `dir` (created if missing) and returns its
/// path. Fails when the file already exists (a second backup in the same second), when the
/// database cannot be read, or when the dump client is missing or fails (its stderr is in the
/// error). Cost: one pass over the whole database.
pub fn backup(config: &StorageConfig, dir: &Path, t: SystemTime) -> Result<PathBuf, StorageError> {
    config.validate()?;
    // Nothing to back up is said before anything is created.
    if config.backend == BackendKind::Sqlite && !config.sqlite_path().is_file() {
        return Err(err(format!(
            "no SQLite database at {} (nothing to back up)",
            config.sqlite_path().display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    // A second backup within the same second gets `-2`, `-3`, … (never overwrites one).
    let base = file_name(config, t);
    let name = (1..=1000u32)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|n| !dir.join(n).exists() && !dir.join(format!("{n}.partial")).exists())
        .ok_or_else(|| {
            err(format!(
                "{} and 999 more already exist",
                dir.join(&base).display()
            ))
        })?;
    let path = dir.join(&name);
    let partial = path.with_file_name(format!("{name}.partial"));
    // Every account row and password hash is in it: readable by its owner only, from the start.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| err(format!("create {}: {e}", partial.display())))?;
    }
    let r = match config.backend {
        BackendKind::Sqlite => sqlite_backup(config, &partial),
        BackendKind::Mysql => mysql_dump(config, &partial),
    };
    if let Err(e) = r {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &path)
        .map_err(|e| err(format!("rename {}: {e}", partial.display())))?;
    Ok(path)
}

/// Restores a backup written by [`backup`] into the configured database (SQLite: replaces the
/// file's contents; MySQL: runs the dump's statements in the configured database, creating it if
/// missing). Stop the server first.
pub fn restore(config: &StorageConfig, file: &Path) -> Result<(), StorageError> {
    config.validate()?;
    if !file.is_file() {
        return Err(err(format!("{} is not a file", file.display())));
    }
    match config.backend {
        BackendKind::Sqlite => {
            sqlite_is_backup(file)?;
            sqlite_restore(config, file)
        }
        BackendKind::Mysql => {
            sql_dump_is_backup(file)?;
            mysql_restore(config, file)
        }
    }
}

/// The last 600 bytes of a tool's error output (a failing statement can be megabytes long).
fn tail_of(text: &str) -> String {
    let t = text.trim();
    if t.len() <= 600 {
        return t.to_string();
    }
    let mut cut = t.len() - 600;
    while !t.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &t[cut..])
}

fn not_a_backup(file: &Path, why: &str) -> StorageError {
    err(format!(
        "{} is not a Lattice backup ({why}); nothing was restored",
        file.display()
    ))
}

/// A restore replaces the whole database: the file must be an SQLite database holding the
/// migration table every Lattice database has (an empty file opens as an empty database and
/// would restore as one).
fn sqlite_is_backup(file: &Path) -> Result<(), StorageError> {
    let c = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| not_a_backup(file, &e.to_string()))?;
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [super::migrate::VERSION_TABLE],
            |r| r.get(0),
        )
        .map_err(|e| not_a_backup(file, &e.to_string()))?;
    if n == 0 {
        return Err(not_a_backup(
            file,
            &format!("no {} table", super::migrate::VERSION_TABLE),
        ));
    }
    Ok(())
}

/// The SQL dump must create the migration table (`mariadb-dump` of a Lattice database does) and
/// be whole: its last line is the dump tool's `-- Dump completed` trailer (a file cut short would
/// drop tables and restore only part of them).
fn sql_dump_is_backup(file: &Path) -> Result<(), StorageError> {
    use std::io::BufRead;
    let f = std::fs::File::open(file).map_err(|e| err(format!("open {}: {e}", file.display())))?;
    let needle = format!("CREATE TABLE `{}`", super::migrate::VERSION_TABLE);
    let (mut creates, mut last) = (false, String::new());
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| err(format!("read {}: {e}", file.display())))?;
        let text = String::from_utf8_lossy(&line);
        creates |= text.contains(&needle);
        if !text.trim().is_empty() {
            last = text.into_owned();
        }
    }
    if !creates {
        return Err(not_a_backup(
            file,
            &format!("it never creates {}", super::migrate::VERSION_TABLE),
        ));
    }
    if !last.starts_with("-- Dump completed") {
        return Err(not_a_backup(
            file,
            "it does not end with the dump tool's `-- Dump completed` line: cut short?",
        ));
    }
    Ok(())
}

fn sqlite_backup(config: &StorageConfig, out: &Path) -> Result<(), StorageError> {
    let src_path = config.sqlite_path();
    if !src_path.is_file() {
        return Err(err(format!(
            "no SQLite database at {} (nothing to back up)",
            src_path.display()
        )));
    }
    let src = rusqlite::Connection::open_with_flags(
        &src_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(|e| err(format!("open {}: {e}", src_path.display())))?;
    src.busy_timeout(Duration::from_millis(config.op_timeout_ms))
        .map_err(|e| err(e.to_string()))?;
    let mut dst = rusqlite::Connection::open(out)
        .map_err(|e| err(format!("create {}: {e}", out.display())))?;
    let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| err(e.to_string()))?;
    // 256 pages per step, short pauses: a running server keeps writing between steps.
    b.run_to_completion(256, Duration::from_millis(5), None)
        .map_err(|e| err(format!("backup of {}: {e}", src_path.display())))
}

fn sqlite_restore(config: &StorageConfig, file: &Path) -> Result<(), StorageError> {
    let dst_path = config.sqlite_path();
    if let Some(d) = dst_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| err(format!("create {}: {e}", d.display())))?;
    }
    // A failed restore into a database that did not exist leaves nothing behind (not an empty
    // file the server would then start on).
    let existed = dst_path.exists();
    crate::sqlite::create_private(&dst_path)
        .map_err(|e| err(format!("create {}: {e}", dst_path.display())))?;
    let mut dst = rusqlite::Connection::open(&dst_path)
        .map_err(|e| err(format!("open {}: {e}", dst_path.display())))?;
    let r = dst.restore(
        rusqlite::MAIN_DB,
        file,
        None::<fn(rusqlite::backup::Progress)>,
    );
    drop(dst);
    r.map_err(|e| {
        if !existed {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = dst_path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        err(format!(
            "restore {} from {}: {e}",
            dst_path.display(),
            file.display()
        ))
    })
}

/// Connection settings of the MySQL URL, for the command-line clients.
struct MyConn {
    host: String,
    port: u16,
    user: String,
    pass: String,
}

fn my_conn(config: &StorageConfig) -> Result<MyConn, StorageError> {
    let url = config
        .url
        .as_deref()
        .ok_or_else(|| err("mysql backend needs url"))?;
    let o = mysql_async::Opts::from_url(url).map_err(|e| err(format!("bad mysql url: {e}")))?;
    Ok(MyConn {
        host: o.ip_or_hostname().to_string(),
        port: o.tcp_port(),
        user: o.user().unwrap_or_default().to_string(),
        pass: o.pass().unwrap_or_default().to_string(),
    })
}

/// A private option file holding the connection settings, removed on drop.
struct OptionFile(PathBuf);

impl OptionFile {
    fn new(c: &MyConn) -> Result<OptionFile, StorageError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("lattice-mysql-{}-{nanos}.cnf", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(format!("create {}: {e}", path.display())))?;
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        writeln!(
            f,
            "[client]\nhost=\"{}\"\nport={}\nuser=\"{}\"\npassword=\"{}\"\nprotocol=TCP",
            quote(&c.host),
            c.port,
            quote(&c.user),
            quote(&c.pass)
        )
        .map_err(|e| err(format!("write {}: {e}", path.display())))?;
        Ok(OptionFile(path))
    }
}

impl Drop for OptionFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The first of `names` found on `PATH` or in the usual directories.
fn find_tool(names: &[&str]) -> Result<PathBuf, StorageError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from));
    for n in names {
        for d in &dirs {
            let p = d.join(n);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(err(format!(
        "none of {} found: install the MariaDB client (Debian: apt-get install mariadb-client)",
        names.join(", ")
    )))
}

fn mysql_dump(config: &StorageConfig, out: &Path) -> Result<(), StorageError> {
    let tool = find_tool(&["mariadb-dump", "mysqldump"])?;
    let opts = OptionFile::new(&my_conn(config)?)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(out)
        .map_err(|e| err(format!("open {}: {e}", out.display())))?;
    let o = Command::new(&tool)
        .arg(format!("--defaults-extra-file={}", opts.0.display()))
        .args([
            "--single-transaction",
            "--skip-lock-tables",
            "--no-tablespaces",
            "--routines",
            "--triggers",
        ])
        .arg(config.database_name())
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| err(format!("run {}: {e}", tool.display())))?;
    if !o.status.success() {
        return Err(err(format!(
            "{} failed ({}): {}",
            tool.display(),
            o.status,
            tail_of(&String::from_utf8_lossy(&o.stderr))
        )));
    }
    Ok(())
}

fn mysql_restore(config: &StorageConfig, file: &Path) -> Result<(), StorageError> {
    let tool = find_tool(&["mariadb", "mysql"])?;
    let opts = OptionFile::new(&my_conn(config)?)?;
    let db = config.database_name();
    let run = |args: &[String], stdin: Stdio| -> Result<String, StorageError> {
        let o = Command::new(&tool)
            .arg(format!("--defaults-extra-file={}", opts.0.display()))
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| err(format!("run {}: {e}", tool.display())))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(err(format!(
                "{} failed ({}): {}",
                tool.display(),
                o.status,
                tail_of(&String::from_utf8_lossy(&o.stderr))
            )))
        }
    };
    // Servers of other data directories and hosts share the database: none may be connected to
    // it (the data directory's lock covers only this host's server). Counted in the process list,
    // which shows every connection with the PROCESS privilege, else those of this user.
    let others = run(
        &[
            "-N".into(),
            "-B".into(),
            "-e".into(),
            format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND ID <> CONNECTION_ID()"
            ),
        ],
        Stdio::null(),
    )?;
    let others: u64 = others.trim().parse().map_err(|_| {
        err(format!(
            "cannot count the connections to database {db}: {:?}",
            others.trim()
        ))
    })?;
    if others > 0 {
        return Err(err(format!(
            "{others} other connection(s) use database {db} (a server on this or another host): stop every server that uses it first; nothing was restored"
        )));
    }
    run(
        &[
            "-e".into(),
            format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"),
        ],
        Stdio::null(),
    )?;
    let input =
        std::fs::File::open(file).map_err(|e| err(format!("open {}: {e}", file.display())))?;
    run(&[db], Stdio::from(input)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(UNIX_EPOCH), "19700101-000000");
        // 2024-02-29 23:59:58 UTC (a leap day).
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        assert_eq!(stamp(t), "20240229-235958");
        // 2026-12-31 12:34:56 UTC.
        let t = UNIX_EPOCH + Duration::from_secs(1_798_720_496);
        assert_eq!(stamp(t), "20261231-123456");
        let c = StorageConfig {
            database: Some("game".into()),
            ..StorageConfig::default()
        };
        assert_eq!(file_name(&c, t), "game-20261231-123456");
    }

    #[test]
    fn a_failed_restore_into_no_database_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("lattice-restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("not-a-backup");
        std::fs::write(&bad, b"this is not an SQLite file, whatever its name says").unwrap();
        let c = StorageConfig {
            backend: BackendKind::Sqlite,
            data_dir: dir.join("data"),
            ..StorageConfig::default()
        };
        let e = restore(&c, &bad).unwrap_err().to_string();
        assert!(e.contains("not a Lattice backup"), "{e}");
        // An empty file (it opens as an empty SQLite database) or a database of something else.
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = restore(&c, &empty).unwrap_err().to_string();
        assert!(e.contains("not a Lattice backup"), "{e}");
        let other = dir.join("other.sqlite3");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let e = restore(&c, &other).unwrap_err().to_string();
        assert!(e.contains("no lattice_schema_migrations table"), "{e}");
        assert!(
            !c.sqlite_path().exists(),
            "an empty database was left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
