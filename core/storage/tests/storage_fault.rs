//! MariaDB outages in the middle of writing. These tests run their own MariaDB instance (`fault`,
//! port 3308, started and stopped through `deploy/ci/mariadb.sh`) so stopping it does not disturb the
//! other tests. Both scenarios live in one test so they never stop the server under each other.

mod storage_common;

use lattice_storage::dump::{DumpFile, DumpLine};
use lattice_storage::{StmtKind, Storage, StorageConfig, StorageHandle, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use storage_common::*;

const T: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ci/mariadb.sh")
}

/// Runs `mariadb.sh CMD fault`; returns its stdout. Fails with the script's output.
fn ctl(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args([cmd, "fault"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "`deploy/ci/mariadb.sh {cmd} fault` failed (it installs mariadb-server from Debian's packages if missing):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn fault_config(name: &str) -> StorageConfig {
    ctl("start");
    let url = ctl("url");
    StorageConfig {
        url: Some(url),
        flush_interval_ms: 50,
        op_timeout_ms: 3_000,
        pool_max: 4,
        ..config(Db::Mysql, name)
    }
}

fn rows(h: &StorageHandle) -> BTreeMap<i64, i64> {
    kv_rows(h).into_iter().map(|(k, v, _)| (k, v)).collect()
}

/// DB stopped in the middle of a write burst and started again within the retry budget: every
/// write lands once, nothing is dumped.
fn outage_within_retry_budget() {
    let cfg = StorageConfig {
        retry_max: 60,
        retry_backoff_ms: 50,
        retry_backoff_max_ms: 500,
        ..fault_config("outage")
    };
    let s = Storage::open(cfg, schema()).expect("open");
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let writer = {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut expect = BTreeMap::new();
            let mut last = None;
            for i in 0..6000i64 {
                last = Some(
                    h.insert(kvt, vec![Value::Int(i)], kv(i, None))
                        .expect("mark"),
                );
                expect.insert(i, i);
                if i % 10 == 9 {
                    let k = i / 2;
                    last = Some(
                        h.update(kvt, vec![Value::Int(k)], kv(i * 10, None))
                            .expect("mark"),
                    );
                    expect.insert(k, i * 10);
                }
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            last.expect("marked")
                .wait_timeout(T)
                .expect("last mark acknowledged");
            expect
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    ctl("stop");
    std::thread::sleep(Duration::from_millis(1000));
    ctl("start");
    let expect = writer.join().expect("writer");
    let rep = h.flush_and_wait(T).expect("flush after the outage");
    assert_eq!(rep.dumped, 0);
    let m = h.metrics();
    assert!(
        m.retries > 0,
        "the outage was not noticed (no retries): {m:?}"
    );
    assert_eq!(m.dumps, 0, "within the budget nothing is dumped");
    assert_eq!(rows(&h), expect, "every write landed exactly once");
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

/// DB down past the retry budget: writes go to the dump file (in order), a restart replays them, and
/// a dumped write is replayed before a newer write of the same row while running.
fn outage_past_retry_budget() {
    // Only explicit flushes here, so each flush report covers exactly the marks made before it.
    let cfg = StorageConfig {
        retry_max: 2,
        retry_backoff_ms: 20,
        retry_backoff_max_ms: 50,
        flush_interval_ms: 3_600_000,
        ..fault_config("dumped")
    };
    let s = Storage::open(cfg.clone(), schema()).expect("open");
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let mut expect = BTreeMap::new();
    for i in 0..300i64 {
        h.insert(kvt, vec![Value::Int(i)], kv(i, None))
            .expect("mark")
            .wait()
            .expect("ack");
        expect.insert(i, i);
    }
    assert_eq!(h.flush_and_wait(T).expect("flush").written, 300);
    ctl("stop");
    for i in 0..500i64 {
        let t = if i < 300 {
            h.update(kvt, vec![Value::Int(i)], kv(i + 1000, None))
        } else {
            h.insert(kvt, vec![Value::Int(i)], kv(i + 1000, None))
        };
        t.expect("mark")
            .wait()
            .expect("ack while the database is down");
        expect.insert(i, i + 1000);
    }
    let rep = h.flush_and_wait(T).expect("flush completes by dumping");
    assert_eq!((rep.written, rep.dumped), (0, 500));
    // A newer write of key 0, also dumped, after the older one.
    h.update(kvt, vec![Value::Int(0)], kv(5000, None))
        .expect("mark")
        .wait()
        .expect("ack");
    expect.insert(0, 5000);
    assert_eq!(h.flush_and_wait(T).expect("flush").dumped, 1);
    let m = h.metrics();
    assert_eq!(m.dumps, 501);
    assert!(m.retries >= 2);
    let lines = DumpFile::open(&cfg.dump_path())
        .expect("dump")
        .load()
        .expect("load");
    assert_eq!(lines.len(), 501);
    for l in &lines {
        match l {
            DumpLine::Record(r) => {
                assert_eq!(r.error.class, "network");
                assert!(r.attempts >= 3, "attempts {}", r.attempts);
            }
            DumpLine::Raw(s) => panic!("unparsable dump line {s}"),
        }
    }
    s.shutdown()
        .expect("shutdown with the database down (nothing left to flush)");
    ctl("start");
    let s = Storage::open(cfg.clone(), schema()).expect("reopen");
    let h = s.handle();
    let m = h.metrics();
    assert_eq!((m.replays, m.dump_pending, m.journal_replayed), (501, 0, 0));
    assert!(!cfg.dump_path().exists(), "replayed records are removed");
    assert_eq!(
        rows(&h),
        expect,
        "dump replay restored every write, newest last"
    );

    // While running: a write dumped during an outage is replayed before a newer write of that row.
    ctl("stop");
    h.update(kvt, vec![Value::Int(1)], kv(7001, None))
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(h.flush_and_wait(T).expect("flush").dumped, 1);
    ctl("start");
    // The database is back but still holds the older row: a load refuses rather than read it.
    let err = h
        .load(kvt, vec![Value::Int(1)])
        .expect("load")
        .wait()
        .expect_err("stale row refused while its dumped write waits");
    assert!(err.to_string().contains("not replayed yet"), "{err}");
    // A flush with nothing to write replays the dump; the load then reads the dumped write.
    let rep = h.flush_and_wait(T).expect("flush");
    assert_eq!((rep.written, rep.dumped), (0, 0));
    assert_eq!(h.metrics().dump_pending, 0);
    assert_eq!(
        h.load(kvt, vec![Value::Int(1)])
            .expect("load")
            .wait()
            .expect("read"),
        Some(kv(7001, None))
    );
    h.update(kvt, vec![Value::Int(1)], kv(7002, None))
        .expect("mark")
        .wait()
        .expect("ack");
    let rep = h.flush_and_wait(T).expect("flush");
    assert_eq!((rep.written, rep.dumped), (1, 0));
    expect.insert(1, 7002);
    let m = h.metrics();
    assert_eq!((m.replays, m.dump_pending), (502, 0));
    assert!(m.kind(StmtKind::Update).statements >= 1);
    assert_eq!(rows(&h), expect);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

#[test]
fn mariadb_outages() {
    outage_within_retry_budget();
    outage_past_retry_budget();
    ctl("stop");
}
