//! Workloads that need a process of their own (RSS is per process): `meta_overhead` and
//! `rss_soak`. The parent re-executes the benchmark binary with `--child`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_alloc::ring::Ring;

use super::cases::{lay, Alloc, Rng};

/// Allocates 400 000 blocks of 16..128 B (≈ 29 MB requested), prints
/// `meta requested=<B> rss_delta=<B> [lattice_meta=<B> lattice_mapped=<B>]`.
pub fn meta_overhead(al: Alloc, is_lattice: bool) {
    let n = 400_000;
    let mut r = Rng(5);
    let mut ps: Vec<(usize, usize)> = vec![(1, 1); n]; // touched before the baseline
    let base = lattice_alloc::process_rss_bytes();
    let mut requested = 0u64;
    for slot in ps.iter_mut() {
        let sz = 16 + r.below(113) as usize;
        // SAFETY: non-zero layout.
        let p = unsafe { al.alloc(lay(sz)) };
        assert!(!p.is_null());
        // SAFETY: touch the whole block, as an object constructor would.
        unsafe { std::ptr::write_bytes(p, 0xAB, sz) };
        requested += sz as u64;
        *slot = (p as usize, sz);
    }
    let after = lattice_alloc::process_rss_bytes();
    let mut line = format!(
        "meta requested={requested} rss_delta={}",
        after.saturating_sub(base)
    );
    if is_lattice {
        let s = lattice_alloc::snapshot();
        line += &format!(
            " lattice_meta={} lattice_mapped={}",
            s.metadata_bytes, s.os_current_bytes
        );
    }
    println!("{line}");
    for (p, sz) in ps {
        // SAFETY: live blocks.
        unsafe { al.dealloc(p as *mut u8, lay(sz)) };
    }
}

/// Two threads keep a working set that swings between ≈ 8 MB and ≈ 48 MB each in 2-second
/// cycles (sizes 16 B..16 KiB, 1 % 64..256 KiB), handing 25 % of their frees to the other
/// thread. The main thread prints `rss t=<s> bytes=<B>` every second for `secs` seconds.
pub fn rss_soak(al: Alloc, secs: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let rings = [Arc::new(Ring::new()), Arc::new(Ring::new())];
    let start = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|id| {
            let stop = stop.clone();
            let inbox = rings[id].clone();
            let outbox = rings[1 - id].clone();
            std::thread::spawn(move || {
                let mut r = Rng(100 + id as u64);
                let mut live: Vec<(usize, usize)> = Vec::new();
                let mut bytes = 0usize;
                let free = |p: usize, sz: usize| {
                    // SAFETY: block of this allocator with its layout (the size is stored in its
                    // first word for blocks that cross threads).
                    unsafe { al.dealloc(p as *mut u8, lay(sz)) }
                };
                while !stop.load(Ordering::Relaxed) {
                    let phase = (start.elapsed().as_millis() % 2000) as usize;
                    let target = if phase < 1000 { 8 << 20 } else { 48 << 20 };
                    for _ in 0..256 {
                        if bytes < target {
                            let sz = if r.below(100) == 0 {
                                (64 << 10) + r.below(192 << 10) as usize
                            } else {
                                16 + r.below(16 << 10) as usize
                            };
                            // SAFETY: non-zero layout.
                            let p = unsafe { al.alloc(lay(sz)) };
                            assert!(!p.is_null());
                            // SAFETY: live block ≥ 16 B; touch the head, store the size.
                            unsafe {
                                std::ptr::write_bytes(p, 1, sz.min(256));
                                (p as *mut usize).write_unaligned(sz);
                            }
                            live.push((p as usize, sz));
                            bytes += sz;
                        } else if !live.is_empty() {
                            let i = r.below(live.len() as u64) as usize;
                            let (p, sz) = live.swap_remove(i);
                            bytes -= sz;
                            if r.below(4) == 0 && outbox.push(p) {
                                continue;
                            }
                            free(p, sz);
                        }
                    }
                    while let Some(p) = inbox.pop() {
                        // SAFETY: the sender stored the size in the first word.
                        let sz = unsafe { (p as *const usize).read_unaligned() };
                        free(p, sz);
                    }
                }
                for (p, sz) in live {
                    free(p, sz);
                }
            })
        })
        .collect();
    for t in 1..=secs {
        let next = start + Duration::from_secs(t);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        println!("rss t={t} bytes={}", lattice_alloc::process_rss_bytes());
        if std::env::var_os("ALLOC_BENCH_SOAK_DEBUG").is_some() {
            let s = lattice_alloc::snapshot();
            let pages: u64 = s.heaps.iter().map(|h| h.pages_in_use).sum();
            let segs: u64 = s.heaps.iter().map(|h| h.segments).sum();
            let stalled: u64 = s.heaps.iter().map(|h| h.stalled_messages).sum();
            eprintln!(
                "t={t} small_live={}MB pages={} ({}MB) segs={} in_flight={} parked={} stalled={stalled} large_live={}MB cached={}MB mapped={}MB",
                s.small_live_bytes() >> 20,
                pages,
                (pages * 64) >> 10,
                segs,
                s.remote_in_flight_blocks,
                s.remote_parked_messages,
                s.large_live_bytes >> 20,
                s.large_cached_bytes >> 20,
                s.os_current_bytes >> 20
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // leftovers in the rings are leaked on purpose: the process ends here
}
