//! Storage benchmark.
//!
//! 1. Dirty marks per second into the write-behind layer (journal append + coalescing + ack), per
//!    fsync policy, against a baseline in the same run: the same number of items through a bare
//!    bounded channel to another thread (the queue hop alone, no journal).
//! 2. Rows per second flushed to MariaDB (and SQLite) with multi-row batches versus one statement per
//!    row, in the same run.
//!
//! Usage: `cargo run --release -p lattice-bench --bin storage_bench -- [--url mysql://...]
//!         [--marks N] [--rows N] [--row-rows N]`
//! The URL defaults to `$LATTICE_TEST_MYSQL_URL` (`eval "$(deploy/ci/mariadb.sh start)"`).

use lattice_storage::{
    BackendKind, FsyncPolicy, MarkTicket, Migration, Schema, StmtKind, Storage, StorageConfig,
    StorageError, TableSpec, Value,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(600);

struct Args {
    url: Option<String>,
    marks: u64,
    rows: u64,
    row_rows: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: std::env::var("LATTICE_TEST_MYSQL_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        marks: 1_000_000,
        rows: 100_000,
        row_rows: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--url" => a.url = Some(v),
            "--marks" => a.marks = v.parse().unwrap_or(a.marks),
            "--rows" => a.rows = v.parse().unwrap_or(a.rows),
            "--row-rows" => a.row_rows = v.parse().unwrap_or(a.row_rows),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn schema() -> Schema {
    Schema::new()
        .table(TableSpec::new("bench_kv", &["id"], &["val", "name", "blob"]).expect("spec"))
        .expect("schema")
        .migration(Migration::new(
            1,
            "bench table",
            &["CREATE TABLE IF NOT EXISTS bench_kv (id BIGINT NOT NULL PRIMARY KEY, val BIGINT NOT NULL, name VARCHAR(32) NOT NULL, `blob` VARBINARY(64) NULL) ENGINE=InnoDB"],
            &["CREATE TABLE IF NOT EXISTS bench_kv (id INTEGER NOT NULL PRIMARY KEY, val INTEGER NOT NULL, name TEXT NOT NULL, \"blob\" BLOB NULL)"],
        ))
}

fn row(i: u64) -> Vec<Value> {
    vec![
        Value::Int(i as i64 * 7),
        Value::Text(format!("player-{i}")),
        Value::Bytes(vec![(i % 251) as u8; 32]),
    ]
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lattice-storage-bench-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn base(backend: BackendKind, url: Option<String>, name: &str, db: &str) -> StorageConfig {
    StorageConfig {
        backend,
        url,
        database: Some(db.to_owned()),
        data_dir: tmp(name),
        flush_interval_ms: 3_600_000,
        dirty_bound: 10_000_000,
        dirty_limit: 10_000_000,
        ping_interval_ms: 0,
        op_timeout_ms: 120_000,
        ..StorageConfig::default()
    }
}

/// Marks `n` rows over `keys` distinct keys with up to `window` unacknowledged; returns marks/s.
fn mark_run(s: &Storage, n: u64, keys: u64, window: usize) -> f64 {
    let h = s.handle();
    let t = h.table("bench_kv").expect("table");
    let mut q: VecDeque<MarkTicket> = VecDeque::with_capacity(window);
    let start = Instant::now();
    for i in 0..n {
        let k = i % keys;
        loop {
            match h.insert(t, vec![Value::Int(k as i64)], row(i)) {
                Ok(tk) => {
                    q.push_back(tk);
                    break;
                }
                Err(StorageError::Backpressure(_)) => {
                    if let Some(tk) = q.pop_front() {
                        tk.wait().expect("ack");
                    }
                }
                Err(e) => panic!("mark: {e}"),
            }
        }
        if q.len() >= window {
            q.pop_front().expect("ticket").wait().expect("ack");
        }
    }
    for tk in q {
        tk.wait().expect("ack");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The queue hop alone: the same values through a bounded channel to a consumer thread.
fn channel_baseline(n: u64, keys: u64) -> f64 {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Value>, Vec<Value>)>(65_536);
    let c = std::thread::spawn(move || {
        let mut count = 0u64;
        while let Ok((k, v)) = rx.recv() {
            count += (k.len() + v.len()) as u64;
        }
        count
    });
    let start = Instant::now();
    for i in 0..n {
        tx.send((vec![Value::Int((i % keys) as i64)], row(i)))
            .expect("send");
    }
    drop(tx);
    let got = c.join().expect("consumer");
    assert_eq!(got, n * 4);
    n as f64 / start.elapsed().as_secs_f64()
}

struct FlushResult {
    rows_per_s: f64,
    statements: u64,
    p50_us: u64,
    p99_us: u64,
}

/// Marks `n` distinct rows, then times one flush of all of them.
fn flush_run(
    backend: BackendKind,
    url: Option<String>,
    n: u64,
    batch_rows: usize,
    tag: &str,
) -> FlushResult {
    let db = format!("bench_{tag}_{}", std::process::id());
    let cfg = StorageConfig {
        batch_rows,
        fsync: FsyncPolicy::Os,
        ..base(backend, url, tag, &db)
    };
    let s = Storage::open(cfg.clone(), schema()).expect("open");
    mark_run(&s, n, n, 4096);
    let h = s.handle();
    let start = Instant::now();
    let rep = h.flush_and_wait(WAIT).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!((rep.written, rep.dumped), (n, 0), "flush wrote everything");
    let m = h.metrics();
    let k = m.kind(StmtKind::Insert);
    let r = FlushResult {
        rows_per_s: n as f64 / secs,
        statements: k.statements,
        p50_us: k.latency_us.p50,
        p99_us: k.latency_us.p99,
    };
    if backend == BackendKind::Mysql {
        let _ = h
            .query(&format!("DROP DATABASE IF EXISTS `{db}`"), vec![])
            .map(|t| t.wait_timeout(WAIT));
    }
    s.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    r
}

fn main() {
    let a = args();
    let keys = 100_000;
    println!("# storage_bench\n");
    println!(
        "machine: {} cores (shared, noisy); marks = {}, distinct keys = {keys}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.marks
    );
    println!("## Dirty marks into the write-behind layer (1 producer thread, 4096 in flight)\n");
    println!("| variant | marks/s | ratio to baseline |");
    println!("|---|---:|---:|");
    let baseline = channel_baseline(a.marks, keys);
    println!("| baseline: bounded channel hop only (no journal, no ack) | {baseline:.0} | 1.00 |");
    for (name, policy) in [
        ("fsync = os", FsyncPolicy::Os),
        ("fsync = interval (10 ms)", FsyncPolicy::Interval),
        ("fsync = always (group commit)", FsyncPolicy::Always),
    ] {
        let cfg = StorageConfig {
            fsync: policy,
            ..base(BackendKind::Sqlite, None, "marks", "bench_marks")
        };
        let s = Storage::open(cfg.clone(), schema()).expect("open");
        let r = mark_run(&s, a.marks, keys, 4096);
        let m = s.metrics();
        println!(
            "| journal + coalesce + ack, {name} | {r:.0} | {:.2} |",
            r / baseline
        );
        eprintln!(
            "  {name}: coalesced {} of {}, {} journal writes, {} bytes",
            m.coalesced_marks, m.dirty_marks, m.journal_appends, m.journal_bytes_written
        );
        s.halt_without_flush();
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    println!();
    let mut targets = vec![(BackendKind::Sqlite, None, "SQLite (embedded)")];
    match &a.url {
        Some(u) => targets.insert(
            0,
            (BackendKind::Mysql, Some(u.clone()), "MariaDB (local, TCP)"),
        ),
        None => eprintln!("no --url / LATTICE_TEST_MYSQL_URL: MariaDB flush figures skipped"),
    }
    for (kind, url, label) in targets {
        println!("## Rows flushed to {label}\n");
        println!("| mode | rows | rows/s | ratio to one-per-row | INSERT statements | stmt p50 | stmt p99 |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let one = flush_run(kind, url.clone(), a.row_rows, 1, "row");
        println!(
            "| one statement per row (baseline) | {} | {:.0} | 1.00 | {} | {} µs | {} µs |",
            a.row_rows, one.rows_per_s, one.statements, one.p50_us, one.p99_us
        );
        for b in [100usize, 500, 2000] {
            let r = flush_run(kind, url.clone(), a.rows, b, &format!("b{b}"));
            println!(
                "| batched, {b} rows per statement | {} | {:.0} | {:.1} | {} | {} µs | {} µs |",
                a.rows,
                r.rows_per_s,
                r.rows_per_s / one.rows_per_s,
                r.statements,
                r.p50_us,
                r.p99_us
            );
        }
        println!();
    }
}
