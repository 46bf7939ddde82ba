//! `kill -9` at random points loses no acknowledged write, for both backends.
//!
//! The parent re-runs this test binary as a child (`crash_child`, selected by an env var) that marks
//! rows as fast as it can and prints each acknowledgement; the parent SIGKILLs it after a random
//! delay (sometimes while it is still opening, i.e. replaying the previous round's journal), and starts
//! the next round on the same journal and database. At the end the parent opens the storage itself
//! and checks that, for every round, the database holds exactly the state after some prefix of the
//! child's operations that includes every acknowledged one (acked ops are a prefix; ops issued but not
//! yet acked may or may not have landed) — nothing lost, nothing extra, nothing applied twice.

mod storage_common;

use lattice_storage::{FsyncPolicy, Storage, StorageConfig, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage_common::*;

const CHILD_ENV: &str = "LATTICE_STORAGE_CRASH_CHILD";
const ROUND_KEYS: i64 = 1_000_000;
/// Most marks a child has in flight (issued, not yet acknowledged).
const WINDOW: usize = 32;
/// Most ops a child issues per round (it then idles until killed).
const MAX_OPS: i64 = 30_000;
const ROUNDS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TestOp {
    Insert(i64, i64),
    Delete(i64),
}

/// The deterministic op sequence of round `r`: insert key i; every 3rd op also bump a per-round hot
/// key (coalescing); every 5th op delete the previous key.
fn ops(r: i64) -> impl Iterator<Item = TestOp> {
    let base = r * ROUND_KEYS;
    let hot = base + ROUND_KEYS - 1;
    (0..MAX_OPS).flat_map(move |i| {
        let mut v = vec![TestOp::Insert(base + i, i)];
        if i % 3 == 0 {
            v.push(TestOp::Insert(hot, i));
        }
        if i % 5 == 4 {
            v.push(TestOp::Delete(base + i - 1));
        }
        v
    })
}

fn crash_config(db: Db, dir: &std::path::Path, database: &str) -> StorageConfig {
    StorageConfig {
        database: Some(database.to_owned()),
        fsync: FsyncPolicy::Interval,
        fsync_interval_ms: 5,
        flush_interval_ms: 20,
        dirty_bound: 2_000,
        batch_rows: 200,
        queue_capacity: 1024,
        ..config_in(db, "crashcfg", dir.to_owned())
    }
}

#[test]
#[ignore = "child role of the kill9_* tests; runs only when they start it"]
fn crash_child() {
    let spec = std::env::var(CHILD_ENV).expect("crash_child is started by the kill9_* tests");
    let mut it = spec.split('|');
    let (db, dir, database, round) = (
        it.next().expect("db"),
        it.next().expect("dir"),
        it.next().expect("database"),
        it.next()
            .expect("round")
            .parse::<i64>()
            .expect("round number"),
    );
    let db = if db == "mysql" { Db::Mysql } else { Db::Sqlite };
    let cfg = crash_config(db, std::path::Path::new(dir), database);
    let s = Storage::open(cfg, schema()).expect("child opens storage");
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "OPEN").expect("stdout");
    out.flush().expect("flush");
    let mut inflight = std::collections::VecDeque::new();
    for (n, op) in ops(round).enumerate() {
        let t = loop {
            let r = match op {
                TestOp::Insert(k, v) => h.insert(kvt, vec![Value::Int(k)], kv(v, None)),
                TestOp::Delete(k) => h.delete(kvt, vec![Value::Int(k)]),
            };
            match r {
                Ok(t) => break t,
                Err(lattice_storage::StorageError::Backpressure(_)) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("mark failed: {e}"),
            }
        };
        inflight.push_back((n, t));
        while inflight.len() >= WINDOW {
            let (n, t) = inflight.pop_front().expect("nonempty");
            t.wait().expect("ack");
            writeln!(out, "A {n}").expect("stdout");
        }
    }
    while let Some((n, t)) = inflight.pop_front() {
        t.wait().expect("ack");
        writeln!(out, "A {n}").expect("stdout");
    }
    writeln!(out, "DONE").expect("stdout");
    out.flush().expect("flush");
    std::thread::sleep(Duration::from_secs(600));
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn kill9_run(db: Db) {
    let dir = temp_dir(&format!("kill9-{db:?}"));
    let database = format!(
        "lt_kill9_{}_{}",
        if db == Db::Mysql { "my" } else { "lite" },
        std::process::id()
    );
    let exe = std::env::current_exe().expect("test binary path");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let mut acked: Vec<Option<usize>> = Vec::new();
    let mut kills = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}|{}|{}|{round}",
                    if db == Db::Mysql { "mysql" } else { "sqlite" },
                    dir.display(),
                    database
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new((false, None::<usize>)));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut g = l2.lock().expect("lock");
                if line.ends_with("OPEN") {
                    g.0 = true;
                } else if let Some(n) = line
                    .strip_prefix("A ")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    g.1 = Some(n);
                }
            }
        });
        // Every 5th round: kill at a random point during start-up (journal replay, migrations,
        // initial flush). Otherwise: a random time after the child started marking.
        let early = round % 5 == 0;
        let delay = Duration::from_millis(if early {
            rng.range(1, 60)
        } else {
            rng.range(5, 150)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        if !early {
            while !lines.lock().expect("lock").0 {
                if let Ok(Some(st)) = child.try_wait() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(
                        &mut child.stderr.take().expect("stderr"),
                        &mut err,
                    );
                    panic!("child exited early ({st}): {err}");
                }
                assert!(Instant::now() < deadline, "child did not open within 30 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_none() {
            kills += 1;
        }
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        let status = child.wait().expect("reap");
        reader.join().expect("reader");
        let g = lines.lock().expect("lock");
        if status.success() || (!g.0 && !early) {
            let mut err = String::new();
            let _ =
                std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
            panic!("round {round}: child ended on its own ({status}): {err}");
        }
        acked.push(g.1);
    }
    let elapsed = started.elapsed();
    // The parent opens the storage: this replays the last round's journal.
    let cfg = crash_config(db, &dir, &database);
    let s = Storage::open(cfg, schema()).expect("parent opens");
    let h = s.handle();
    h.flush_and_wait(Duration::from_secs(60)).expect("flush");
    let rows: BTreeMap<i64, i64> = kv_rows(&h).into_iter().map(|(k, v, _)| (k, v)).collect();
    let mut total_acked = 0;
    for (round, a) in acked.iter().enumerate() {
        let r = round as i64;
        let in_db: BTreeMap<i64, i64> = rows
            .range(r * ROUND_KEYS..(r + 1) * ROUND_KEYS)
            .map(|(k, v)| (*k, *v))
            .collect();
        let acked_ops = a.map_or(0, |n| n + 1);
        total_acked += acked_ops;
        // State after the first `acked_ops` ops, then try each allowed longer prefix.
        let all: Vec<TestOp> = ops(r).take(acked_ops + WINDOW + 1024 + 1).collect();
        let mut state: BTreeMap<i64, i64> = BTreeMap::new();
        let apply = |st: &mut BTreeMap<i64, i64>, op: TestOp| match op {
            TestOp::Insert(k, v) => {
                st.insert(k, v);
            }
            TestOp::Delete(k) => {
                st.remove(&k);
            }
        };
        for op in &all[..acked_ops] {
            apply(&mut state, *op);
        }
        // Issued-but-unacked ops: at most WINDOW plus the queue (1024) beyond the last ack.
        let mut matched = state == in_db;
        let mut extra = 0;
        while !matched && acked_ops + extra < all.len() {
            apply(&mut state, all[acked_ops + extra]);
            extra += 1;
            matched = state == in_db;
        }
        assert!(
            matched,
            "round {round}: database rows ({} rows) match no prefix of the child's ops at or past its {acked_ops} acknowledged ones",
            in_db.len()
        );
    }
    assert!(kills >= ROUNDS, "only {kills} kills hit a running child");
    assert!(total_acked > 0, "children acknowledged nothing");
    eprintln!(
        "{db:?}: {kills} kills in {elapsed:?}, {total_acked} acknowledged ops checked, {} rows",
        rows.len()
    );
    drop_database(&h);
    s.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill9_sqlite_loses_no_acknowledged_write() {
    kill9_run(Db::Sqlite)
}

#[test]
fn kill9_mysql_loses_no_acknowledged_write() {
    kill9_run(Db::Mysql)
}
