//! Timer benchmarks: `lattice_runtime::time::TimerWheel` against `std::collections::BinaryHeap`,
//! `tokio_util::time::DelayQueue` and `hierarchical_hash_wheel_timer` (cancellable quad wheel).
//!
//! Run: `cargo bench -p lattice-bench --bench timer -- [--reps N] [--only NAME] [--impl NAME]
//! [--no-mem]` (`--impl lattice|binary_heap|delay_queue|hhwt` runs one implementation, for
//! `bench/timer_callgrind.sh`).
//!
//! Every scenario runs every implementation once per repetition, in a rotated order, so the
//! implementations share the machine's noise; the table gives the median ns/op per
//! implementation and the median of the per-repetition ratios against the Lattice wheel.
//! Memory per timer is measured in a child process per implementation (RssAnon delta from
//! `/proc/self/status` around inserting N timers), so no allocator hooks are needed.
//!
//! Baseline notes: `BinaryHeap` has no cancel, so it gets the usual lazy cancel (a flag per
//! timer, skipped when popped; memory is not reclaimed until then). `DelayQueue` runs on a
//! current-thread tokio runtime with real time, so its expiry scenarios wait (untimed) until
//! the deadlines have passed and then time the drain.

#![allow(clippy::needless_range_loop)] // index loops mirror each other across implementations

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hierarchical_hash_wheel_timer::wheels::cancellable::QuadWheelWithOverflow;
use hierarchical_hash_wheel_timer::IdOnlyTimerEntry;
use lattice_runtime::time::{TimerHandle, TimerWheel, WheelConfig};
use tokio::runtime::Runtime;
use tokio_util::time::DelayQueue;

const IMPLS: [&str; 4] = ["lattice", "binary_heap", "delay_queue", "hhwt"];
const LATTICE: usize = 0;
const HEAP: usize = 1;
const DQ: usize = 2;
const HHWT: usize = 3;

type Hhwt = QuadWheelWithOverflow<IdOnlyTimerEntry<u64>>;
type Heap = BinaryHeap<Reverse<(u64, u32)>>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn deadlines(n: usize, lo: u64, hi: u64, seed: u64) -> Vec<u64> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.range(lo, hi)).collect()
}

fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut r = Rng(seed);
    for i in (1..n).rev() {
        let j = (r.next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

fn wheel_cfg() -> WheelConfig {
    WheelConfig {
        max_timers: 1 << 24,
        max_fire_per_pass: u32::MAX,
        max_cascade_per_pass: u32::MAX,
        ..WheelConfig::default()
    }
}

fn new_wheel() -> TimerWheel<u64> {
    TimerWheel::new(wheel_cfg()).expect("valid wheel config")
}

fn ns_per(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn hh_entry(id: u64, ms: u64) -> IdOnlyTimerEntry<u64> {
    IdOnlyTimerEntry {
        id,
        delay: Duration::from_millis(ms),
    }
}

// ---------------------------------------------------------------- scenarios

// The timed Lattice loops live in functions of their own so that `bench/timer_callgrind.sh` can
// count exactly their instructions and cache misses (`callgrind --toggle-collect`).

#[inline(never)]
fn lattice_insert_loop(w: &mut TimerWheel<u64>, ds: &[u64]) {
    for (i, d) in ds.iter().enumerate() {
        black_box(w.insert(*d, i as u64).ok());
    }
}

#[inline(never)]
fn lattice_cancel_loop(w: &mut TimerWheel<u64>, handles: &[TimerHandle]) {
    for h in handles {
        black_box(w.cancel(*h));
    }
}

#[inline(never)]
fn lattice_cancel_lookup_loop(w: &mut TimerWheel<u64>, hs: &[TimerHandle], order: &[usize]) {
    for &i in order {
        black_box(w.cancel(hs[i]));
    }
}

#[inline(never)]
fn lattice_remove_loop(w: &mut TimerWheel<u64>, handles: &[TimerHandle]) -> u64 {
    let mut acc = 0u64;
    for h in handles {
        acc = acc.wrapping_add(w.remove(*h).unwrap_or(0));
    }
    acc
}

#[inline(never)]
fn lattice_churn_loop(
    w: &mut TimerWheel<u64>,
    ds: &[u64],
    kill: &[bool],
    hs: &mut Vec<TimerHandle>,
    window: usize,
) {
    let n = ds.len();
    for i in 0..n {
        if let Ok(h) = w.insert(ds[i], i as u64) {
            hs.push(h);
        }
        if i >= window && kill[i - window] {
            black_box(w.cancel(hs[i - window]));
        }
    }
    for i in n.saturating_sub(window)..n {
        if kill[i] {
            black_box(w.cancel(hs[i]));
        }
    }
}

#[inline(never)]
fn lattice_expire_loop(w: &mut TimerWheel<u64>, ticks: u64) -> u64 {
    let mut acc = 0u64;
    for now in 1..=ticks {
        w.advance(now, |e| acc = acc.wrapping_add(e.item));
    }
    acc
}

/// Insert `n` timers with deadlines uniform in 1 ms .. 10 min into an empty structure.
fn insert(imp: usize, n: usize, rt: &Runtime) -> f64 {
    let ds = deadlines(n, 1, 600_000, 1);
    match imp {
        LATTICE => {
            let mut w = new_wheel();
            let t = Instant::now();
            lattice_insert_loop(&mut w, &ds);
            ns_per(t, n)
        }
        HEAP => {
            let mut h = Heap::new();
            let t = Instant::now();
            for (i, d) in ds.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            let r = ns_per(t, n);
            black_box(&h);
            r
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            let at: Vec<_> = ds
                .iter()
                .map(|d| base + Duration::from_millis(*d))
                .collect();
            let t = Instant::now();
            for (i, when) in at.iter().enumerate() {
                black_box(q.insert_at(i as u64, *when));
            }
            ns_per(t, n)
        }),
        _ => {
            let mut w = Hhwt::new();
            let t = Instant::now();
            for (i, d) in ds.iter().enumerate() {
                black_box(w.insert(hh_entry(i as u64, *d)).is_ok());
            }
            ns_per(t, n)
        }
    }
}

/// How the `cancel` scenarios reach their timers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CancelMode {
    /// Handles (DelayQueue keys) are read in the cancel order from an array permuted beforehand,
    /// as a caller that holds each handle in the object it is working on: what is timed is the
    /// structure's own work. Lattice `cancel`, DelayQueue `try_remove`.
    Cancel,
    /// As before this scenario was split: the handle is read at a random index of an 8 MB
    /// array, one more cache miss per cancel that belongs to the harness.
    HandleArray,
    /// Like `Cancel`, but Lattice hands the value back (`remove`), as DelayQueue does.
    Remove,
}

/// Cancel all of `n` pending timers in random order (inserting is not timed). The binary heap
/// sets a flag at the timer's index (its lazy cancel); hhwt cancels by id (a hash-map removal).
fn cancel_with(mode: CancelMode, imp: usize, n: usize, rt: &Runtime) -> f64 {
    let ds = deadlines(n, 1, 600_000, 2);
    let order = permutation(n, 3);
    match imp {
        LATTICE => {
            let mut w = new_wheel();
            let hs: Vec<TimerHandle> = ds
                .iter()
                .enumerate()
                .filter_map(|(i, d)| w.insert(*d, i as u64).ok())
                .collect();
            let in_order: Vec<TimerHandle> = order.iter().map(|&i| hs[i]).collect();
            let t = Instant::now();
            match mode {
                CancelMode::Cancel => lattice_cancel_loop(&mut w, &in_order),
                CancelMode::HandleArray => lattice_cancel_lookup_loop(&mut w, &hs, &order),
                CancelMode::Remove => {
                    black_box(lattice_remove_loop(&mut w, &in_order));
                }
            }
            ns_per(t, n)
        }
        HEAP => {
            let mut h = Heap::new();
            for (i, d) in ds.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            let mut cancelled = vec![false; n];
            let t = Instant::now();
            for &i in &order {
                cancelled[i] = true;
            }
            let r = ns_per(t, n);
            black_box((&h, &cancelled));
            r
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            let keys: Vec<_> = ds
                .iter()
                .enumerate()
                .map(|(i, d)| q.insert_at(i as u64, base + Duration::from_millis(*d)))
                .collect();
            if mode == CancelMode::HandleArray {
                let t = Instant::now();
                for &i in &order {
                    black_box(q.try_remove(&keys[i]));
                }
                return ns_per(t, n);
            }
            let in_order: Vec<_> = order.iter().map(|&i| keys[i]).collect();
            let t = Instant::now();
            for k in &in_order {
                black_box(q.try_remove(k));
            }
            ns_per(t, n)
        }),
        _ => {
            let mut w = Hhwt::new();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(hh_entry(i as u64, *d));
            }
            let t = Instant::now();
            for &i in &order {
                black_box(w.cancel(&(i as u64)).is_ok());
            }
            ns_per(t, n)
        }
    }
}

fn cancel(imp: usize, n: usize, rt: &Runtime) -> f64 {
    cancel_with(CancelMode::Cancel, imp, n, rt)
}

fn cancel_handle_array(imp: usize, n: usize, rt: &Runtime) -> f64 {
    cancel_with(CancelMode::HandleArray, imp, n, rt)
}

fn remove(imp: usize, n: usize, rt: &Runtime) -> f64 {
    cancel_with(CancelMode::Remove, imp, n, rt)
}

/// Heartbeat-like churn: insert `n` timers; 90 % of them are cancelled 1024 inserts later
/// (well before expiry). ns per inserted timer (insert + 0.9 cancel).
fn insert_cancel_90(imp: usize, n: usize, rt: &Runtime) -> f64 {
    const WINDOW: usize = 1024;
    let ds = deadlines(n, 1_000, 600_000, 4);
    let mut r = Rng(5);
    let kill: Vec<bool> = (0..n).map(|_| !r.next().is_multiple_of(10)).collect();
    match imp {
        LATTICE => {
            let mut w = new_wheel();
            let mut hs: Vec<TimerHandle> = Vec::with_capacity(n);
            let t = Instant::now();
            lattice_churn_loop(&mut w, &ds, &kill, &mut hs, WINDOW);
            ns_per(t, n)
        }
        HEAP => {
            let mut h = Heap::new();
            let mut cancelled = vec![false; n];
            let t = Instant::now();
            for i in 0..n {
                h.push(Reverse((ds[i], i as u32)));
                if i >= WINDOW && kill[i - WINDOW] {
                    cancelled[i - WINDOW] = true;
                }
            }
            for i in n.saturating_sub(WINDOW)..n {
                if kill[i] {
                    cancelled[i] = true;
                }
            }
            let r = ns_per(t, n);
            black_box((&h, &cancelled));
            r
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            let at: Vec<_> = ds
                .iter()
                .map(|d| base + Duration::from_millis(*d))
                .collect();
            let mut keys = Vec::with_capacity(n);
            let t = Instant::now();
            for i in 0..n {
                keys.push(q.insert_at(i as u64, at[i]));
                if i >= WINDOW && kill[i - WINDOW] {
                    black_box(q.try_remove(&keys[i - WINDOW]));
                }
            }
            for i in n.saturating_sub(WINDOW)..n {
                if kill[i] {
                    black_box(q.try_remove(&keys[i]));
                }
            }
            ns_per(t, n)
        }),
        _ => {
            let mut w = Hhwt::new();
            let t = Instant::now();
            for i in 0..n {
                let _ = w.insert(hh_entry(i as u64, ds[i]));
                if i >= WINDOW && kill[i - WINDOW] {
                    black_box(w.cancel(&((i - WINDOW) as u64)).is_ok());
                }
            }
            for i in n.saturating_sub(WINDOW)..n {
                if kill[i] {
                    black_box(w.cancel(&(i as u64)).is_ok());
                }
            }
            ns_per(t, n)
        }
    }
}

/// `n` timers due over 100 ticks (1 ms each), all fired by advancing tick by tick.
/// ns per fired timer. DelayQueue: real time; the wait is not timed, the drain is.
fn expire_bulk(imp: usize, n: usize, rt: &Runtime) -> f64 {
    let ds = deadlines(n, 1, 101, 6);
    let mut acc = 0u64;
    let r = match imp {
        LATTICE => {
            let mut w = new_wheel();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(*d, i as u64);
            }
            let t = Instant::now();
            acc = lattice_expire_loop(&mut w, 100);
            ns_per(t, n)
        }
        HEAP => {
            let mut h = Heap::new();
            for (i, d) in ds.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            let t = Instant::now();
            for now in 1..=100 {
                while let Some(Reverse((d, id))) = h.peek().copied() {
                    if d > now {
                        break;
                    }
                    h.pop();
                    acc = acc.wrapping_add(u64::from(id));
                }
            }
            ns_per(t, n)
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            for (i, d) in ds.iter().enumerate() {
                q.insert_at(i as u64, base + Duration::from_millis(*d));
            }
            tokio::time::sleep_until(base + Duration::from_millis(110)).await;
            let t = Instant::now();
            let mut fired = 0;
            while let Some(e) = poll_fn(|cx| q.poll_expired(cx)).await {
                acc = acc.wrapping_add(e.into_inner());
                fired += 1;
            }
            assert_eq!(fired, n, "DelayQueue drained everything");
            ns_per(t, n)
        }),
        _ => {
            let mut w = Hhwt::new();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(hh_entry(i as u64, *d));
            }
            let t = Instant::now();
            for _ in 1..=100 {
                for e in w.tick() {
                    acc = acc.wrapping_add(e.id);
                }
            }
            ns_per(t, n)
        }
    };
    black_box(acc);
    r
}

/// 10 000 timers far out; 100 000 passes that advance one tick and find nothing due.
/// ns per pass. (DelayQueue: a `poll_expired` with nothing due.)
fn advance_sparse(imp: usize, passes: usize, rt: &Runtime) -> f64 {
    const TIMERS: usize = 10_000;
    let far = passes as u64 + 1;
    let ds = deadlines(TIMERS, far, far + 10_000_000, 7);
    let mut acc = 0u64;
    let r = match imp {
        LATTICE => {
            let mut w = new_wheel();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(*d, i as u64);
            }
            let t = Instant::now();
            for now in 1..=passes as u64 {
                w.advance(now, |e| acc = acc.wrapping_add(e.item));
            }
            ns_per(t, passes)
        }
        HEAP => {
            let mut h = Heap::new();
            for (i, d) in ds.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            let t = Instant::now();
            for now in 1..=passes as u64 {
                while let Some(Reverse((d, id))) = h.peek().copied() {
                    if d > now {
                        break;
                    }
                    h.pop();
                    acc = acc.wrapping_add(u64::from(id));
                }
            }
            ns_per(t, passes)
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            for (i, d) in ds.iter().enumerate() {
                q.insert_at(i as u64, base + Duration::from_millis(*d));
            }
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let t = Instant::now();
            for _ in 0..passes {
                if let std::task::Poll::Ready(Some(e)) = q.poll_expired(&mut cx) {
                    acc = acc.wrapping_add(e.into_inner());
                }
            }
            ns_per(t, passes)
        }),
        _ => {
            let mut w = Hhwt::new();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(hh_entry(i as u64, *d));
            }
            let t = Instant::now();
            for _ in 0..passes {
                for e in w.tick() {
                    acc = acc.wrapping_add(e.id);
                }
            }
            ns_per(t, passes)
        }
    };
    black_box(acc);
    r
}

/// Periodic timers: fire and re-arm. Lattice/heap/hhwt: 10 000 timers with a 100-tick period
/// run for 1 000 ticks (100 000 firings). DelayQueue (real time): 100 000 timers due within
/// 100 ms, drained after they are due, each re-inserted one period later.
/// ns per firing (fire + re-arm).
fn periodic_rearm(imp: usize, firings: usize, rt: &Runtime) -> f64 {
    const PERIOD: u64 = 100;
    // 10 000 timers at full size; fewer in the smoke run so each still fires ten times.
    let timers = (firings / 10).clamp(1, 10_000);
    let ticks = (firings / timers) as u64 * PERIOD;
    let mut acc = 0u64;
    let r = match imp {
        LATTICE => {
            let mut w = new_wheel();
            for i in 0..timers {
                let _ = w.insert_periodic(1 + i as u64 % PERIOD, PERIOD, i as u64);
            }
            let mut fired = 0usize;
            let t = Instant::now();
            for now in 1..=ticks {
                w.advance(now, |e| {
                    acc = acc.wrapping_add(e.item);
                    fired += 1;
                });
            }
            let r = ns_per(t, fired);
            assert_eq!(fired, firings);
            r
        }
        HEAP => {
            let mut h = Heap::new();
            for i in 0..timers {
                h.push(Reverse((1 + i as u64 % PERIOD, i as u32)));
            }
            let mut fired = 0usize;
            let t = Instant::now();
            for now in 1..=ticks {
                while let Some(Reverse((d, id))) = h.peek().copied() {
                    if d > now {
                        break;
                    }
                    h.pop();
                    h.push(Reverse((d + PERIOD, id)));
                    acc = acc.wrapping_add(u64::from(id));
                    fired += 1;
                }
            }
            let r = ns_per(t, fired);
            assert_eq!(fired, firings);
            r
        }
        DQ => rt.block_on(async {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            for i in 0..firings {
                q.insert_at(
                    i as u64,
                    base + Duration::from_millis(1 + i as u64 % PERIOD),
                );
            }
            let end = base + Duration::from_millis(PERIOD + 10);
            tokio::time::sleep_until(end).await;
            let mut fired = 0usize;
            let t = Instant::now();
            while fired < firings {
                let Some(e) = poll_fn(|cx| q.poll_expired(cx)).await else {
                    break;
                };
                let next = e.deadline() + Duration::from_millis(1000);
                acc = acc.wrapping_add(*e.get_ref());
                q.insert_at(e.into_inner(), next);
                fired += 1;
            }
            let r = ns_per(t, fired);
            assert_eq!(fired, firings);
            r
        }),
        _ => {
            let mut w = Hhwt::new();
            for i in 0..timers {
                let _ = w.insert(hh_entry(i as u64, 1 + i as u64 % PERIOD));
            }
            let mut fired = 0usize;
            let t = Instant::now();
            for _ in 1..=ticks {
                let due: Vec<Rc<IdOnlyTimerEntry<u64>>> = w.tick();
                for e in due {
                    acc = acc.wrapping_add(e.id);
                    let _ = w.insert(hh_entry(e.id, PERIOD));
                    fired += 1;
                }
            }
            let r = ns_per(t, fired);
            assert_eq!(fired, firings);
            r
        }
    };
    black_box(acc);
    r
}

// ---------------------------------------------------------------- memory

fn rss_anon_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("RssAnon:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            return kb * 1024;
        }
    }
    0
}

/// Child process: insert `n` timers into `imp`, print RssAnon growth per timer.
fn mem_child(imp: usize, n: usize) {
    let ds = deadlines(n, 1, 600_000, 8);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    let before = rss_anon_bytes();
    let mut own = 0u64;
    match imp {
        LATTICE => {
            let mut w = new_wheel();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(*d, i as u64);
            }
            let after = rss_anon_bytes();
            own = w.stats().allocated_bytes;
            println!("{} {}", after - before, own);
            black_box(&w);
        }
        HEAP => {
            let mut h = Heap::new();
            for (i, d) in ds.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            // A heap alone cannot cancel; count the lazy-cancel flag it needs too.
            let flags = vec![false; n];
            let after = rss_anon_bytes();
            println!("{} {}", after - before, own);
            black_box((&h, &flags));
        }
        DQ => {
            let mut q = DelayQueue::new();
            let base = tokio::time::Instant::now();
            for (i, d) in ds.iter().enumerate() {
                q.insert_at(i as u64, base + Duration::from_millis(*d));
            }
            let after = rss_anon_bytes();
            println!("{} {}", after - before, own);
            black_box(&q);
        }
        _ => {
            let mut w = Hhwt::new();
            for (i, d) in ds.iter().enumerate() {
                let _ = w.insert(hh_entry(i as u64, *d));
            }
            let after = rss_anon_bytes();
            println!("{} {}", after - before, own);
            black_box(&w);
        }
    }
}

fn measure_mem(imp: usize, n: usize) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .args(["--mem-child", &imp.to_string(), &n.to_string()])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let rss: f64 = it.next()?.parse().ok()?;
    let own: f64 = it.next()?.parse().ok()?;
    Some((rss / n as f64, own / n as f64))
}

// ---------------------------------------------------------------- driver

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

type Scenario = fn(usize, usize, &Runtime) -> f64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--mem-child") {
        let imp = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let n = args
            .get(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        mem_child(imp, n);
        return;
    }
    let mut reps = 7usize;
    let mut only: Option<String> = None;
    let mut only_impl: Option<usize> = None;
    let mut mem = true;
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) gets a quick
    // smoke run with small sizes so a debug build does not spend minutes here.
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--reps" => {
                reps = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(reps);
                i += 1;
            }
            "--only" => {
                only = args.get(i + 1).cloned();
                i += 1;
            }
            "--impl" => {
                only_impl = args
                    .get(i + 1)
                    .and_then(|name| IMPLS.iter().position(|x| x == name));
                if only_impl.is_none() {
                    eprintln!("--impl takes one of {IMPLS:?}");
                    std::process::exit(2);
                }
                i += 1;
            }
            "--no-mem" => mem = false,
            _ => {} // `cargo bench` passes `--bench`
        }
        i += 1;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    assert_eq!(IMPLS[HHWT], "hhwt");

    let scenarios: [(&str, usize, Scenario, &str); 11] = [
        ("timer/insert/1k", 1_000, insert, "ns/insert"),
        ("timer/insert/100k", 100_000, insert, "ns/insert"),
        ("timer/insert/1M", 1_000_000, insert, "ns/insert"),
        (
            "timer/cancel/10k",
            10_000,
            cancel,
            "ns/cancel (random order)",
        ),
        (
            "timer/cancel/1M",
            1_000_000,
            cancel,
            "ns/cancel (random order)",
        ),
        (
            "timer/cancel_handle_array/1M",
            1_000_000,
            cancel_handle_array,
            "ns/cancel (random order, handle read from an 8 MB array)",
        ),
        (
            "timer/remove/1M",
            1_000_000,
            remove,
            "ns/cancel returning the value (random order)",
        ),
        (
            "timer/insert_cancel_90",
            1_000_000,
            insert_cancel_90,
            "ns/timer",
        ),
        ("timer/expire_bulk", 100_000, expire_bulk, "ns/fired timer"),
        ("timer/advance_sparse", 100_000, advance_sparse, "ns/pass"),
        ("timer/periodic_rearm", 100_000, periodic_rearm, "ns/firing"),
    ];

    println!(
        "reps = {reps} (interleaved, rotated order); medians; ratio = median over reps of baseline/lattice (>1: Lattice faster)\n"
    );
    println!("| benchmark | unit | lattice | binary_heap | delay_queue | hhwt | heap/lattice | dq/lattice | hhwt/lattice |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, n, f, unit) in scenarios {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let n = if smoke { n.min(2_000) } else { n };
        let reps = if smoke { 1 } else { reps };
        // Repetitions of 1k are too short to time alone: batch them.
        let inner = if n < 10_000 {
            100
        } else if n <= 10_000 {
            20
        } else {
            1
        };
        let mut res: [Vec<f64>; 4] = Default::default();
        for rep in 0..reps {
            for k in 0..IMPLS.len() {
                let imp = (k + rep) % IMPLS.len();
                if only_impl.is_some_and(|o| o != imp) {
                    res[imp].push(f64::NAN);
                    continue;
                }
                let mut v: Vec<f64> = (0..inner).map(|_| f(imp, n, &rt)).collect();
                res[imp].push(median(&mut v));
            }
        }
        let mut ratios: [Vec<f64>; 4] = Default::default();
        for rep in 0..reps {
            for imp in 1..4 {
                ratios[imp].push(res[imp][rep] / res[LATTICE][rep]);
            }
        }
        let med: Vec<f64> = res.iter_mut().map(|v| median(v)).collect();
        let rat: Vec<f64> = ratios.iter_mut().skip(1).map(|v| median(v)).collect();
        println!(
            "| {name} | {unit} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× | {:.2}× |",
            med[0], med[1], med[2], med[3], rat[0], rat[1], rat[2]
        );
        // Spread, so the noise is visible.
        let spread: Vec<String> = res
            .iter()
            .map(|v| {
                if v.iter().all(|x| x.is_nan()) {
                    return "—".to_string();
                }
                let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = v.iter().cloned().fold(0.0, f64::max);
                format!("{lo:.1}–{hi:.1}")
            })
            .collect();
        eprintln!("  {name}: min–max over reps: {}", spread.join(" | "));
    }
    if smoke {
        println!(
            "\n(smoke run with small sizes: use `cargo bench -p lattice-bench --bench timer`)"
        );
        return;
    }
    if mem && only.is_none() {
        println!("\n| timer/mem_per_timer | N | lattice | binary_heap (+flag) | delay_queue | hhwt | lattice own accounting |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for n in [100_000usize, 1_000_000] {
            let m: Vec<Option<(f64, f64)>> = (0..4).map(|imp| measure_mem(imp, n)).collect();
            let cell = |x: &Option<(f64, f64)>| match x {
                Some((rss, _)) => format!("{rss:.1} B"),
                None => "n/a".to_string(),
            };
            let own = match &m[0] {
                Some((_, own)) => format!("{own:.1} B"),
                None => "n/a".to_string(),
            };
            println!(
                "| RssAnon growth / timer | {n} | {} | {} | {} | {} | {own} |",
                cell(&m[0]),
                cell(&m[1]),
                cell(&m[2]),
                cell(&m[3])
            );
        }
    }
}
