//! The dump file: statements that could not be written, one self-contained JSON record per line.
//!
//! A record holds the backend, the SQL text with `?` placeholders, its parameters, the table, the
//! journal seq it came from, and the error (class, server code, message). Records are replayed at the
//! next start in file order; network-class records are also replayed before the next write while the
//! process runs, so a newer write never lands before an older dumped one. Replayed records are
//! removed by rewriting the file (`.tmp` + fsync + rename); a line that does not parse is kept
//! verbatim. The file is never truncated otherwise.
//!
//! Owns the record format and the file operations (append, load, rewrite). Knows nothing of when
//! records are written or replayed: the flusher decides that.

use super::backend::{DbError, ErrorClass};
use super::Value;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Error stored with a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpError {
    /// `"network"`, `"sql"` or `"config"`.
    pub class: String,
    /// Server error code, if any.
    pub code: Option<i64>,
    /// Message.
    pub message: String,
}

impl From<&DbError> for DumpError {
    fn from(e: &DbError) -> DumpError {
        DumpError {
            class: e.class.to_string(),
            code: e.code,
            message: e.message.clone(),
        }
    }
}

impl DumpError {
    /// Whether the record failed for a network-class reason (and so is replayed while running).
    pub fn is_network(&self) -> bool {
        self.class == ErrorClass::Network.to_string()
    }
}

/// One dumped statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DumpRecord {
    /// Format version (1).
    pub v: u32,
    /// Unix time in ms when it was dumped.
    pub at_ms: u64,
    /// `"mysql"` or `"sqlite"`: the dialect of `sql`.
    pub backend: String,
    /// Database name.
    pub database: String,
    /// Table written.
    pub table: String,
    /// Journal seq of the newest mark folded into this row.
    pub seq: u64,
    /// Statement with `?` placeholders.
    pub sql: String,
    /// Parameters, in placeholder order.
    pub params: Vec<Value>,
    /// Why it is here.
    pub error: DumpError,
    /// Tries made before dumping (1 + retries).
    pub attempts: u32,
    /// The row's primary key (records written before this field existed have none). A SQL-class
    /// record is dropped once a newer write of the same row reaches the database: replaying it
    /// later would put the older state back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<Value>,
}

impl DumpRecord {
    /// The row it writes, as a map key: its table and primary key (`None` without a key).
    pub fn row_id(&self) -> Option<String> {
        (!self.key.is_empty()).then(|| row_id(&self.table, &self.key))
    }
}

/// A row's identity across the flusher and the dump file: table and primary key.
pub fn row_id(table: &str, key: &[Value]) -> String {
    format!(
        "{table}\u{0}{}",
        serde_json::to_string(key).unwrap_or_default()
    )
}

impl DumpRecord {
    /// One JSON line (no trailing newline).
    pub fn to_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"v\":0,\"serialise_error\":{:?}}}", e.to_string()))
    }
}

/// A line of the dump file: a parsed record or text kept as it is.
#[derive(Clone, Debug)]
pub enum DumpLine {
    /// A record.
    Record(Box<DumpRecord>),
    /// A line that does not parse (kept verbatim).
    Raw(String),
}

impl DumpLine {
    fn text(&self) -> String {
        match self {
            DumpLine::Record(r) => r.to_line(),
            DumpLine::Raw(s) => s.clone(),
        }
    }
}

/// The dump file and how many records it holds.
#[derive(Debug)]
pub struct DumpFile {
    path: PathBuf,
    records: u64,
    network: u64,
}

impl DumpFile {
    /// Opens (without creating) the dump at `path` and counts its records.
    pub fn open(path: &Path) -> io::Result<DumpFile> {
        let mut d = DumpFile {
            path: path.to_owned(),
            records: 0,
            network: 0,
        };
        let lines = d.load()?;
        for (i, l) in lines.iter().enumerate() {
            if let DumpLine::Raw(text) = l {
                let why = serde_json::from_str::<DumpRecord>(text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(
                    file = %path.display(),
                    record = i + 1,
                    error = %why,
                    "dump file: a line that is not a dump record is kept as it is and never replayed"
                );
            }
        }
        d.recount(&lines);
        Ok(d)
    }

    fn recount(&mut self, lines: &[DumpLine]) {
        self.records = lines.len() as u64;
        self.network = lines
            .iter()
            .filter(|l| matches!(l, DumpLine::Record(r) if r.error.is_network()))
            .count() as u64;
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines in the file.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records that failed for network reasons (replayed before new writes).
    pub fn network_pending(&self) -> u64 {
        self.network
    }

    /// Reads every line (empty when the file does not exist).
    pub fn load(&self) -> io::Result<Vec<DumpLine>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            out.push(match serde_json::from_str::<DumpRecord>(&line) {
                Ok(r) => DumpLine::Record(Box::new(r)),
                Err(_) => DumpLine::Raw(line),
            });
        }
        Ok(out)
    }

    /// Appends records (one write, then fsync). The file and its directory are created if needed.
    pub fn append(&mut self, recs: &[DumpRecord]) -> io::Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut text = String::new();
        for r in recs {
            text.push_str(&r.to_line());
            text.push('\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600) // it holds rows, password hashes among them
            .open(&self.path)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        self.records += recs.len() as u64;
        self.network += recs.iter().filter(|r| r.error.is_network()).count() as u64;
        Ok(())
    }

    /// Replaces the file's content with `keep` (write `.tmp`, fsync, rename, fsync the directory).
    /// With nothing to keep the file is removed.
    pub fn rewrite(&mut self, keep: &[DumpLine]) -> io::Result<()> {
        if keep.is_empty() {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else {
            let tmp = self.path.with_extension("jsonl.tmp");
            let mut f = File::create(&tmp)?;
            let mut text = String::new();
            for l in keep {
                text.push_str(&l.text());
                text.push('\n');
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.recount(keep);
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, class: ErrorClass) -> DumpRecord {
        DumpRecord {
            v: 1,
            at_ms: now_ms(),
            backend: "sqlite".into(),
            database: "db".into(),
            table: "t".into(),
            seq,
            sql: "INSERT INTO t VALUES (?)".into(),
            params: vec![Value::Int(seq as i64), Value::Bytes(vec![1, 2])],
            error: DumpError::from(&DbError {
                class,
                code: Some(1048),
                message: "m".into(),
            }),
            attempts: 3,
            key: vec![],
        }
    }

    #[test]
    fn append_load_rewrite() {
        let dir = std::env::temp_dir().join(format!("lattice-dump-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("d.jsonl");
        let mut d = DumpFile::open(&path).expect("open missing");
        assert_eq!(d.records(), 0);
        d.append(&[rec(1, ErrorClass::Network), rec(2, ErrorClass::Sql)])
            .expect("append");
        // A foreign line survives everything.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"not json\n")
            .expect("write");
        let d2 = DumpFile::open(&path).expect("reopen");
        assert_eq!((d2.records(), d2.network_pending()), (3, 1));
        let lines = d.load().expect("load");
        match &lines[0] {
            DumpLine::Record(r) => {
                assert_eq!(**r, rec(1, ErrorClass::Network).clone_with_at(r.at_ms))
            }
            DumpLine::Raw(_) => panic!("record expected"),
        }
        assert!(matches!(&lines[2], DumpLine::Raw(s) if s == "not json"));
        d.rewrite(&lines[1..]).expect("rewrite");
        assert_eq!((d.records(), d.network_pending()), (2, 0));
        let back = d.load().expect("load");
        assert_eq!(back.len(), 2);
        d.rewrite(&[]).expect("empty");
        assert!(!path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    impl DumpRecord {
        fn clone_with_at(mut self, at: u64) -> DumpRecord {
            self.at_ms = at;
            self
        }
    }
}
