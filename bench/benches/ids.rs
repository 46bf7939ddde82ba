//! Unique-id generation on one shard: `lattice_server::center::ids::IdGen` (snowflake, a plain
//! per-shard counter) against the usual shortcut, one shared `AtomicU64` counter, measured in the
//! same run on the same thread.
//!
//! Run: `cargo bench -p lattice-bench --bench ids -- [--reps N] [--ids N] [--check] [--only NAME]`
//!
//! Each repetition times `--ids` ids (default 20 M) per variant, in a rotated order:
//! - `idgen`: `IdGen::next(now)` with `now` refreshed every 256 ids from a cached clock, as a shard
//!   reads its clock once per loop pass (the generator borrows milliseconds when the 128 ids of a
//!   millisecond are used up; the lease ceiling is set far ahead so the bench measures the
//!   generator, not the lease);
//! - `idgen_systime`: the same with `SystemTime::now()` read for every id (an upper bound);
//! - `atomic`: `fetch_add(1, Relaxed)` on one `AtomicU64` (uncontended: the cheapest shared counter).
//!
//! The table gives the median ids/s per variant and the median per-repetition ratio against
//! `atomic`. `--check` also verifies that every `idgen` id of a repetition is unique and increasing.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lattice_server::center::ids::IdGen;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn idgen(n: u64, check: bool) -> f64 {
    let start = now_ms();
    let mut g = IdGen::with_ceiling(5, 3, start - 1, u64::MAX >> 2);
    let mut now = start;
    let mut last = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        if i & 255 == 0 {
            now = start + (t0.elapsed().as_millis() as u64);
        }
        let id = g.next(black_box(now)).expect("ceiling far ahead").as_u64();
        if check {
            assert!(id > last, "id {i} not increasing");
            last = id;
        }
        black_box(id);
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn idgen_systime(n: u64) -> f64 {
    let mut g = IdGen::with_ceiling(5, 3, now_ms() - 1, u64::MAX >> 2);
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(g.next(now_ms()).expect("ceiling far ahead"));
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn atomic(n: u64) -> f64 {
    let c = AtomicU64::new(0);
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(c.fetch_add(1, Ordering::Relaxed));
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 7usize;
    let mut n = 20_000_000u64;
    let mut check = false;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--ids" => n = it.next().and_then(|v| v.parse().ok()).expect("--ids N"),
            "--check" => check = true,
            "--only" => only = it.next().cloned(),
            "--bench" => {}
            other => panic!("unknown option {other} (--reps N, --ids N, --check, --only NAME)"),
        }
    }
    // One variant alone (for `valgrind --tool=callgrind`: instructions per id, stable on a noisy
    // machine).
    if let Some(name) = only {
        let rate = match name.as_str() {
            "idgen" => idgen(n, check),
            "idgen_systime" => idgen_systime(n),
            "atomic" => atomic(n),
            other => panic!("--only idgen | idgen_systime | atomic, got {other}"),
        };
        println!("{name}: {rate:.0} ids/s ({n} ids)");
        return;
    }
    let names = ["idgen", "idgen_systime", "atomic"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for r in 0..reps {
        let mut this = [0.0f64; 3];
        for k in 0..3 {
            let v = (k + r) % 3;
            this[v] = match v {
                0 => idgen(n, check),
                1 => idgen_systime(n),
                _ => atomic(n),
            };
        }
        for v in 0..3 {
            rates[v].push(this[v]);
            ratios[v].push(this[v] / this[2]);
        }
    }
    println!("ids per second on one thread, {n} ids x {reps} repetitions (median):");
    println!("{:<14} {:>14} {:>10}", "variant", "ids/s", "vs atomic");
    for v in 0..3 {
        println!(
            "{:<14} {:>14.0} {:>10.3}",
            names[v],
            median(&mut rates[v]),
            median(&mut ratios[v])
        );
    }
}
