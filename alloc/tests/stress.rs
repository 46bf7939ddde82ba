//! Multi-threaded stress test with `LatticeAlloc` as the global allocator.
//!
//! 4 worker threads (on a 2-core machine) run random allocations, frees, reallocs and
//! cross-thread frees (blocks travel through bounded channels to another worker, which checks
//! and frees them). Every block carries a pattern derived from a unique id, written over the
//! whole block (sizes ≤ 4 KiB) or its head, tail and one byte per 512 (larger blocks), and
//! checked before it is freed, so overlapping blocks or reuse after free are detected. Workers
//! exit and are replaced half way (heap hand-over). At the end, every abandoned heap must hold
//! no live block and no remote free may be in flight.
//!
//! Operation count: `LATTICE_ALLOC_STRESS_OPS` (default 400 000 in debug builds, 10 000 000
//! in release builds).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use lattice_alloc::{HeapState, LatticeAlloc};

#[global_allocator]
static GLOBAL: LatticeAlloc = LatticeAlloc::new();

const THREADS: usize = 4;
const MAX_LIVE: usize = 3000;
const CHANNEL_CAP: usize = 256;

struct Blk {
    ptr: usize,
    size: usize,
    seed: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn size_for(r: &mut Rng) -> usize {
    match r.below(100) {
        0..=69 => 1 + r.below(256) as usize,
        70..=89 => 256 + r.below(3840) as usize,
        90..=98 => 4096 + r.below(28 * 1024) as usize,
        _ => 32 * 1024 + r.below(224 * 1024) as usize,
    }
}

#[inline]
fn pat(seed: u64, i: usize) -> u8 {
    (seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 * 31)
        >> 24) as u8
}

fn positions(size: usize) -> impl Iterator<Item = usize> {
    let full = size <= 4096;
    let head = size.min(256);
    let tail_start = size.saturating_sub(256).max(head);
    (0..head)
        .chain((head..tail_start).filter(move |i| full || i % 512 == 0))
        .chain(tail_start..size)
}

fn write(b: &Blk) {
    let p = b.ptr as *mut u8;
    for i in positions(b.size) {
        // SAFETY: b.ptr is a live block of b.size bytes owned by this thread.
        unsafe { *p.add(i) = pat(b.seed, i) };
    }
}

fn verify(b: &Blk) {
    let p = b.ptr as *const u8;
    for i in positions(b.size) {
        // SAFETY: as above.
        let v = unsafe { *p.add(i) };
        assert_eq!(
            v,
            pat(b.seed, i),
            "block {:#x} size {} seed {} byte {i}: corrupted",
            b.ptr,
            b.size,
            b.seed
        );
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, if size.is_multiple_of(16) { 16 } else { 8 }).unwrap()
}

fn alloc(size: usize, seed: u64) -> Blk {
    // SAFETY: non-zero size.
    let ptr = unsafe { GLOBAL.alloc(layout(size)) } as usize;
    assert!(ptr != 0, "allocation of {size} failed");
    assert_eq!(ptr % layout(size).align(), 0);
    let b = Blk { ptr, size, seed };
    write(&b);
    b
}

fn free(b: Blk) {
    verify(&b);
    // SAFETY: live block, freed once.
    unsafe { GLOBAL.dealloc(b.ptr as *mut u8, layout(b.size)) };
}

fn worker(id: usize, ops: u64, seed: u64, inbox: Receiver<Blk>, outs: Vec<SyncSender<Blk>>) -> u64 {
    let _ = lattice_alloc::register_heap(&format!("stress-{id}"));
    let mut r = Rng(seed | 1);
    let mut live: Vec<Blk> = Vec::with_capacity(MAX_LIVE);
    let mut next_seed = seed << 32;
    let mut cross = 0u64;
    for _ in 0..ops {
        match r.below(16) {
            0..=6 if live.len() < MAX_LIVE => {
                next_seed += 1;
                live.push(alloc(size_for(&mut r), next_seed));
            }
            0..=8 if !live.is_empty() => {
                let i = r.below(live.len() as u64) as usize;
                free(live.swap_remove(i));
            }
            9..=10 if !live.is_empty() => {
                let i = r.below(live.len() as u64) as usize;
                let b = live.swap_remove(i);
                verify(&b);
                let to = r.below(outs.len() as u64) as usize;
                match outs[to].try_send(b) {
                    Ok(()) => cross += 1,
                    Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => free(b),
                }
            }
            11 if !live.is_empty() => {
                let i = r.below(live.len() as u64) as usize;
                let b = &mut live[i];
                verify(b);
                let new_size = size_for(&mut r);
                // realloc keeps the alignment: only try it when the new size wants the same one
                let old_l = layout(b.size);
                if old_l.align() == layout(new_size).align() {
                    // SAFETY: live block with its layout, freed by realloc on success.
                    let q = unsafe { GLOBAL.realloc(b.ptr as *mut u8, old_l, new_size) } as usize;
                    assert!(q != 0);
                    let keep = b.size.min(new_size);
                    // contents survive realloc: every patterned byte below the new size
                    for i in positions(b.size).filter(|&i| i < keep) {
                        // SAFETY: q is live with ≥ keep bytes.
                        assert_eq!(
                            unsafe { *(q as *const u8).add(i) },
                            pat(b.seed, i),
                            "realloc lost byte {i}"
                        );
                    }
                    b.ptr = q;
                    b.size = new_size;
                    write(b);
                }
            }
            _ => {
                for _ in 0..8 {
                    match inbox.try_recv() {
                        Ok(b) => free(b),
                        Err(_) => break,
                    }
                }
            }
        }
    }
    drop(outs);
    for b in live {
        free(b);
    }
    // drain what others still send until they are all done
    while let Ok(b) = inbox.recv() {
        free(b);
    }
    cross
}

fn run_round(round: u64, ops_per_thread: u64) -> u64 {
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = sync_channel::<Blk>(CHANNEL_CAP);
        txs.push(tx);
        rxs.push(rx);
    }
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(id, rx)| {
            let outs: Vec<_> = (0..THREADS)
                .filter(|&j| j != id)
                .map(|j| txs[j].clone())
                .collect();
            let seed = 0x5EED_0000 + round * 100 + id as u64;
            std::thread::spawn(move || worker(id, ops_per_thread, seed, rx, outs))
        })
        .collect();
    drop(txs);
    handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .sum()
}

#[test]
fn four_threads_random_sizes_cross_frees_pattern_checked() {
    let default_ops = if cfg!(debug_assertions) {
        400_000
    } else {
        10_000_000
    };
    let total: u64 = std::env::var("LATTICE_ALLOC_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_ops);
    let rounds = 2u64;
    let per_thread = total / (rounds * THREADS as u64);
    let mut cross = 0;
    for round in 0..rounds {
        cross += run_round(round, per_thread);
    }
    println!(
        "stress: {} ops in {rounds} rounds of {THREADS} threads, {cross} cross-thread frees",
        per_thread * rounds * THREADS as u64
    );
    assert!(
        cross > per_thread / 20,
        "too few cross-thread frees: {cross}"
    );
    lattice_alloc::settle(64);
    let s = lattice_alloc::snapshot();
    for h in &s.heaps {
        if h.state == HeapState::Abandoned && h.name.starts_with("stress") {
            assert_eq!(
                h.live_allocs, 0,
                "abandoned heap {} ({}) still holds blocks: {h:?}",
                h.id, h.name
            );
            assert_eq!(
                h.remote_inbound_in_flight, 0,
                "heap {} still owed: {h:?}",
                h.id
            );
        }
    }
    assert!(
        s.heaps
            .iter()
            .filter(|h| h.name.starts_with("stress"))
            .count()
            >= THREADS
    );
    assert!(
        s.heaps.iter().any(|h| h.adoptions > 0),
        "second round should adopt abandoned heaps"
    );
    println!("{}", lattice_alloc::leak_report());
}
