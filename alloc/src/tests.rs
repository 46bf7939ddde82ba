//! Unit tests through a `LatticeAlloc` value (the test binary's global allocator is the system
//! one, so these exercise the allocator in isolation).

use core::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;

use crate::size_class::{class_size, NUM_CLASSES};
use crate::*;

const A: LatticeAlloc = LatticeAlloc::new();

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: p is a live block of ≥ n bytes.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
    }
}

fn check(p: *const u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: p is a live block of ≥ n bytes.
        assert_eq!(
            unsafe { *p.add(i) },
            seed.wrapping_add(i as u8),
            "byte {i} of {n}"
        );
    }
}

#[test]
fn every_class_allocates_aligned_disjoint_blocks() {
    for c in 0..NUM_CLASSES {
        let size = class_size(c);
        let layout = Layout::from_size_align(size, 8).unwrap();
        let n = 40;
        let mut ps = Vec::new();
        for k in 0..n {
            // SAFETY: non-zero layout.
            let p = unsafe { A.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % 8, 0);
            // SAFETY: live block.
            assert_eq!(unsafe { A.usable_size(p) }, size);
            fill(p, size, k as u8);
            ps.push(p);
        }
        let mut sorted: Vec<usize> = ps.iter().map(|p| *p as usize).collect();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            assert!(w[1] - w[0] >= size, "class {size}: overlapping blocks");
        }
        for (k, p) in ps.into_iter().enumerate() {
            check(p, size, k as u8);
            // SAFETY: live block from A.
            unsafe { A.dealloc(p, layout) };
        }
    }
}

#[test]
fn zero_size_gives_distinct_usable_pointers() {
    let l = Layout::from_size_align(0, 1).unwrap();
    // SAFETY: the allocator accepts size 0 and treats it as 1.
    let (a, b) = unsafe { (A.alloc(l), A.alloc(l)) };
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: live blocks.
    unsafe {
        A.dealloc(a, l);
        A.dealloc(b, l);
    }
}

#[test]
fn alignments_up_to_two_mib_are_honoured_and_four_mib_fails() {
    let mut align = 1;
    while align <= (2 << 20) {
        for size in [1, 24, align, 3 * align, 40_000] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            fill(p, size.min(4096), 7);
            check(p, size.min(4096), 7);
            // SAFETY: live block.
            unsafe { A.dealloc(p, l) };
        }
        align *= 2;
    }
    let l = Layout::from_size_align(64, SEG_SIZE).unwrap();
    // SAFETY: non-zero layout; null is the documented answer.
    assert!(unsafe { A.alloc(l) }.is_null());
}

#[test]
fn huge_allocation_is_mapped_and_returned() {
    let before = snapshot();
    let l = Layout::from_size_align(64 << 20, 16).unwrap();
    // SAFETY: non-zero layout.
    let p = unsafe { A.alloc_zeroed(l) };
    assert!(!p.is_null());
    // SAFETY: 64 MiB live block.
    unsafe {
        assert_eq!(*p.add((64 << 20) - 1), 0);
        *p.add((64 << 20) - 1) = 9;
    }
    let mid = snapshot();
    assert!(mid.large_live_bytes >= before.large_live_bytes + (64 << 20) - (1 << 20)); // other tests run concurrently
                                                                                       // SAFETY: live block.
    unsafe { A.dealloc(p, l) };
    let after = snapshot();
    // larger than the cache's max entry: unmapped at once
    assert!(after.os_returned_bytes >= mid.os_returned_bytes + (64 << 20));
}

#[test]
fn realloc_grows_in_place_within_class_and_moves_across() {
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: all pointers are live blocks of A with the layouts used.
    unsafe {
        let p = A.alloc(l);
        fill(p, 100, 1);
        let q = A.realloc(p, l, 104); // class 112
        assert_eq!(p, q, "grow within the class stays in place");
        let r = A.realloc(q, Layout::from_size_align(104, 8).unwrap(), 5000);
        check(r, 100, 1);
        let s = A.realloc(r, Layout::from_size_align(5000, 8).unwrap(), 20);
        check(s, 20, 1);
        assert_ne!(r, s, "a shrink to a quarter moves to a smaller class");
        A.dealloc(s, Layout::from_size_align(20, 8).unwrap());
    }
}

#[test]
fn realloc_large_shrinks_and_grows() {
    let l = Layout::from_size_align(1 << 20, 16).unwrap();
    // SAFETY: live blocks of A with the layouts used.
    unsafe {
        let p = A.alloc(l);
        fill(p, 4096, 3);
        let q = A.realloc(p, l, 512 << 10);
        assert_eq!(p, q, "large shrink stays in place");
        let r = A.realloc(q, Layout::from_size_align(512 << 10, 16).unwrap(), 8 << 20);
        check(r, 4096, 3);
        fill(r.add((8 << 20) - 4096), 4096, 5);
        let s = A.realloc(r, Layout::from_size_align(8 << 20, 16).unwrap(), 100);
        check(s, 100, 3);
        A.dealloc(s, Layout::from_size_align(100, 16).unwrap());
    }
}

#[test]
fn large_threshold_is_configurable() {
    let small = LatticeAlloc::with_large_threshold(1024);
    assert_eq!(small.large_threshold(), 1024);
    assert_eq!(
        LatticeAlloc::with_large_threshold(1 << 30).large_threshold(),
        MAX_SMALL
    );
    let l = Layout::from_size_align(2000, 8).unwrap();
    let before = snapshot().large_live_allocs;
    // SAFETY: live blocks.
    unsafe {
        let p = small.alloc(l);
        assert!(snapshot().large_live_allocs > before || before > 0);
        // a 2000 B block from the 1 KiB-threshold allocator is large: usable size is exact
        assert_eq!(small.usable_size(p), 2000);
        small.dealloc(p, l);
    }
}

#[test]
fn remote_frees_return_to_the_owner_heap() {
    let (tx, rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let layout = Layout::from_size_align(64, 8).unwrap();
    let owner = std::thread::spawn(move || {
        let id = register_heap("owner").unwrap();
        let n = 20_000;
        for i in 0..n {
            // SAFETY: non-zero layout.
            let p = unsafe { A.alloc(layout) };
            fill(p, 64, i as u8);
            tx.send(p as usize).unwrap();
        }
        drop(tx);
        done_rx.recv().unwrap();
        settle(64);
        let s = snapshot();
        let me = s.heaps.iter().find(|h| h.id == id.0).unwrap();
        (id, me.clone(), n)
    });
    let freer = std::thread::spawn(move || {
        register_heap("freer").unwrap();
        let mut i = 0u32;
        while let Ok(p) = rx.recv() {
            check(p as *const u8, 64, i as u8);
            // SAFETY: block from the owner thread, freed once.
            unsafe { A.dealloc(p as *mut u8, layout) };
            i += 1;
        }
        let sent_before_flush = snapshot()
            .heaps
            .iter()
            .find(|h| Some(HeapId(h.id)) == current_heap_id())
            .unwrap()
            .remote_sent_blocks;
        assert!(flush_thread() == 0);
        (i, sent_before_flush)
    });
    let (freed, sent_before) = freer.join().unwrap();
    done_tx.send(()).unwrap();
    let (_id, heap, n) = owner.join().unwrap();
    assert_eq!(freed, n);
    assert!(
        sent_before > 0,
        "full batches went out before the explicit flush"
    );
    assert_eq!(heap.name, "owner");
    let c64 = heap.classes.iter().find(|c| c.class_size == 64).unwrap();
    assert_eq!(c64.total_allocs, u64::from(n));
    assert_eq!(
        c64.live_allocs, 0,
        "every remote free came back to its owner"
    );
    assert_eq!(heap.remote_inbound_in_flight, 0);
}

#[test]
fn exiting_thread_hands_its_heap_over_and_nothing_leaks() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // a thread allocates, keeps some blocks alive past its exit, and exits
    let (blocks, id) = std::thread::spawn(move || {
        let id = register_heap("short-lived").unwrap();
        let v: Vec<usize> = (0..3000)
            .map(|_| unsafe { A.alloc(layout) } as usize)
            .collect();
        (v, id)
    })
    .join()
    .unwrap();
    let s = snapshot();
    let h = s.heaps.iter().find(|h| h.id == id.0).unwrap();
    assert!(
        matches!(h.state, HeapState::Abandoned | HeapState::Active),
        "{:?}",
        h.state
    );
    // free them here: remote frees to an abandoned heap, serviced by the central pool
    for p in blocks {
        // SAFETY: live blocks freed once.
        unsafe { A.dealloc(p as *mut u8, layout) };
    }
    settle(64);
    let s = snapshot();
    let h = s.heaps.iter().find(|h| h.id == id.0).unwrap();
    if h.state == HeapState::Abandoned && h.adoptions == 0 {
        let c = h.classes.iter().find(|c| c.class_size == 48).unwrap();
        assert_eq!(c.live_allocs, 0, "abandoned heap got every block back");
        assert_eq!(h.remote_inbound_in_flight, 0);
    }
    // (if another test thread adopted the heap meanwhile, its counters mix; nothing to check)
}

#[test]
fn metadata_is_under_one_percent_of_mapped_memory() {
    let l = Layout::from_size_align(256, 8).unwrap();
    let ps: Vec<usize> = (0..200_000)
        .map(|_| unsafe { A.alloc(l) } as usize)
        .collect();
    let s = snapshot();
    assert!(s.os_current_bytes > 40 << 20);
    let ratio = s.metadata_bytes as f64 / s.os_current_bytes as f64;
    assert!(
        ratio < 0.01,
        "metadata {} of {} mapped",
        s.metadata_bytes,
        s.os_current_bytes
    );
    for p in ps {
        // SAFETY: live blocks.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
}

#[test]
fn empty_segments_go_back_to_the_os() {
    std::thread::spawn(|| {
        let l = Layout::from_size_align(4096, 8).unwrap();
        let before = snapshot().os_returned_bytes;
        // SAFETY: non-zero layout; 8192 × 4 KiB = 32 MiB.
        let ps: Vec<usize> = (0..8192).map(|_| unsafe { A.alloc(l) } as usize).collect();
        for p in ps {
            // SAFETY: live blocks.
            unsafe { A.dealloc(p as *mut u8, l) };
        }
        let after = snapshot().os_returned_bytes;
        assert!(
            after - before >= 16 << 20,
            "returned only {} B",
            after - before
        );
    })
    .join()
    .unwrap();
}

#[test]
fn leak_report_names_live_classes() {
    std::thread::spawn(|| {
        register_heap("leaky").unwrap();
        let l = Layout::from_size_align(640, 8).unwrap();
        // SAFETY: non-zero layout.
        let p = unsafe { A.alloc(l) };
        let r = leak_report();
        assert!(r.contains("(leaky, Active)"), "{r}");
        assert!(r.contains("class    640 B: 1 live"), "{r}");
        // SAFETY: live block.
        unsafe { A.dealloc(p, l) };
    })
    .join()
    .unwrap();
}

#[test]
fn register_heap_rejects_long_names() {
    assert_eq!(
        register_heap(&"x".repeat(33)),
        Err(RegisterError::NameTooLong(33))
    );
}

#[test]
fn object_pool_reuses_slots_and_frees_remote_boxes() {
    #[derive(Debug)]
    struct Session {
        id: u64,
        name: String,
    }
    let pool: ObjectPool<Session> = ObjectPool::new(2);
    let a = pool
        .try_alloc(Session {
            id: 1,
            name: "a".into(),
        })
        .unwrap();
    let pa = &*a as *const Session as usize;
    drop(a);
    let b = pool
        .try_alloc(Session {
            id: 2,
            name: "b".into(),
        })
        .unwrap();
    assert_eq!(&*b as *const Session as usize, pa, "slot reused");
    assert_eq!(b.id, 2);
    let st = pool.stats();
    assert_eq!((st.hits, st.misses, st.live), (1, 1, 1));
    let r = b.into_remote();
    let name = std::thread::spawn(move || {
        let n = r.name.clone();
        drop(r); // freed through the allocator on another thread
        n
    })
    .join()
    .unwrap();
    assert_eq!(name, "b");
    let many: Vec<_> = (0..4)
        .map(|i| {
            pool.try_alloc(Session {
                id: i,
                name: String::new(),
            })
            .unwrap()
        })
        .collect();
    drop(many);
    let st = pool.stats();
    assert_eq!(st.cached, 2);
    assert_eq!(st.capacity_hits, 2);
    assert_eq!(st.live, 0);
    let big: ObjectPool<[u8; 8192]> = ObjectPool::new(1);
    let v = big.try_alloc([7u8; 8192]).unwrap();
    assert_eq!(v[8191], 7);
    let x = pool
        .try_alloc(Session {
            id: 9,
            name: "x".into(),
        })
        .unwrap()
        .into_remote()
        .into_inner();
    assert_eq!(x.id, 9);
}

#[test]
fn pool_rejects_overaligned_types() {
    #[repr(align(8192))]
    struct Big(#[allow(dead_code)] u8);
    let pool: ObjectPool<Big> = ObjectPool::new(1);
    assert_eq!(
        pool.try_alloc(Big(1)).err(),
        Some(PoolError::UnsupportedLayout)
    );
}

#[test]
fn heap_struct_is_small() {
    // docs/ALLOC.md states 12 KiB per heap
    assert_eq!(
        crate::heap::HEAP_MAP,
        12 << 10,
        "heap struct maps {} bytes",
        crate::heap::HEAP_MAP
    );
}

#[test]
fn threads_beyond_the_heap_limit_share_the_fallback_heap() {
    use std::sync::{Arc, Barrier};
    let n = MAX_HEAPS + 40;
    let bar = Arc::new(Barrier::new(n));
    let (tx, rx) = mpsc::channel::<usize>();
    let l = Layout::from_size_align(4000, 8).unwrap();
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (bar, tx) = (bar.clone(), tx.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    // SAFETY: non-zero layout.
                    let ps: Vec<usize> = (0..8).map(|_| unsafe { A.alloc(l) } as usize).collect();
                    for &p in &ps {
                        fill(p as *mut u8, 4000, i as u8);
                    }
                    bar.wait(); // every thread alive at once
                    for (k, &p) in ps.iter().enumerate() {
                        check(p as *const u8, 4000, i as u8);
                        if k % 2 == 0 {
                            // SAFETY: live block freed once.
                            unsafe { A.dealloc(p as *mut u8, l) };
                        } else {
                            tx.send(p).unwrap();
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    for h in hs {
        h.join().unwrap();
    }
    for p in rx {
        // SAFETY: live blocks from the workers, freed once.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
    settle(64);
    let s = snapshot();
    assert!(
        s.heaps_exhausted > 0,
        "more threads than heaps must hit the limit"
    );
    assert!(s.fallback_uses > 0);
    let fb = s
        .heaps
        .iter()
        .find(|h| h.state == HeapState::Fallback)
        .unwrap();
    let c = fb
        .classes
        .iter()
        .find(|c| c.class_size == 4096)
        .expect("fallback heap served 4000-byte blocks");
    assert_eq!(c.live_allocs, 0, "every fallback block came back: {fb:?}");
}
