//! The storage behaviour suite, run against both backends: every case below is instantiated once
//! for SQLite and once for MySQL/MariaDB (`LATTICE_TEST_MYSQL_URL`, see `deploy/ci/mariadb.sh`).

mod storage_common;

use lattice_storage::dump::{DumpError, DumpFile, DumpRecord};
use lattice_storage::sql::{self, Dialect};
use lattice_storage::{
    migrate, BackendKind, Migration, Schema, StmtKind, Storage, StorageConfig, StorageError, Value,
};
use std::time::{Duration, Instant};
use storage_common::*;

const T: Duration = Duration::from_secs(60);

fn open(cfg: &StorageConfig) -> Storage {
    Storage::open(cfg.clone(), schema()).expect("storage opens")
}

fn round_trip(db: Db) {
    let cfg = config(db, "roundtrip");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv registered");
    let mut tickets = Vec::new();
    for i in 0..100 {
        tickets.push(
            h.insert(kvt, vec![Value::Int(i)], kv(i * 10, Some("new")))
                .expect("mark"),
        );
    }
    for i in 0..10 {
        tickets.push(
            h.update(kvt, vec![Value::Int(i)], kv(-i, None))
                .expect("mark"),
        );
    }
    for i in 90..100 {
        tickets.push(h.delete(kvt, vec![Value::Int(i)]).expect("mark"));
    }
    let mut last = 0;
    for t in tickets {
        let ack = t.wait_timeout(T).expect("journaled");
        assert!(ack.seq > last, "acks come in seq order");
        last = ack.seq;
    }
    // Dirty reads before any flush.
    assert_eq!(
        h.load(kvt, vec![Value::Int(3)])
            .expect("load")
            .wait_timeout(T)
            .expect("read"),
        Some(kv(-3, None))
    );
    assert_eq!(
        h.load(kvt, vec![Value::Int(95)])
            .expect("load")
            .wait_timeout(T)
            .expect("read"),
        None
    );
    assert_eq!(h.metrics().dirty_reads, 2);
    let rep = h.flush_and_wait(T).expect("flushed");
    assert_eq!((rep.written, rep.dumped), (100, 0));
    assert_eq!(rep.confirmed_seq, last);
    let rows = kv_rows(&h);
    assert_eq!(rows.len(), 90);
    assert_eq!(rows[3], (3, -3, None));
    assert_eq!(rows[50], (50, 500, Some("new".into())));
    // Reads now come from the database.
    assert_eq!(
        h.load(kvt, vec![Value::Int(50)])
            .expect("load")
            .wait_timeout(T)
            .expect("read"),
        Some(kv(500, Some("new")))
    );
    assert_eq!(
        h.load(kvt, vec![Value::Int(1000)])
            .expect("load")
            .wait_timeout(T)
            .expect("read"),
        None
    );
    let m = h.metrics();
    assert!(m.kind(StmtKind::Select).statements >= 2);
    assert_eq!(
        m.kind(StmtKind::Insert).rows,
        90,
        "inserted rows after coalescing (10 updates folded in)"
    );
    assert_eq!(m.kind(StmtKind::Delete).rows, 10);
    s.shutdown().expect("clean shutdown");
    // Reopen: nothing to replay, data still there.
    let s = open(&cfg);
    let h = s.handle();
    assert_eq!(h.metrics().journal_replayed, 0);
    assert_eq!(kv_rows(&h).len(), 90);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn update_without_insert_and_composite_keys(db: Db) {
    let cfg = config(db, "composite");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let pair = h.table("pair").expect("pair");
    h.insert(kvt, vec![Value::Int(1)], kv(1, None))
        .expect("mark")
        .wait()
        .expect("ack");
    h.flush_and_wait(T).expect("flush");
    // A plain update of an existing row, and an update of a missing row (no effect).
    h.update(kvt, vec![Value::Int(1)], kv(2, Some("u")))
        .expect("mark")
        .wait()
        .expect("ack");
    h.update(kvt, vec![Value::Int(2)], kv(9, None))
        .expect("mark")
        .wait()
        .expect("ack");
    for a in 0..20i64 {
        for b in ["x", "y"] {
            h.insert(
                pair,
                vec![Value::Int(a), Value::from(b)],
                vec![Value::Bytes(vec![a as u8, 0, 255])],
            )
            .expect("mark")
            .wait()
            .expect("ack");
        }
    }
    for a in 0..10i64 {
        h.delete(pair, vec![Value::Int(a), Value::from("x")])
            .expect("mark")
            .wait()
            .expect("ack");
    }
    h.flush_and_wait(T).expect("flush");
    assert_eq!(kv_rows(&h), vec![(1, 2, Some("u".into()))]);
    assert_eq!(h.metrics().kind(StmtKind::Update).statements, 2);
    let rows = h
        .query("SELECT a, b, c FROM pair ORDER BY a, b", vec![])
        .expect("q")
        .wait_timeout(T)
        .expect("rows");
    assert_eq!(rows.len(), 30);
    assert_eq!(rows[0][1].as_str(), Some("y"));
    match &rows[29][2] {
        Value::Bytes(b) => assert_eq!(b, &vec![19, 0, 255]),
        other => panic!("blob came back as {other:?}"),
    }
    assert_eq!(
        h.load(pair, vec![Value::Int(15), Value::from("x")])
            .expect("load")
            .wait_timeout(T)
            .expect("read"),
        Some(vec![Value::Bytes(vec![15, 0, 255])])
    );
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn coalescing(db: Db) {
    let cfg = config(db, "coalesce");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let mut last = None;
    h.insert(kvt, vec![Value::Int(7)], kv(0, None))
        .expect("mark")
        .wait()
        .expect("ack");
    for v in 1..=1000 {
        last = Some(
            h.update(kvt, vec![Value::Int(7)], kv(v, None))
                .expect("mark"),
        );
    }
    last.expect("marked").wait_timeout(T).expect("ack");
    let rep = h.flush_and_wait(T).expect("flush");
    assert_eq!(rep.written, 1);
    let m = h.metrics();
    assert_eq!(m.dirty_marks, 1001);
    assert_eq!(m.coalesced_marks, 1000);
    assert_eq!(m.flushed_rows, 1);
    assert_eq!(
        m.kind(StmtKind::Insert).statements,
        1,
        "1001 marks, one write"
    );
    assert_eq!(
        m.kind(StmtKind::Update).statements,
        0,
        "update after insert stays an insert"
    );
    assert_eq!(kv_rows(&h), vec![(7, 1000, None)]);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn dirty_bound_triggers_flush(db: Db) {
    let mut cfg = config(db, "bound");
    cfg.dirty_bound = 100;
    cfg.batch_rows = 64;
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let tickets: Vec<_> = (0..1000)
        .map(|i| {
            h.insert(kvt, vec![Value::Int(i)], kv(i, None))
                .expect("mark")
        })
        .collect();
    for t in tickets {
        t.wait_timeout(T).expect("ack");
    }
    // The interval is 60 s; only the bound starts flushes. Whenever a journal group leaves 100 or
    // more rows dirty the flusher is woken, so eventually fewer than 100 remain dirty (how many
    // depends on how the marks were grouped). Wait for that, bounded.
    let deadline = Instant::now() + T;
    while h.metrics().flushed_rows < 1000 - 99 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = h.metrics();
    assert!(
        m.flushed_rows > 900,
        "bound-triggered flushes wrote {} rows",
        m.flushed_rows
    );
    assert!(m.dirty_rows < 100, "{} rows still dirty", m.dirty_rows);
    assert!(m.flushes >= 1);
    assert!(
        m.flush_batch_rows.min >= 100,
        "each flush took at least the bound"
    );
    assert_eq!(m.kind(StmtKind::Insert).rows, m.flushed_rows);
    let left = h.flush_and_wait(T).expect("flush the rest").written;
    assert_eq!(m.flushed_rows + left, 1000);
    assert_eq!(kv_rows(&h).len(), 1000);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn crash_then_replay(db: Db) {
    let cfg = config(db, "replay");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let tickets: Vec<_> = (0..500)
        .map(|i| {
            h.insert(kvt, vec![Value::Int(i)], kv(i, Some("j")))
                .expect("mark")
        })
        .collect();
    for t in tickets {
        t.wait_timeout(T).expect("ack");
    }
    h.delete(kvt, vec![Value::Int(0)])
        .expect("mark")
        .wait()
        .expect("ack");
    assert!(kv_rows(&h).is_empty(), "nothing flushed yet");
    s.halt_without_flush();
    assert!(matches!(
        h.insert(kvt, vec![Value::Int(1)], kv(1, None)),
        Err(StorageError::Closed)
    ));
    // Restart: the journal's 501 acknowledged marks are written before open returns.
    let s = open(&cfg);
    let h = s.handle();
    assert_eq!(h.metrics().journal_replayed, 501);
    let rows = kv_rows(&h);
    assert_eq!(rows.len(), 499);
    assert_eq!(rows[0], (1, 1, Some("j".into())));
    s.shutdown().expect("shutdown");
    // And they are not replayed twice.
    let s = open(&cfg);
    let h = s.handle();
    assert_eq!(h.metrics().journal_replayed, 0);
    assert_eq!(kv_rows(&h).len(), 499);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn sql_error_goes_to_dump_with_code(db: Db) {
    capture_logs();
    let cfg = config(db, "sqlerr");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    for i in 0..10 {
        h.insert(kvt, vec![Value::Int(i)], kv(i, None))
            .expect("mark")
            .wait()
            .expect("ack");
    }
    // NULL into a NOT NULL column: a constraint error from the server, in the middle of a batch.
    h.insert(kvt, vec![Value::Int(5)], vec![Value::Null, Value::Null])
        .expect("mark")
        .wait()
        .expect("ack");
    let rep = h.flush_and_wait(T).expect("flush completes");
    assert_eq!(
        (rep.written, rep.dumped),
        (9, 1),
        "good rows land, the bad one is dumped"
    );
    let m = h.metrics();
    assert_eq!(m.dumps, 1);
    assert_eq!(m.retries, 0, "SQL errors are not retried");
    assert_eq!(kv_rows(&h).len(), 9);
    let code = match db {
        Db::Mysql => 1048,  // ER_BAD_NULL_ERROR
        Db::Sqlite => 1299, // SQLITE_CONSTRAINT_NOTNULL
    };
    let dump = DumpFile::open(&cfg.dump_path()).expect("dump opens");
    let lines = dump.load().expect("dump loads");
    assert_eq!(lines.len(), 1);
    let rec = match &lines[0] {
        lattice_storage::dump::DumpLine::Record(r) => r.clone(),
        other => panic!("unparsable dump line {other:?}"),
    };
    assert_eq!(rec.error.class, "sql");
    assert_eq!(rec.error.code, Some(code));
    assert_eq!(rec.table, "kv");
    assert_eq!(rec.params, vec![Value::Int(5), Value::Null, Value::Null]);
    assert!(rec.sql.starts_with("INSERT INTO"), "{}", rec.sql);
    let logs = captured_logs();
    assert!(
        logs.contains(&format!("SQL error {code}")),
        "log lacks the code: {logs}"
    );
    s.shutdown().expect("shutdown");
    // At the next start the record is tried again, fails again, and is kept (never dropped).
    let s = open(&cfg);
    let h = s.handle();
    let m = h.metrics();
    assert_eq!((m.replays, m.replay_failures, m.dump_pending), (0, 1, 1));
    let lines = DumpFile::open(&cfg.dump_path())
        .expect("dump")
        .load()
        .expect("load");
    match &lines[0] {
        lattice_storage::dump::DumpLine::Record(r) => {
            assert_eq!(r.attempts, rec.attempts + 1)
        }
        other => panic!("{other:?}"),
    }
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

/// A row whose write failed with a SQL error (dumped) and was written again later, successfully:
/// the dump record is dropped, so no later start replays the older state over the newer one.
fn a_newer_write_supersedes_a_sql_class_dump_record(db: Db) {
    let cfg = config(db, "supersede");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    // NULL into a NOT NULL column: dumped with a SQL error.
    h.insert(kvt, vec![Value::Int(5)], vec![Value::Null, Value::Null])
        .expect("mark")
        .wait()
        .expect("ack");
    h.insert(kvt, vec![Value::Int(6)], vec![Value::Null, Value::Null])
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(h.flush_and_wait(T).expect("flush").dumped, 2);
    assert_eq!(h.metrics().dump_pending, 2);
    // A newer, good write of row 5 reaches the database: its old record goes.
    h.insert(kvt, vec![Value::Int(5)], kv(55, None))
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(h.flush_and_wait(T).expect("flush").written, 1);
    assert_eq!(h.metrics().dump_pending, 1, "row 6's record stays");
    let lines = DumpFile::open(&cfg.dump_path())
        .expect("dump")
        .load()
        .expect("load");
    match &lines[..] {
        [lattice_storage::dump::DumpLine::Record(r)] => {
            assert_eq!(r.key, vec![Value::Int(6)]);
        }
        other => panic!("{other:?}"),
    }
    s.shutdown().expect("shutdown");
    // The next start replays nothing over row 5.
    let s = open(&cfg);
    let h = s.handle();
    assert_eq!(kv_rows(&h), vec![(5, 55, None)]);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

/// A row whose acknowledged write the database refused (SQL error, dumped) is not read from the
/// database, which still holds the older state: a caller that read it and wrote the row again would
/// reach the database and drop the record, losing the acknowledged write. Once a newer write of
/// the row reaches the database (one not built from that older state), the row reads again.
fn a_row_with_a_sql_class_dump_record_is_not_read_from_the_database(db: Db) {
    let cfg = config(db, "sqlstale");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let load = |k: i64| h.load(kvt, vec![Value::Int(k)]).expect("load").wait();
    for i in [5, 6] {
        h.insert(kvt, vec![Value::Int(i)], kv(i, None))
            .expect("mark")
            .wait()
            .expect("ack");
    }
    assert_eq!(h.flush_and_wait(T).expect("flush").written, 2);
    // An acknowledged write of row 5 that the database refuses: dumped, the database keeps 5.
    h.insert(kvt, vec![Value::Int(5)], vec![Value::Null, Value::Null])
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(h.flush_and_wait(T).expect("flush").dumped, 1);
    let err = load(5).expect_err("the database's row 5 is older than the acknowledged write");
    assert!(err.to_string().contains("dump file"), "{err}");
    assert_eq!(load(6).expect("other rows read"), Some(kv(6, None)));
    s.shutdown().expect("shutdown");
    // The record is tried at the next start, fails again, and still guards the row.
    let s = open(&cfg);
    let h = s.handle();
    let load = |k: i64| h.load(kvt, vec![Value::Int(k)]).expect("load").wait();
    assert_eq!(h.metrics().dump_pending, 1);
    assert!(load(5).is_err(), "still guarded after a restart");
    // A newer write of row 5 reaches the database: the record is dropped, the row reads again.
    h.insert(kvt, vec![Value::Int(5)], kv(55, None))
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(h.flush_and_wait(T).expect("flush").written, 1);
    assert_eq!(h.metrics().dump_pending, 0);
    assert_eq!(load(5).expect("reads again"), Some(kv(55, None)));
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn dump_records_replay_at_start(db: Db) {
    let cfg = config(db, "dumpreplay");
    // First open creates the schema; then a dump record is written by hand, as an operator or an
    // earlier run would leave it.
    let s = open(&cfg);
    s.shutdown().expect("shutdown");
    let spec = schema().tables()[0].clone();
    let dialect = match db {
        Db::Mysql => Dialect::Mysql,
        Db::Sqlite => Dialect::Sqlite,
    };
    let key = vec![Value::Int(42)];
    let entry = lattice_storage::dirty::DirtyEntry {
        op: lattice_storage::Op::Insert,
        values: kv(4242, Some("dumped")),
        seq: 1,
    };
    let row = lattice_storage::dirty::RowRef {
        table: lattice_storage::TableId::first(),
        key: &key,
        entry: &entry,
    };
    let st = sql::upsert(dialect, &spec, &[row]);
    let rec = DumpRecord {
        v: 1,
        at_ms: 0,
        backend: cfg.backend.as_str().into(),
        database: cfg.database_name(),
        table: "kv".into(),
        seq: 1,
        sql: st.sql,
        params: st.params[0].clone(),
        error: DumpError {
            class: "network".into(),
            code: Some(2013),
            message: "lost connection".into(),
        },
        attempts: 9,
        key: vec![],
    };
    let mut dump = DumpFile::open(&cfg.dump_path()).expect("dump");
    dump.append(&[rec]).expect("append");
    std::fs::OpenOptions::new()
        .append(true)
        .open(cfg.dump_path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{ operator note, not a record }\n"))
        .expect("write raw line");
    let s = open(&cfg);
    let h = s.handle();
    let m = h.metrics();
    assert_eq!(
        (m.replays, m.dump_pending),
        (1, 1),
        "record replayed, foreign line kept"
    );
    assert_eq!(kv_rows(&h), vec![(42, 4242, Some("dumped".into()))]);
    let left = std::fs::read_to_string(cfg.dump_path()).expect("dump file kept");
    assert_eq!(left, "{ operator note, not a record }\n");
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

/// A dump record of an upsert of `kv` row `k`, failed with an error of `class`.
fn kv_record(cfg: &StorageConfig, db: Db, k: i64, values: Vec<Value>, class: &str) -> DumpRecord {
    let dialect = match db {
        Db::Mysql => Dialect::Mysql,
        Db::Sqlite => Dialect::Sqlite,
    };
    let key = vec![Value::Int(k)];
    let entry = lattice_storage::dirty::DirtyEntry {
        op: lattice_storage::Op::Insert,
        values,
        seq: 1,
    };
    let row = lattice_storage::dirty::RowRef {
        table: lattice_storage::TableId::first(),
        key: &key,
        entry: &entry,
    };
    let st = sql::upsert(dialect, &schema().tables()[0], &[row]);
    DumpRecord {
        v: 1,
        at_ms: 0,
        backend: cfg.backend.as_str().into(),
        database: cfg.database_name(),
        table: "kv".into(),
        seq: 1,
        sql: st.sql,
        params: st.params[0].clone(),
        error: DumpError {
            class: class.into(),
            code: None,
            message: "test".into(),
        },
        attempts: 1,
        key,
    }
}

/// At start every dump record is tried, however many passes of `dump_replay_max` that takes; a
/// record that fails again stays and does not stop the records after it.
fn every_dump_record_replays_at_start_past_dump_replay_max(db: Db) {
    let mut cfg = config(db, "replaymax");
    cfg.dump_replay_max = 2;
    let s = open(&cfg);
    s.shutdown().expect("shutdown");
    let mut recs = vec![kv_record(
        &cfg,
        db,
        9,
        vec![Value::Null, Value::Null],
        "sql",
    )];
    for k in 1..=5 {
        recs.push(kv_record(&cfg, db, k, kv(k * 10, None), "network"));
    }
    DumpFile::open(&cfg.dump_path())
        .expect("dump")
        .append(&recs)
        .expect("append");
    let s = open(&cfg);
    let h = s.handle();
    let m = h.metrics();
    assert_eq!(
        (m.replays, m.replay_failures, m.dump_pending),
        (5, 1, 1),
        "every good record replayed at start, the bad one kept"
    );
    let rows: Vec<(i64, i64)> = kv_rows(&h).into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(rows, vec![(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn migrations_apply_once_and_verify(db: Db) {
    let cfg = config(db, "migrate");
    let s = open(&cfg);
    let h = s.handle();
    let versions = |h: &lattice_storage::StorageHandle| -> Vec<i64> {
        h.query(
            &format!(
                "SELECT version FROM {} ORDER BY version",
                migrate::VERSION_TABLE
            ),
            vec![],
        )
        .expect("q")
        .wait_timeout(T)
        .expect("rows")
        .iter()
        .map(|r| r[0].as_i64().expect("int"))
        .collect()
    };
    assert_eq!(versions(&h), vec![1, 2]);
    assert!(h.metrics().kind(StmtKind::Ddl).statements >= 2);
    s.shutdown().expect("shutdown");
    // A new migration is applied on the next start, old ones are not re-run.
    let schema3 = schema().migration(Migration::portable(
        3,
        "index",
        &["CREATE INDEX kv_val ON kv (val)"],
    ));
    let s = Storage::open(cfg.clone(), schema3.clone()).expect("open with v3");
    let h = s.handle();
    assert_eq!(versions(&h), vec![1, 2, 3]);
    assert_eq!(h.metrics().kind(StmtKind::Ddl).statements, 1);
    s.shutdown().expect("shutdown");
    // auto_migrate off: a schema that lacks a version is refused with a typed error.
    let mut strict = cfg.clone();
    strict.auto_migrate = false;
    let schema4 = schema3.clone().migration(Migration::portable(
        4,
        "more",
        &["CREATE INDEX kv_note ON kv (note)"],
    ));
    match Storage::open(strict.clone(), schema4) {
        Err(StorageError::Migration(m)) => assert!(m.contains("[4]"), "{m}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened with a missing migration"),
    }
    let sql = migrate::print_sql(&strict, schema().migrations()).expect("prints");
    assert!(sql.contains("CREATE TABLE IF NOT EXISTS kv"));
    assert_eq!(sql.contains("CREATE DATABASE"), db == Db::Mysql);
    // A database newer than the binary (versions it does not know): a WARN, with or without
    // auto_migrate, and the start goes on.
    capture_logs();
    let s = Storage::open(strict, schema()).expect("opens a newer database");
    s.shutdown().expect("shutdown");
    assert!(
        captured_logs().contains("database schema is newer than this binary's migrations"),
        "{}",
        captured_logs()
    );
    let s = Storage::open(cfg, schema3).expect("reopen");
    drop_database(&s.handle());
    s.shutdown().expect("shutdown");
}

fn bad_input_is_a_typed_error(db: Db) {
    let cfg = config(db, "badinput");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    assert!(h.table("nope").is_none());
    assert!(matches!(
        h.insert(kvt, vec![], kv(1, None)),
        Err(StorageError::Arity { what: "key", .. })
    ));
    assert!(matches!(
        h.insert(kvt, vec![Value::Int(1)], vec![]),
        Err(StorageError::Arity { what: "column", .. })
    ));
    assert!(matches!(
        h.mark(
            kvt,
            lattice_storage::Op::Delete,
            vec![Value::Int(1)],
            kv(1, None)
        ),
        Err(StorageError::Arity { .. })
    ));
    assert!(matches!(
        h.load(kvt, vec![Value::Int(1), Value::Int(2)]),
        Err(StorageError::Arity { .. })
    ));
    let big = Value::Bytes(vec![0; 17 << 20]);
    assert!(matches!(
        h.insert(kvt, vec![Value::Int(1)], vec![Value::Int(1), big]),
        Err(StorageError::RowTooLarge(_))
    ));
    // A query error comes back as a typed database error, and the storage goes on working.
    match h
        .query("SELEC nonsense", vec![])
        .expect("queued")
        .wait_timeout(T)
    {
        Err(StorageError::Db(e)) => {
            assert_eq!(e.class, lattice_storage::backend::ErrorClass::Sql)
        }
        other => panic!("expected a SQL error, got {other:?}"),
    }
    h.insert(kvt, vec![Value::Int(1)], kv(1, None))
        .expect("mark")
        .wait()
        .expect("ack");
    h.flush_and_wait(T).expect("flush");
    assert_eq!(kv_rows(&h).len(), 1);
    drop_database(&h);
    s.shutdown().expect("shutdown");
    let bad = StorageConfig {
        database: Some("x-y".into()),
        ..cfg
    };
    assert!(matches!(
        Storage::open(bad, Schema::new()),
        Err(StorageError::Config(_))
    ));
}

fn metrics_snapshot_counts(db: Db) {
    let cfg = config(db, "metrics");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    for i in 0..5 {
        h.insert(kvt, vec![Value::Int(i)], kv(i, None))
            .expect("mark")
            .wait()
            .expect("ack");
    }
    h.flush_and_wait(T).expect("flush");
    h.load(kvt, vec![Value::Int(1)])
        .expect("load")
        .wait_timeout(T)
        .expect("read");
    let m = h.metrics();
    let insert = m.kind(lattice_storage::StmtKind::Insert);
    let select = m.kind(lattice_storage::StmtKind::Select);
    assert_eq!((insert.statements, insert.rows), (1, 5), "{m:?}");
    assert_eq!(select.statements, 1, "{m:?}");
    assert_eq!(m.dirty_marks, 5);
    assert!(insert.latency_us.count == 1 && insert.latency_us.max >= insert.latency_us.min);
    assert!(m.journal_bytes_written > 0);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn backpressure_is_counted_and_loses_nothing_accepted(db: Db) {
    let mut cfg = config(db, "backpressure");
    cfg.queue_capacity = 1;
    cfg.journal_batch = 1;
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let mut rejected = 0u64;
    let mut accepted = Vec::new();
    for i in 0..20_000i64 {
        match h.insert(kvt, vec![Value::Int(i)], kv(i, None)) {
            Ok(t) => accepted.push((i, t)),
            Err(StorageError::Backpressure(cap)) => {
                assert_eq!(cap, 1);
                rejected += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let keys: Vec<i64> = accepted
        .into_iter()
        .map(|(i, t)| {
            t.wait_timeout(T).expect("accepted marks are acknowledged");
            i
        })
        .collect();
    assert_eq!(
        h.metrics().backpressure,
        rejected,
        "every rejection is counted"
    );
    assert_eq!(h.metrics().dirty_marks, keys.len() as u64);
    h.flush_and_wait(T).expect("flush");
    let ids: Vec<i64> = kv_rows(&h).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, keys, "exactly the accepted marks are stored");
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

fn idle_ping(db: Db) {
    let mut cfg = config(db, "ping");
    cfg.ping_interval_ms = 10;
    let s = open(&cfg);
    let h = s.handle();
    let deadline = Instant::now() + T;
    while h.metrics().pings < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = h.metrics();
    assert!(m.pings >= 3, "idle storage pinged {} times", m.pings);
    assert_eq!(m.ping_failures, 0);
    drop_database(&h);
    s.shutdown().expect("shutdown");
    assert!(matches!(h.flush(), Err(StorageError::Closed)));
    assert!(matches!(
        h.insert(h.table("kv").expect("kv"), vec![Value::Int(1)], kv(1, None)),
        Err(StorageError::Closed)
    ));
}

/// Tickets are futures woken from the storage threads: await them on a monoio (shard-style) executor.
fn await_on_monoio(db: Db) {
    let cfg = config(db, "monoio");
    let s = open(&cfg);
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    let (ack, report, row) = rt.block_on(async {
        let mut last = 0;
        for i in 0..100 {
            last = h
                .insert(kvt, vec![Value::Int(i)], kv(i, None))
                .expect("mark")
                .await
                .expect("ack")
                .seq;
        }
        let report = h.flush().expect("flush").await.expect("flushed");
        let row = h
            .load(kvt, vec![Value::Int(42)])
            .expect("load")
            .await
            .expect("read");
        (last, report, row)
    });
    assert_eq!(report.confirmed_seq, ack);
    assert_eq!(report.written, 100);
    assert_eq!(row, Some(kv(42, None)));
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

/// A flush that neither the database nor the dump file takes (a SQL error while the dump file
/// cannot be written, as on a full disk) is held: its rows stay readable, the flush answers an
/// error, newer writes are still acknowledged (journal) and readable, and the held rows are written
/// again at the next interval once the dump file can be written; the checkpoint then moves on.
fn unpersisted_flush_stays_readable_and_is_retried(db: Db) {
    let mut cfg = config(db, "held");
    cfg.flush_interval_ms = 200;
    let blocker = cfg.data_dir.join("blocked");
    cfg.dump_path = Some(blocker.join("held.dump.jsonl"));
    let s = open(&cfg);
    // The dump file's directory becomes a regular file: every append fails, even as root.
    std::fs::write(&blocker, b"not a directory").expect("blocker");
    let h = s.handle();
    let kvt = h.table("kv").expect("kv");
    h.insert(kvt, vec![Value::Int(1)], kv(10, None))
        .expect("mark")
        .wait()
        .expect("ack");
    // NULL into a NOT NULL column: a SQL error, then the dump append fails.
    h.insert(kvt, vec![Value::Int(5)], vec![Value::Null, Value::Null])
        .expect("mark")
        .wait()
        .expect("ack");
    let err = h.flush_and_wait(T).expect_err("nothing took the flush");
    assert!(err.to_string().contains("held"), "{err}");
    let m = h.metrics();
    assert_eq!((m.unpersisted, m.dumps), (1, 0));
    let load = |k: i64| {
        h.load(kvt, vec![Value::Int(k)])
            .expect("load")
            .wait()
            .expect("read")
    };
    assert_eq!(
        load(5),
        Some(vec![Value::Null, Value::Null]),
        "held rows stay readable"
    );
    assert_eq!(load(1), Some(kv(10, None)));
    // Newer writes are acknowledged and readable while the flush is held.
    h.insert(kvt, vec![Value::Int(2)], kv(20, None))
        .expect("mark")
        .wait()
        .expect("ack");
    assert_eq!(load(2), Some(kv(20, None)));
    // The next interval retries the held flush and fails again: counted once.
    let err = h.flush_and_wait(T).expect_err("still held");
    assert!(err.to_string().contains("held"), "{err}");
    assert_eq!(h.metrics().unpersisted, 1);
    // Room for the dump file: the held rows are written (the bad one dumped), then the newer ones.
    std::fs::remove_file(&blocker).expect("unblock");
    let rep = h.flush_and_wait(T).expect("held flush persisted");
    assert_eq!(rep.dumped, 1, "{rep:?}");
    assert!(
        rep.confirmed_seq >= 3,
        "checkpoint moved past every mark: {rep:?}"
    );
    let rows: Vec<i64> = kv_rows(&h).into_iter().map(|r| r.0).collect();
    assert_eq!(rows, vec![1, 2]);
    assert_eq!(h.metrics().dumps, 1);
    drop_database(&h);
    s.shutdown()
        .expect("shutdown after the held flush was persisted");
}

macro_rules! suite {
    ($name:ident, $db:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn round_trip() {
                super::round_trip($db)
            }
            #[test]
            fn update_without_insert_and_composite_keys() {
                super::update_without_insert_and_composite_keys($db)
            }
            #[test]
            fn coalescing() {
                super::coalescing($db)
            }
            #[test]
            fn dirty_bound_triggers_flush() {
                super::dirty_bound_triggers_flush($db)
            }
            #[test]
            fn crash_then_replay() {
                super::crash_then_replay($db)
            }
            #[test]
            fn sql_error_goes_to_dump_with_code() {
                super::sql_error_goes_to_dump_with_code($db)
            }
            #[test]
            fn a_newer_write_supersedes_a_sql_class_dump_record() {
                super::a_newer_write_supersedes_a_sql_class_dump_record($db)
            }
            #[test]
            fn a_row_with_a_sql_class_dump_record_is_not_read_from_the_database() {
                super::a_row_with_a_sql_class_dump_record_is_not_read_from_the_database($db)
            }
            #[test]
            fn dump_records_replay_at_start() {
                super::dump_records_replay_at_start($db)
            }
            #[test]
            fn every_dump_record_replays_at_start_past_dump_replay_max() {
                super::every_dump_record_replays_at_start_past_dump_replay_max($db)
            }
            #[test]
            fn migrations_apply_once_and_verify() {
                super::migrations_apply_once_and_verify($db)
            }
            #[test]
            fn bad_input_is_a_typed_error() {
                super::bad_input_is_a_typed_error($db)
            }
            #[test]
            fn backpressure_is_counted_and_loses_nothing_accepted() {
                super::backpressure_is_counted_and_loses_nothing_accepted($db)
            }
            #[test]
            fn await_on_monoio() {
                super::await_on_monoio($db)
            }
            #[test]
            fn idle_ping() {
                super::idle_ping($db)
            }
            #[test]
            fn unpersisted_flush_stays_readable_and_is_retried() {
                super::unpersisted_flush_stays_readable_and_is_retried($db)
            }
            #[test]
            fn metrics_snapshot_counts() {
                super::metrics_snapshot_counts($db)
            }
        }
    };
}

suite!(sqlite, Db::Sqlite);
suite!(mysql, Db::Mysql);

/// A SQLite flush whose COMMIT fails (here a deferred foreign key a trigger breaks; on a full disk
/// the same) counts one failed statement, so the `storage_outage` alert sees it; the snapshot is
/// held and written once the commit can succeed.
#[test]
fn sqlite_failed_commit_counts_a_statement_error() {
    let mut cfg = config(Db::Sqlite, "commitfail");
    cfg.flush_interval_ms = 200;
    let s = open(&cfg);
    let h = s.handle();
    let q = |sql: &str| h.query(sql, vec![]).expect("query").wait().expect(sql);
    q("PRAGMA foreign_keys = ON");
    q("CREATE TABLE parent (id INTEGER PRIMARY KEY)");
    q("CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)");
    q("CREATE TRIGGER kv_child AFTER INSERT ON kv BEGIN INSERT INTO child VALUES (NEW.id); END");
    let errors = |h: &lattice_storage::StorageHandle| -> u64 {
        h.metrics().kinds.iter().map(|k| k.errors).sum()
    };
    assert_eq!(errors(&h), 0);
    let kvt = h.table("kv").expect("kv");
    h.insert(kvt, vec![Value::Int(1)], kv(10, None))
        .expect("mark")
        .wait()
        .expect("ack");
    let err = h.flush_and_wait(T).expect_err("the commit fails");
    assert!(err.to_string().contains("held"), "{err}");
    assert_eq!(h.metrics().unpersisted, 1);
    assert_eq!(errors(&h), 1, "the failed commit is a failed statement");
    q("DROP TRIGGER kv_child");
    h.flush_and_wait(T).expect("held flush persisted");
    assert_eq!(kv_rows(&h), vec![(1, 10, None)]);
    drop_database(&h);
    s.shutdown().expect("shutdown");
}

#[test]
fn backend_kind_names() {
    assert_eq!(BackendKind::Mysql.as_str(), "mysql");
    assert_eq!(BackendKind::Sqlite.as_str(), "sqlite");
}
