//! The flusher thread: a tokio current-thread runtime (the MySQL client needs tokio; nothing of it
//! leaks out of this thread) that connects, migrates, replays the dump file, then takes the dirty map
//! at an interval, at `dirty_bound` or on request and writes it in batches. Network errors are retried
//! with capped backoff up to `retry_max`; what cannot be written goes to the dump file. It publishes
//! the confirmed seq that lets the journal thread checkpoint, and hosts the read tasks.
//!
//! Owns the write path to the database and the dump file. Knows nothing of the journal file or the
//! caller-facing handle.

use super::backend::{Backend, DbError, ErrorClass};
use super::config::BackendKind;
use super::connect::{connect, AnyBackend};
use super::dirty::{DirtyMap, RowRef};
use super::dump::{now_ms, row_id, DumpError, DumpFile, DumpLine, DumpRecord};
use super::metrics::StmtKind;
use super::reads::{self, InFlight, ReadReq, SqlDumped};
use super::shared::{lock, Shared};
use super::sql::{self, Stmt};
use super::ticket::{AckGuard, FlushReport};
use super::{migrate, Op, StorageError, TableSpec};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

struct Flusher {
    shared: Arc<Shared>,
    backend: Rc<AnyBackend>,
    kind: BackendKind,
    dump: DumpFile,
    /// Rows taken from the dirty map and not yet persisted; reads look here after the dirty map.
    in_flight: InFlight,
    /// A snapshot that could be persisted nowhere (neither the database nor the dump file took
    /// it) and the seq it covers: it stays readable (it is `in_flight`), is written again at each
    /// flush interval before a new snapshot is taken, and freezes the checkpoint until then (the
    /// journal keeps everything). The dirty map fills meanwhile up to `dirty_limit`.
    held: Option<(Rc<DirtyMap>, u64)>,
    /// Rows with a SQL-class record in the dump file, and the newest such record's seq: a newer
    /// write of the row that reaches the database makes those records obsolete (dropped). Loads of
    /// these rows fail (shared with the read tasks), so such a newer write cannot have been built
    /// from the older state the database still holds.
    sql_dumped: SqlDumped,
    last_activity: Instant,
}

/// Body of the flusher thread. Reports the outcome of the start (connect, migrations, dump replay,
/// recovered marks) on `ready` before serving; returns when shutdown is complete.
pub(crate) fn run(
    shared: Arc<Shared>,
    migrations: Vec<migrate::Migration>,
    ready: mpsc::Sender<Result<(), StorageError>>,
    read_rx: tokio::sync::mpsc::Receiver<ReadReq>,
) -> Result<(), StorageError> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StorageError::Config(format!("tokio runtime: {e}"))));
            return Err(StorageError::Closed);
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut f = match Flusher::start(shared.clone(), &migrations).await {
            Ok(f) => f,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Err(StorageError::Closed);
            }
        };
        let _ = ready.send(Ok(()));
        tokio::task::spawn_local(reads::serve(
            shared.clone(),
            f.backend.clone(),
            f.in_flight.clone(),
            f.sql_dumped.clone(),
            read_rx,
        ));
        let r = f.run().await;
        shared.flusher_done.store(true, Ordering::Release);
        // Waiters that arrived after the last flush: their tickets complete with `Closed`.
        lock(&shared.flush_waiters).clear();
        if let Ok(b) = Rc::try_unwrap(f.backend) {
            b.close().await;
        }
        r
    })
}

impl Flusher {
    async fn start(
        shared: Arc<Shared>,
        migrations: &[migrate::Migration],
    ) -> Result<Flusher, StorageError> {
        let cfg = &shared.config;
        let mut attempt = 0;
        let backend = loop {
            match connect(cfg).await {
                Ok(b) => break b,
                Err(e) if e.is_retryable() && attempt < cfg.retry_max => {
                    attempt += 1;
                    shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "storage connect failed; retrying");
                    // The backoff in slices, so that a stop asked meanwhile ends it.
                    let until = tokio::time::Instant::now() + cfg.backoff(attempt);
                    while !shared.open_stop.load(Ordering::Relaxed) {
                        let now = tokio::time::Instant::now();
                        if now >= until {
                            break;
                        }
                        tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
                    }
                    if shared.open_stop.load(Ordering::Relaxed) {
                        tracing::warn!(error = %e, attempt, "storage connect: stop requested; no more retries");
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        if cfg.auto_migrate {
            migrate::apply(&backend, cfg.backend, migrations, &shared.metrics).await?;
        } else {
            migrate::verify(&backend, migrations).await?;
        }
        let dump = DumpFile::open(&cfg.dump_path())
            .map_err(|e| StorageError::Dump(format!("open {}: {e}", cfg.dump_path().display())))?;
        let mut f = Flusher {
            kind: cfg.backend,
            backend: Rc::new(backend),
            dump,
            in_flight: InFlight::default(),
            held: None,
            sql_dumped: SqlDumped::default(),
            last_activity: Instant::now(),
            shared,
        };
        f.publish_dump();
        if f.dump.records() > 0 {
            // Every record is tried at start, `dump_replay_max` per pass (the file is rewritten
            // after each, so a crash keeps the progress). Records that fail stay in place and are
            // skipped by the next pass; a network failure ends the replay.
            let (mut ok, mut skip) = (0, 0);
            let kept = loop {
                let r = f.replay_dump(true, skip).await?;
                ok += r.ok;
                skip += r.tried - r.ok as usize;
                if r.stopped || r.tried < f.shared.config.dump_replay_max {
                    break r.kept;
                }
            };
            tracing::info!(replayed = ok, kept, "dump file replayed at start");
        }
        *f.sql_dumped.borrow_mut() = f
            .dump
            .load()
            .unwrap_or_default()
            .iter()
            .filter_map(|l| match l {
                DumpLine::Record(r) if !r.error.is_network() => r.row_id().map(|id| (id, r.seq)),
                _ => None,
            })
            .fold(std::collections::HashMap::new(), |mut m, (id, seq)| {
                let e = m.entry(id).or_insert(seq);
                *e = (*e).max(seq);
                m
            });
        // Marks recovered from the journal are in the dirty map: write them before serving.
        f.flush_cycle().await;
        Ok(f)
    }

    async fn run(&mut self) -> Result<(), StorageError> {
        let cfg = self.shared.config.clone();
        let interval = cfg.flush_interval();
        let ping_every =
            (cfg.ping_interval_ms > 0).then(|| Duration::from_millis(cfg.ping_interval_ms));
        let mut next_flush = Instant::now() + interval;
        loop {
            let s = &self.shared;
            let closing =
                s.closing.load(Ordering::Acquire) && s.journal_drained.load(Ordering::Acquire);
            if s.halt.load(Ordering::Acquire) && s.journal_drained.load(Ordering::Acquire) {
                return Ok(());
            }
            if !closing {
                let mut wait = next_flush.saturating_duration_since(Instant::now());
                if let Some(p) = ping_every {
                    wait = wait
                        .min((self.last_activity + p).saturating_duration_since(Instant::now()));
                }
                let _ = tokio::time::timeout(
                    wait.max(Duration::from_millis(1)),
                    s.flush_notify.notified(),
                )
                .await;
            }
            let s = &self.shared;
            if s.halt.load(Ordering::Acquire) {
                continue;
            }
            // While a snapshot is held, only the interval (or closing) retries it: a full dirty
            // map or a flush request would otherwise retry it in a tight loop.
            let due = closing
                || Instant::now() >= next_flush
                || (self.held.is_none()
                    && (s.flush_requested.swap(false, Ordering::AcqRel)
                        || lock(&s.dirty).len() >= cfg.dirty_bound
                        || !lock(&s.flush_waiters).is_empty()));
            if due {
                self.flush_cycle().await;
                next_flush = Instant::now() + interval;
            } else if let Some(p) = ping_every {
                if self.last_activity.elapsed() >= p {
                    self.ping().await;
                }
            }
            if closing {
                if self.held.is_some() {
                    return Err(StorageError::Journal(
                        "some flushes could be written neither to the database nor to the dump file; they stay in the journal for the next start".into(),
                    ));
                }
                return Ok(());
            }
        }
    }

    async fn ping(&mut self) {
        self.last_activity = Instant::now();
        self.shared.metrics.pings.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.backend.ping().await {
            self.shared
                .metrics
                .ping_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "storage ping failed");
        }
    }

    /// Persists a held snapshot first, if any, then takes the dirty map and persists it; completes
    /// the flush waiters registered before the take. With nothing to write, replays the network
    /// records of the dump file, so dumped rows reach the database without waiting for a write.
    async fn flush_cycle(&mut self) {
        let s = self.shared.clone();
        let waiters: Vec<AckGuard<FlushReport>> = std::mem::take(&mut *lock(&s.flush_waiters));
        let mut report = FlushReport {
            confirmed_seq: s.confirmed.load(Ordering::Acquire),
            ..FlushReport::default()
        };
        loop {
            let (snap, seq, retry) = match self.held.take() {
                Some((snap, seq)) => (snap, seq, true),
                None => {
                    let (snap, seq) = {
                        let mut d = lock(&s.dirty);
                        let r = d.take_map();
                        s.metrics.dirty_rows.store(0, Ordering::Relaxed);
                        r
                    };
                    s.space.notify_all();
                    (Rc::new(snap), seq, false)
                }
            };
            let mut persisted = true;
            if !snap.is_empty() {
                self.last_activity = Instant::now();
                *self.in_flight.borrow_mut() = Some(snap.clone());
                let (w, d, ok) = self.write_snapshot(&snap).await;
                s.metrics.flush_size(snap.len() as u64);
                report.written += w;
                report.dumped += d;
                persisted = ok;
            } else if self.dump.network_pending() > 0 {
                self.last_activity = Instant::now();
                if let Err(e) = self.replay_dump(false, 0).await {
                    tracing::error!(error = %e, "dump replay failed");
                }
            }
            if !persisted {
                if !retry {
                    s.metrics.unpersisted.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(rows = snap.len(), "flush not persisted (its commit failed, or neither the database nor the dump file took its rows); held in memory (still readable) and retried at each flush interval; the journal keeps it, checkpoint frozen");
                }
                // Stays `in_flight`: reads still find its rows.
                self.held = Some((snap, seq));
                break;
            }
            *self.in_flight.borrow_mut() = None;
            if seq > report.confirmed_seq {
                s.confirmed.store(seq, Ordering::Release);
                report.confirmed_seq = seq;
            }
            if !retry {
                break;
            }
            tracing::info!(
                rows = snap.len(),
                "held flush persisted; checkpoint moves again"
            );
        }
        for w in waiters {
            if self.held.is_some() {
                w.done(Err(StorageError::Journal(
                    "flush not persisted; held in memory and kept in the journal".into(),
                )));
            } else {
                w.done(Ok(report));
            }
        }
    }

    /// Writes every row of `snap`. Returns (written, dumped, persisted).
    async fn write_snapshot(&mut self, snap: &DirtyMap) -> (u64, u64, bool) {
        let cfg = self.shared.config.clone();
        let tables = self.shared.tables.clone();
        let d = self.backend.dialect();
        let batches = sql::plan(&tables, snap.rows(), cfg.batch_rows);
        let mut written = 0u64;
        let mut dumped = 0u64;
        let mut down: Option<(DbError, u32)> = None;
        let mut persisted = true;
        // Rows whose SQL-class dump records a write of this flush supersedes.
        let mut superseded: Vec<String> = Vec::new();
        let began = match self.begin_retry().await {
            Ok(()) => true,
            Err((e, attempts)) => {
                tracing::error!(error = %e, attempts, "flush could not begin past the retry budget; dumping its rows");
                down = Some((e, attempts));
                false
            }
        };
        for b in &batches {
            let spec = &tables[b.table.index()];
            if let Some((e, attempts)) = &down {
                let (n, ok) = self.dump_rows(spec, &b.rows, e, *attempts);
                dumped += n;
                persisted &= ok;
                continue;
            }
            let stmt = sql::batch_stmt(d, spec, b);
            match self.exec_retry(&stmt).await {
                Ok(()) => {
                    written += b.rows.len() as u64;
                    self.note_written(spec, &b.rows, &mut superseded);
                }
                Err((e, attempts)) if e.class != ErrorClass::Sql || b.rows.len() == 1 => {
                    if e.class == ErrorClass::Sql {
                        log_sql_error(spec, &stmt, &e);
                    } else {
                        tracing::error!(error = %e, attempts, table = %spec.name, "database unreachable past the retry budget; dumping");
                        down = Some((e.clone(), attempts));
                    }
                    let (n, ok) = self.dump_rows(spec, &b.rows, &e, attempts);
                    dumped += n;
                    persisted &= ok;
                }
                Err(_) => {
                    // A SQL error in a multi-row statement: find the bad rows one by one.
                    for r in &b.rows {
                        let one = std::slice::from_ref(r);
                        if let Some((e, attempts)) = &down {
                            let (n, ok) = self.dump_rows(spec, one, e, *attempts);
                            dumped += n;
                            persisted &= ok;
                            continue;
                        }
                        let st = row_stmt(d, spec, r);
                        match self.exec_retry(&st).await {
                            Ok(()) => {
                                written += 1;
                                self.note_written(spec, one, &mut superseded);
                            }
                            Err((e, attempts)) => {
                                if e.class == ErrorClass::Sql {
                                    log_sql_error(spec, &st, &e);
                                } else {
                                    down = Some((e.clone(), attempts));
                                }
                                let (n, ok) = self.dump_rows(spec, one, &e, attempts);
                                dumped += n;
                                persisted &= ok;
                            }
                        }
                    }
                }
            }
        }
        if began {
            let t0 = Instant::now();
            if let Err(e) = self.backend.flush_end().await {
                // Counted as a failed statement (kind `ddl`: statements that are not row
                // writes), so a flush that keeps failing to commit shows, and alerts, like one
                // whose statements fail.
                self.shared
                    .metrics
                    .statement(StmtKind::Ddl, 0, t0.elapsed(), false);
                // SQLite commit failed: this flush's rows are not in the database. The snapshot
                // is held (retried at the next interval, readable meanwhile) and the journal keeps
                // it (checkpoint frozen).
                tracing::error!(error = %e, "flush commit failed; its rows are held and written again at the next interval");
                let _ = self.backend.exec_script(&["ROLLBACK".to_owned()]).await;
                persisted = false;
                superseded.clear();
            }
        }
        if !superseded.is_empty() {
            self.drop_superseded(&superseded);
        }
        (written, dumped, persisted)
    }

    /// Begins a flush (SQLite: the transaction), retrying network-class errors (busy, locked,
    /// disk full) like a statement: `retry_max` times with backoff.
    async fn begin_retry(&mut self) -> Result<(), (DbError, u32)> {
        let mut attempt: u32 = 0;
        loop {
            match self.backend.flush_begin().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(gave_up) = self.retry_or_give_up(e, &mut attempt, "begin").await {
                        return Err(gave_up);
                    }
                }
            }
        }
    }

    /// After a failed try of `what`: when `e` is retryable and the budget (`retry_max`) allows,
    /// counts the retry, sleeps its backoff and returns `None`; else the error and the tries made.
    async fn retry_or_give_up(
        &self,
        e: DbError,
        attempt: &mut u32,
        what: &'static str,
    ) -> Option<(DbError, u32)> {
        let cfg = &self.shared.config;
        if !e.is_retryable() || *attempt >= cfg.retry_max {
            return Some((e, *attempt + 1));
        }
        *attempt += 1;
        self.shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, attempt = *attempt, what, "storage call failed; retrying");
        tokio::time::sleep(cfg.backoff(*attempt)).await;
        None
    }

    /// Executes with retries on network errors; replays pending network dump records first so older
    /// data lands before newer. Returns the last error and the attempts made.
    async fn exec_retry(&mut self, stmt: &Stmt) -> Result<(), (DbError, u32)> {
        let mut attempt: u32 = 0;
        loop {
            let r = if self.dump.network_pending() > 0 {
                match self.replay_dump(false, 0).await {
                    Ok(_) if self.dump.network_pending() == 0 => self.exec_stmt(stmt).await,
                    Ok(_) => Err(DbError::network(
                        "older dumped writes are still waiting for the database",
                    )),
                    Err(e) => Err(DbError::network(format!("dump replay: {e}"))),
                }
            } else {
                self.exec_stmt(stmt).await
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(gave_up) = self.retry_or_give_up(e, &mut attempt, "statement").await
                    {
                        return Err(gave_up);
                    }
                }
            }
        }
    }

    async fn exec_stmt(&self, stmt: &Stmt) -> Result<(), DbError> {
        if stmt.params.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let r = self.backend.exec(&stmt.sql, &stmt.params).await;
        self.shared.metrics.statements(
            stmt.kind,
            stmt.params.len() as u64,
            stmt.rows as u64,
            t0.elapsed(),
            r.is_ok(),
        );
        r.map(|_| ())
    }

    /// Publishes the dump file's record counts: the `dump_pending` gauge, and the network-class
    /// records the read path checks before it trusts the database.
    fn publish_dump(&self) {
        let s = &self.shared;
        s.metrics
            .dump_pending
            .store(self.dump.records(), Ordering::Relaxed);
        s.dump_network_pending
            .store(self.dump.network_pending(), Ordering::Release);
    }

    /// Notes rows written to the database that have older SQL-class dump records (they are
    /// dropped once the flush is committed).
    fn note_written(&mut self, spec: &TableSpec, rows: &[RowRef<'_>], out: &mut Vec<String>) {
        let dumped = self.sql_dumped.borrow();
        if dumped.is_empty() {
            return;
        }
        for r in rows {
            let id = row_id(&spec.name, r.key);
            if dumped.get(&id).is_some_and(|&seq| seq < r.entry.seq) {
                out.push(id);
            }
        }
    }

    /// Removes the SQL-class dump records of `rows` (a newer write of each is in the database:
    /// replaying them would put an older state back), logging each.
    fn drop_superseded(&mut self, rows: &[String]) {
        {
            let mut dumped = self.sql_dumped.borrow_mut();
            for id in rows {
                dumped.remove(id);
            }
        }
        let lines = match self.dump.load() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "dump file unreadable; superseded records kept");
                return;
            }
        };
        let gone: std::collections::HashSet<&String> = rows.iter().collect();
        let mut keep = Vec::with_capacity(lines.len());
        for l in lines {
            match &l {
                DumpLine::Record(r)
                    if !r.error.is_network() && r.row_id().is_some_and(|id| gone.contains(&id)) =>
                {
                    tracing::warn!(table = %r.table, seq = r.seq, code = ?r.error.code, "dump record dropped: a newer write of its row reached the database");
                }
                _ => keep.push(l),
            }
        }
        if let Err(e) = self.dump.rewrite(&keep) {
            tracing::error!(error = %e, path = %self.dump.path().display(), "dump file rewrite failed; superseded records kept");
        }
        self.publish_dump();
    }

    /// Appends one record per row. Returns (records, ok).
    fn dump_rows(
        &mut self,
        spec: &TableSpec,
        rows: &[RowRef<'_>],
        e: &DbError,
        attempts: u32,
    ) -> (u64, bool) {
        let d = self.backend.dialect();
        let db = self.shared.config.database_name();
        let recs: Vec<DumpRecord> = rows
            .iter()
            .filter_map(|r| {
                let st = row_stmt(d, spec, r);
                let params = st.params.into_iter().next()?;
                Some(DumpRecord {
                    v: 1,
                    at_ms: now_ms(),
                    backend: self.kind.as_str().into(),
                    database: db.clone(),
                    table: spec.name.clone(),
                    seq: r.entry.seq,
                    sql: st.sql,
                    params,
                    error: DumpError::from(e),
                    attempts,
                    key: r.key.to_vec(),
                })
            })
            .collect();
        match self.dump.append(&recs) {
            Ok(()) => {
                if e.class == ErrorClass::Sql {
                    let mut dumped = self.sql_dumped.borrow_mut();
                    for r in &recs {
                        if let Some(id) = r.row_id() {
                            let seq = dumped.entry(id).or_insert(r.seq);
                            *seq = (*seq).max(r.seq);
                        }
                    }
                }
                self.shared
                    .metrics
                    .dumps
                    .fetch_add(recs.len() as u64, Ordering::Relaxed);
                self.publish_dump();
                (recs.len() as u64, true)
            }
            Err(io) => {
                tracing::error!(error = %io, records = recs.len(), path = %self.dump.path().display(), "dump file write failed");
                (0, false)
            }
        }
    }

    /// Replays the dump file in order, at most `dump_replay_max` records, after passing over the
    /// first `skip` that qualify (tried by an earlier pass at start). At start every record
    /// qualifies; while running only network-class ones (SQL-class ones would fail the same way).
    /// Stops at the first network failure, keeping it and everything after.
    async fn replay_dump(&mut self, at_start: bool, skip: usize) -> Result<Replay, StorageError> {
        let lines = self
            .dump
            .load()
            .map_err(|e| StorageError::Dump(e.to_string()))?;
        let max = self.shared.config.dump_replay_max;
        let m = &self.shared.metrics;
        let mut keep: Vec<DumpLine> = Vec::new();
        let mut stop = false;
        let mut tried = 0usize;
        let mut skipped = 0usize;
        let mut ok = 0u64;
        let mut changed = false;
        for line in lines {
            let mut rec = match line {
                DumpLine::Record(r)
                    if !stop
                        && tried < max
                        && (at_start || r.error.is_network())
                        && r.backend == self.kind.as_str() =>
                {
                    if skipped < skip {
                        skipped += 1;
                        keep.push(DumpLine::Record(r));
                        continue;
                    }
                    r
                }
                other => {
                    keep.push(other);
                    continue;
                }
            };
            tried += 1;
            let stmt = Stmt {
                kind: StmtKind::of_sql(&rec.sql),
                rows: 1,
                params: vec![rec.params.clone()],
                sql: rec.sql.clone(),
            };
            match self.exec_stmt(&stmt).await {
                Ok(()) => {
                    ok += 1;
                    m.replays.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    m.replay_failures.fetch_add(1, Ordering::Relaxed);
                    changed |= rec.error.class != e.class.to_string();
                    if e.is_retryable() {
                        stop = true;
                    } else {
                        tracing::error!(code = ?e.code, error = %e, table = %rec.table, sql = %rec.sql, "dump record replay failed with a SQL error; kept");
                    }
                    rec.error = DumpError::from(&e);
                    rec.attempts = rec.attempts.saturating_add(1);
                    keep.push(DumpLine::Record(rec));
                }
            }
        }
        // Rewrite only when records went away or changed class; a failed retry alone is not worth
        // rewriting the file (its attempt count is then updated at the next rewrite).
        if ok > 0 || changed || (at_start && tried > 0) {
            self.dump.rewrite(&keep).map_err(|e| {
                StorageError::Dump(format!("rewrite {}: {e}", self.dump.path().display()))
            })?;
        }
        self.publish_dump();
        if !at_start && ok > 0 {
            // While running, the records are writes an outage held: say when they went through.
            tracing::info!(
                replayed = ok,
                still_waiting = self.dump.network_pending(),
                "dump file: writes held during a database outage replayed"
            );
        }
        Ok(Replay {
            ok,
            kept: keep.len() as u64,
            tried,
            stopped: stop,
        })
    }
}

/// What one replay pass did.
struct Replay {
    /// Records replayed (removed from the file).
    ok: u64,
    /// Lines left in the file.
    kept: u64,
    /// Records tried (replayed or failed).
    tried: usize,
    /// A network failure ended the pass.
    stopped: bool,
}

fn row_stmt(d: sql::Dialect, spec: &TableSpec, r: &RowRef<'_>) -> Stmt {
    let one = std::slice::from_ref(r);
    match r.entry.op {
        Op::Insert => sql::upsert(d, spec, one),
        Op::Update => sql::update(d, spec, one),
        Op::Delete => sql::delete(d, spec, one),
    }
}

fn log_sql_error(spec: &TableSpec, stmt: &Stmt, e: &DbError) {
    tracing::error!(
        code = ?e.code,
        table = %spec.name,
        sql = %stmt.sql,
        params = ?stmt.params.first(),
        error = %e.message,
        "storage: SQL error {}; statement and data dumped",
        e.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
    );
}
