//! Storage counters and latency histograms, read as a plain snapshot (the server renders it as
//! Prometheus text).
//!
//! Counters are relaxed atomics (any thread); the latency histograms sit behind a mutex that only the
//! flusher thread records into, so it is uncontended except while a snapshot is taken.
//!
//! Owns the counters and their rendering. Knows nothing of the code that counts.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Statement kinds counted separately. `Select` is a read; the others are writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StmtKind {
    /// `SELECT`.
    Select,
    /// `INSERT` (including the upserts the flusher sends).
    Insert,
    /// `UPDATE`.
    Update,
    /// `REPLACE`.
    Replace,
    /// `DELETE`.
    Delete,
    /// Schema changes (`CREATE`, `ALTER`, `DROP`) and other statements.
    Ddl,
}

impl StmtKind {
    /// All kinds, in rendering order.
    pub const ALL: [StmtKind; 6] = [
        StmtKind::Select,
        StmtKind::Insert,
        StmtKind::Update,
        StmtKind::Replace,
        StmtKind::Delete,
        StmtKind::Ddl,
    ];

    /// Lower-case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StmtKind::Select => "select",
            StmtKind::Insert => "insert",
            StmtKind::Update => "update",
            StmtKind::Replace => "replace",
            StmtKind::Delete => "delete",
            StmtKind::Ddl => "ddl",
        }
    }

    /// Kind of a SQL text by its first keyword.
    pub fn of_sql(sql: &str) -> StmtKind {
        let w: String = sql
            .trim_start()
            .chars()
            .take(7)
            .collect::<String>()
            .to_ascii_lowercase();
        if w.starts_with("select") {
            StmtKind::Select
        } else if w.starts_with("insert") {
            StmtKind::Insert
        } else if w.starts_with("update") {
            StmtKind::Update
        } else if w.starts_with("replace") {
            StmtKind::Replace
        } else if w.starts_with("delete") {
            StmtKind::Delete
        } else {
            StmtKind::Ddl
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

struct KindCounters {
    statements: AtomicU64,
    rows: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 1 h, 2 significant digits: a few KiB per histogram.
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// Live counters of one storage instance.
pub struct Metrics {
    started: Instant,
    kinds: [KindCounters; 6],
    /// Marks accepted (journaled).
    pub dirty_marks: AtomicU64,
    /// Marks folded into an already dirty row.
    pub coalesced_marks: AtomicU64,
    /// Marks refused because the queue was full.
    pub backpressure: AtomicU64,
    /// Times the journal thread paused because `dirty_limit` was reached.
    pub dirty_limit_hits: AtomicU64,
    /// Distinct dirty rows right now.
    pub dirty_rows: AtomicU64,
    /// Bytes appended to the journal.
    pub journal_bytes_written: AtomicU64,
    /// Bytes in live journal segments.
    pub journal_bytes: AtomicU64,
    /// Journal group writes.
    pub journal_appends: AtomicU64,
    /// Journal write or sync failures (marks refused).
    pub journal_errors: AtomicU64,
    /// Marks replayed from the journal at start.
    pub journal_replayed: AtomicU64,
    /// Unconfirmed seqs no journal segment held at start (a segment taken away by hand).
    pub journal_missing: AtomicU64,
    /// Flush cycles that wrote something.
    pub flushes: AtomicU64,
    /// Rows written by flushes (after coalescing).
    pub flushed_rows: AtomicU64,
    /// Retries after network errors.
    pub retries: AtomicU64,
    /// Records appended to the dump file.
    pub dumps: AtomicU64,
    /// Dump records replayed successfully (and removed).
    pub replays: AtomicU64,
    /// Dump records whose replay failed (kept).
    pub replay_failures: AtomicU64,
    /// Records in the dump file.
    pub dump_pending: AtomicU64,
    /// Flush snapshots that could be written neither to the database nor to the dump file; the
    /// journal keeps them for the next start.
    pub unpersisted: AtomicU64,
    /// Reads answered from the dirty map.
    pub dirty_reads: AtomicU64,
    /// Idle pings, and failed ones.
    pub pings: AtomicU64,
    /// Failed idle pings.
    pub ping_failures: AtomicU64,
    batch_rows: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let k = || KindCounters {
            statements: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(hist()),
        };
        Metrics {
            started: Instant::now(),
            kinds: [k(), k(), k(), k(), k(), k()],
            dirty_marks: AtomicU64::new(0),
            coalesced_marks: AtomicU64::new(0),
            backpressure: AtomicU64::new(0),
            dirty_limit_hits: AtomicU64::new(0),
            dirty_rows: AtomicU64::new(0),
            journal_bytes_written: AtomicU64::new(0),
            journal_bytes: AtomicU64::new(0),
            journal_appends: AtomicU64::new(0),
            journal_errors: AtomicU64::new(0),
            journal_replayed: AtomicU64::new(0),
            journal_missing: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushed_rows: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dumps: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            replay_failures: AtomicU64::new(0),
            dump_pending: AtomicU64::new(0),
            unpersisted: AtomicU64::new(0),
            dirty_reads: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            ping_failures: AtomicU64::new(0),
            batch_rows: Mutex::new(hist()),
        }
    }
}

impl Metrics {
    /// Records one executed statement.
    pub fn statement(&self, kind: StmtKind, rows: u64, took: Duration, ok: bool) {
        self.statements(kind, 1, rows, took, ok);
    }

    /// Records `n` executions of one prepared statement that took `took` together (each sample is
    /// `took / n`).
    pub fn statements(&self, kind: StmtKind, n: u64, rows: u64, took: Duration, ok: bool) {
        let n = n.max(1);
        let k = &self.kinds[kind.idx()];
        k.statements.fetch_add(n, Relaxed);
        if ok {
            k.rows.fetch_add(rows, Relaxed);
        } else {
            k.errors.fetch_add(1, Relaxed);
        }
        let us = (took.as_micros() as u64 / n).max(1);
        if let Ok(mut h) = k.latency_us.lock() {
            h.saturating_record_n(us, n);
        }
    }

    /// Records the size of one flush (rows after coalescing).
    pub fn flush_size(&self, rows: u64) {
        self.flushes.fetch_add(1, Relaxed);
        self.flushed_rows.fetch_add(rows, Relaxed);
        if let Ok(mut h) = self.batch_rows.lock() {
            h.saturating_record(rows.max(1));
        }
    }

    /// A consistent-enough copy of every counter and summary.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let kinds = StmtKind::ALL
            .iter()
            .map(|&kind| {
                let k = &self.kinds[kind.idx()];
                let latency = k
                    .latency_us
                    .lock()
                    .map(|h| Summary::of(&h))
                    .unwrap_or_default();
                KindSnapshot {
                    kind,
                    statements: k.statements.load(Relaxed),
                    rows: k.rows.load(Relaxed),
                    errors: k.errors.load(Relaxed),
                    latency_us: latency,
                }
            })
            .collect();
        let l = |a: &AtomicU64| a.load(Relaxed);
        MetricsSnapshot {
            uptime: self.started.elapsed(),
            kinds,
            dirty_marks: l(&self.dirty_marks),
            coalesced_marks: l(&self.coalesced_marks),
            backpressure: l(&self.backpressure),
            dirty_limit_hits: l(&self.dirty_limit_hits),
            dirty_rows: l(&self.dirty_rows),
            journal_bytes_written: l(&self.journal_bytes_written),
            journal_bytes: l(&self.journal_bytes),
            journal_appends: l(&self.journal_appends),
            journal_errors: l(&self.journal_errors),
            journal_replayed: l(&self.journal_replayed),
            journal_missing: l(&self.journal_missing),
            flushes: l(&self.flushes),
            flushed_rows: l(&self.flushed_rows),
            flush_batch_rows: self
                .batch_rows
                .lock()
                .map(|h| Summary::of(&h))
                .unwrap_or_default(),
            retries: l(&self.retries),
            dumps: l(&self.dumps),
            replays: l(&self.replays),
            replay_failures: l(&self.replay_failures),
            dump_pending: l(&self.dump_pending),
            unpersisted: l(&self.unpersisted),
            dirty_reads: l(&self.dirty_reads),
            pings: l(&self.pings),
            ping_failures: l(&self.ping_failures),
        }
    }
}

/// min / max / mean / p50 / p99 of a histogram (0 when empty).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            max: h.max(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
        }
    }
}

/// Counters of one statement kind.
#[derive(Clone, Debug, PartialEq)]
pub struct KindSnapshot {
    /// Which kind.
    pub kind: StmtKind,
    /// Statements executed (including failed ones).
    pub statements: u64,
    /// Rows written or read by successful statements.
    pub rows: u64,
    /// Failed statements.
    pub errors: u64,
    /// Latency in µs.
    pub latency_us: Summary,
}

/// Point-in-time copy of [`Metrics`]. Per-second rates: divide deltas of two snapshots by the
/// difference of their `uptime` (Prometheus: `rate()`).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// Time since the storage opened.
    pub uptime: Duration,
    /// Per statement kind, in [`StmtKind::ALL`] order.
    pub kinds: Vec<KindSnapshot>,
    /// Marks journaled and acknowledged.
    pub dirty_marks: u64,
    /// Marks folded into an already dirty row.
    pub coalesced_marks: u64,
    /// Marks or reads refused because a queue was full.
    pub backpressure: u64,
    /// 50 ms pauses of the journal thread at `dirty_limit`.
    pub dirty_limit_hits: u64,
    /// Distinct dirty rows now.
    pub dirty_rows: u64,
    /// Bytes appended to the journal.
    pub journal_bytes_written: u64,
    /// Bytes in live journal segments.
    pub journal_bytes: u64,
    /// Journal group writes.
    pub journal_appends: u64,
    /// Journal write or sync failures.
    pub journal_errors: u64,
    /// Marks replayed from the journal at start.
    pub journal_replayed: u64,
    /// Unconfirmed seqs no journal segment held at start.
    pub journal_missing: u64,
    /// Flushes that wrote something.
    pub flushes: u64,
    /// Rows written or dumped by flushes.
    pub flushed_rows: u64,
    /// Rows per flush.
    pub flush_batch_rows: Summary,
    /// Retries after network-class errors.
    pub retries: u64,
    /// Records appended to the dump file.
    pub dumps: u64,
    /// Dump records replayed and removed.
    pub replays: u64,
    /// Dump record replays that failed (record kept).
    pub replay_failures: u64,
    /// Records in the dump file.
    pub dump_pending: u64,
    /// Flushes written neither to the database nor to the dump file.
    pub unpersisted: u64,
    /// Reads answered from dirty or in-flight rows.
    pub dirty_reads: u64,
    /// Idle pings.
    pub pings: u64,
    /// Failed idle pings.
    pub ping_failures: u64,
}

impl MetricsSnapshot {
    /// Counters of one statement kind.
    pub fn kind(&self, kind: StmtKind) -> &KindSnapshot {
        &self.kinds[kind.idx()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_sql() {
        assert_eq!(StmtKind::of_sql("  select 1"), StmtKind::Select);
        assert_eq!(StmtKind::of_sql("INSERT INTO t"), StmtKind::Insert);
        assert_eq!(StmtKind::of_sql("Replace into t"), StmtKind::Replace);
        assert_eq!(StmtKind::of_sql("delete from t"), StmtKind::Delete);
        assert_eq!(StmtKind::of_sql("update t"), StmtKind::Update);
        assert_eq!(StmtKind::of_sql("CREATE TABLE x"), StmtKind::Ddl);
    }

    #[test]
    fn snapshot_counts_statements_rows_and_errors() {
        let m = Metrics::default();
        m.statement(StmtKind::Insert, 10, Duration::from_micros(100), true);
        m.statement(StmtKind::Insert, 5, Duration::from_micros(300), true);
        m.statement(StmtKind::Delete, 0, Duration::from_micros(50), false);
        m.flush_size(15);
        m.dirty_marks.fetch_add(3, Relaxed);
        let s = m.snapshot();
        let ins = s.kind(StmtKind::Insert);
        assert_eq!((ins.statements, ins.rows, ins.errors), (2, 15, 0));
        assert_eq!(ins.latency_us.count, 2);
        assert!(ins.latency_us.min <= 100 && ins.latency_us.max >= 299);
        assert_eq!(s.kind(StmtKind::Delete).errors, 1);
    }
}
