//! Per-opcode request counts and handler latency histograms, per shard, in `/metrics`:
//! `lattice_requests_total{shard,msg}` and `lattice_handler_seconds{shard,msg,le}`.
//!
//! The hot path ([`record`]) allocates nothing and takes no lock: the shard that runs a handler is
//! the only writer of its row, so each update is a relaxed load and store on atomics the admin
//! thread reads when scraped. Cost per request: one opcode lookup (an index), two raw TSC reads
//! (`quanta::Clock::raw`) and one scaling of their difference to nanoseconds, a leading-zeros
//! count and three stores. Buckets are powers of two from 1.024 µs to ≈ 1.07 s (`le` in
//! seconds), plus `+Inf`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use lattice_runtime::telemetry::prom::{Kind, Writer};

/// Finite buckets: upper bounds 2^(10+k) ns for k in 0..BUCKETS.
pub const BUCKETS: usize = 21;

/// One message's row on one shard.
struct Row {
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Non-cumulative; the last is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
}

impl Row {
    fn new() -> Row {
        Row {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One shard's rows, indexed by [`lattice_proto::OpcodeInfo::index`].
pub struct ShardOpcodes {
    rows: Vec<Row>,
}

static TABLE: OnceLock<Vec<ShardOpcodes>> = OnceLock::new();

/// The clock of [`now`] and [`record`]. Raw readings are scaled once per request (their
/// difference), not once per reading as `quanta::Instant::now` does.
static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

fn clock() -> &'static quanta::Clock {
    // Calibration (up to ≈ 200 ms) happens in `init`, at start-up, not on a first request.
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Creates the table for `shards` shards (once per process; later calls are ignored) and returns
/// it for rendering.
pub fn init(shards: usize) -> &'static [ShardOpcodes] {
    clock();
    TABLE.get_or_init(|| {
        (0..shards)
            .map(|_| ShardOpcodes {
                rows: (0..lattice_proto::COUNT).map(|_| Row::new()).collect(),
            })
            .collect()
    })
}

/// The bucket of a latency: 0 for ≤ 1024 ns, k for ≤ 2^(10+k) ns, [`BUCKETS`] for +Inf.
pub fn bucket(ns: u64) -> usize {
    if ns <= 1024 {
        return 0;
    }
    let log2_ceil = 64 - (ns - 1).leading_zeros() as usize;
    (log2_ceil - 10).min(BUCKETS)
}

/// A raw monotonic reading for [`record`] (the TSC where the CPU has a stable one, else the
/// monotonic clock's nanoseconds): a start stamp, meaningful only to [`record`].
pub fn now() -> u64 {
    clock().raw()
}

/// Records one handled request of `opcode` on `shard` that started at `start` (from [`now`]) and
/// ends now. Does nothing before [`init`], or for an opcode or shard outside the table. Only
/// shard `shard` may call it for `shard` (single writer per row).
pub fn record(shard: usize, opcode: u16, start: u64) {
    let Some(t) = TABLE.get() else { return };
    let (Some(s), Some(info)) = (t.get(shard), lattice_proto::info(opcode)) else {
        return;
    };
    let Some(row) = s.rows.get(info.index as usize) else {
        return;
    };
    let c = clock();
    // 0 when the TSC went backwards (read on two cores that disagree).
    let ns = c.delta_as_nanos(start, c.raw());
    bump(&row.count, 1);
    bump(&row.sum_ns, ns);
    bump(&row.buckets[bucket(ns)], 1);
}

/// Single-writer increment: a plain load and store (no locked read-modify-write).
#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Renders both families; messages that no shard has handled are left out.
pub fn render(table: &[ShardOpcodes], w: &mut Writer<'_>) {
    let infos = lattice_proto::all();
    let seen = |i: usize| {
        table
            .iter()
            .any(|s| s.rows[i].count.load(Ordering::Relaxed) > 0)
    };
    let used: Vec<usize> = (0..infos.len()).filter(|&i| seen(i)).collect();
    w.family(
        "lattice_requests_total",
        Kind::Counter,
        "Client requests handled by a component, by shard and message.",
    );
    for (shard, s) in table.iter().enumerate() {
        let shard = shard.to_string();
        for &i in &used {
            let info = &infos[i];
            let row = &s.rows[info.index as usize];
            w.sample(
                "lattice_requests_total",
                &[("shard", &shard), ("msg", info.name)],
                row.count.load(Ordering::Relaxed),
            );
        }
    }
    w.family(
        "lattice_handler_seconds",
        Kind::Histogram,
        "Handler run time of client requests (the component's handler, panics included), by shard and message.",
    );
    let bounds: Vec<String> = (0..BUCKETS)
        .map(|k| format!("{:e}", (1u64 << (10 + k)) as f64 / 1e9))
        .collect();
    for (shard, s) in table.iter().enumerate() {
        let shard = shard.to_string();
        for &i in &used {
            let info = &infos[i];
            let row = &s.rows[info.index as usize];
            let mut cum = 0u64;
            for (k, b) in row.buckets.iter().enumerate() {
                cum += b.load(Ordering::Relaxed);
                let le = if k < BUCKETS {
                    bounds[k].as_str()
                } else {
                    "+Inf"
                };
                w.sample(
                    "lattice_handler_seconds_bucket",
                    &[("shard", &shard), ("msg", info.name), ("le", le)],
                    cum,
                );
            }
            w.sample(
                "lattice_handler_seconds_sum",
                &[("shard", &shard), ("msg", info.name)],
                row.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            );
            // The count is the +Inf bucket (read once above), so the two always agree.
            w.sample(
                "lattice_handler_seconds_count",
                &[("shard", &shard), ("msg", info.name)],
                cum,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1024), 0);
        assert_eq!(bucket(1025), 1);
        assert_eq!(bucket(2048), 1);
        assert_eq!(bucket(2049), 2);
        assert_eq!(bucket(1 << 30), 20);
        assert_eq!(bucket((1 << 30) + 1), BUCKETS);
        assert_eq!(bucket(u64::MAX), BUCKETS);
    }

    #[test]
    fn record_counts_the_run_time_from_a_stamp_of_now() {
        let table = init(1);
        let ping = lattice_proto::info(lattice_proto::opcode::PING).unwrap();
        let row = &table[0].rows[ping.index as usize];
        let (count, sum) = (
            row.count.load(Ordering::Relaxed),
            row.sum_ns.load(Ordering::Relaxed),
        );
        let start = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        record(0, lattice_proto::opcode::PING, start);
        assert_eq!(row.count.load(Ordering::Relaxed), count + 1);
        let took = row.sum_ns.load(Ordering::Relaxed) - sum;
        assert!(took >= 1_000_000, "a 2 ms sleep measured as {took} ns");
        // A stamp from the future (TSCs of two cores that disagree) counts as 0 ns, not as ≈ 584
        // years.
        let buckets0 = row.buckets[0].load(Ordering::Relaxed);
        record(0, lattice_proto::opcode::PING, u64::MAX);
        assert_eq!(row.buckets[0].load(Ordering::Relaxed), buckets0 + 1);
        // Unknown opcodes and shards are ignored.
        record(0, 0, start);
        record(1_000_000, lattice_proto::opcode::PING, start);
        assert_eq!(row.count.load(Ordering::Relaxed), count + 2);
    }

    #[test]
    fn renders_cumulative_buckets_for_handled_messages_only() {
        let table: Vec<ShardOpcodes> = (0..2)
            .map(|_| ShardOpcodes {
                rows: (0..lattice_proto::COUNT).map(|_| Row::new()).collect(),
            })
            .collect();
        let ping = lattice_proto::info(lattice_proto::opcode::PING).unwrap();
        let row = &table[1].rows[ping.index as usize];
        for ns in [500u64, 1500, 3000, 3000] {
            bump(&row.count, 1);
            bump(&row.sum_ns, ns);
            bump(&row.buckets[bucket(ns)], 1);
        }
        let mut out = String::new();
        render(&table, &mut Writer::new(&mut out));
        assert!(
            out.contains("lattice_requests_total{shard=\"1\",msg=\"Ping\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("lattice_requests_total{shard=\"0\",msg=\"Ping\"} 0\n"));
        assert!(!out.contains("msg=\"Say\""), "unused messages are left out");
        assert!(
            out.contains(
                "lattice_handler_seconds_bucket{shard=\"1\",msg=\"Ping\",le=\"1.024e-6\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains(
            "lattice_handler_seconds_bucket{shard=\"1\",msg=\"Ping\",le=\"4.096e-6\"} 4\n"
        ));
        assert!(out
            .contains("lattice_handler_seconds_bucket{shard=\"1\",msg=\"Ping\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("lattice_handler_seconds_count{shard=\"1\",msg=\"Ping\"} 4\n"));
        assert!(
            out.contains("lattice_handler_seconds_sum{shard=\"1\",msg=\"Ping\"} 0.000008\n"),
            "{out}"
        );
    }
}
