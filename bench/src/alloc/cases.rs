//! Allocator micro-benchmark cases. Every case takes the allocator as `&dyn GlobalAlloc` so all
//! allocators run in the same process, interleaved. Each returns nanoseconds per operation
//! (what an "operation" is is said per case), timing whole batches, never single calls.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use lattice_alloc::ring::Ring;

pub type Alloc = &'static (dyn GlobalAlloc + Sync);

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits politely: spin a little, then give the core away (the machine has 2 cores shared
/// with other work; a pure spin would measure the scheduler, not the allocator).
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// The first two CPUs this process may run on, if it may run on two.
pub fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is plain data; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let mut it = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set));
        Some((it.next()?, it.next()?))
    }
}

/// The calling thread's CPU mask before [`pin`]; restored on drop.
pub struct Pinned(Option<libc::cpu_set_t>);

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restores a mask the kernel gave us.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// Pins the calling thread to `cpu` until the returned guard drops. The cross-thread cases put
/// their two threads on two different CPUs: left to the scheduler, the two sometimes share one
/// CPU and take turns, and the case then measures a hand-off inside one core's cache (≈ 8 ns per
/// `xfree_pingpong` message here instead of ≈ 65). Does nothing if the kernel refuses.
pub fn pin(cpu: Option<usize>) -> Pinned {
    let Some(cpu) = cpu else {
        return Pinned(None);
    };
    // SAFETY: cpu_set_t is plain data, filled by the kernel or by CPU_SET.
    unsafe {
        let n = std::mem::size_of::<libc::cpu_set_t>();
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, n, &mut old) != 0 {
            return Pinned(None);
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, n, &one) != 0 {
            return Pinned(None);
        }
        Pinned(Some(old))
    }
}

#[inline]
pub fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[inline]
fn a(al: Alloc, size: usize) -> *mut u8 {
    // SAFETY: non-zero size layout.
    let p = unsafe { al.alloc(lay(size)) };
    assert!(!p.is_null());
    // SAFETY: touch the first byte, as real code would.
    unsafe { p.write_volatile(size as u8) };
    p
}

#[inline]
fn f(al: Alloc, p: *mut u8, size: usize) {
    // SAFETY: p came from `al` with this layout.
    unsafe { al.dealloc(p, lay(size)) }
}

fn ns_per(start: Instant, ops: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// Scale factor for operation counts (1.0 = default).
pub struct Scale(pub f64);
impl Scale {
    fn n(&self, base: u64) -> u64 {
        ((base as f64 * self.0) as u64).max(10)
    }
}

/// One alloc+free pair of `size` bytes, repeated. ns per pair.
pub fn st_pair(al: Alloc, size: usize, s: &Scale) -> f64 {
    let n = s.n(300_000);
    let t = Instant::now();
    for _ in 0..n {
        let p = a(al, size);
        f(al, std::hint::black_box(p), size);
    }
    ns_per(t, n)
}

/// 10 000 blocks of 16..512 B allocated, then freed in LIFO / FIFO / random order. ns per
/// alloc+free.
pub fn st_batch(al: Alloc, order: &str, s: &Scale) -> f64 {
    let rounds = s.n(20);
    let mut r = Rng(42);
    let sizes: Vec<usize> = (0..10_000).map(|_| 16 + r.below(497) as usize).collect();
    let mut idx: Vec<usize> = (0..sizes.len()).collect();
    match order {
        "lifo" => idx.reverse(),
        "fifo" => {}
        _ => {
            for i in (1..idx.len()).rev() {
                idx.swap(i, r.below(i as u64 + 1) as usize);
            }
        }
    }
    let mut ps = vec![std::ptr::null_mut::<u8>(); sizes.len()];
    let t = Instant::now();
    for _ in 0..rounds {
        for (i, &sz) in sizes.iter().enumerate() {
            ps[i] = a(al, sz);
        }
        for &i in &idx {
            f(al, ps[i], sizes[i]);
        }
    }
    ns_per(t, rounds * sizes.len() as u64)
}

/// A working set of `ws` live blocks (16..1024 B); each op frees a random one and allocates a
/// new random size in its place. Set-up and tear-down are not timed. ns per op.
pub fn churn_ws(al: Alloc, ws: usize, s: &Scale) -> f64 {
    let mut r = Rng(7);
    let mut set: Vec<(*mut u8, usize)> = (0..ws)
        .map(|_| {
            let sz = 16 + r.below(1009) as usize;
            (a(al, sz), sz)
        })
        .collect();
    let n = s.n(300_000);
    let t = Instant::now();
    for _ in 0..n {
        let i = r.below(ws as u64) as usize;
        let (p, sz) = set[i];
        f(al, p, sz);
        let nsz = 16 + r.below(1009) as usize;
        set[i] = (a(al, nsz), nsz);
    }
    let out = ns_per(t, n);
    for (p, sz) in set {
        f(al, p, sz);
    }
    out
}

fn size_of_mode(mode: usize, r: &mut Rng) -> usize {
    match mode {
        0 => 16 + r.below(1009) as usize, // mixed
        m => m,
    }
}

/// Producer thread allocates and passes blocks over an SPSC ring; the consumer frees them.
/// `mode` is the size (0 = mixed 16..1024). ns per block (wall time of the transfer).
pub fn xfree_spsc(al: Alloc, mode: usize, s: &Scale) -> f64 {
    let n = s.n(300_000);
    let ring = Arc::new(Ring::new());
    let bar = Arc::new(Barrier::new(2));
    let (r2, b2) = (ring.clone(), bar.clone());
    let cpus = two_cpus();
    let consumer = std::thread::spawn(move || {
        let _pin = pin(cpus.map(|c| c.1));
        b2.wait();
        let mut got = 0;
        let mut sp = 0;
        while got < n {
            if let Some(v) = r2.pop() {
                sp = 0;
                let p = v as *mut u8;
                // SAFETY: producer wrote the size into the first 8 bytes (blocks ≥ 16 B).
                let sz = unsafe { (p as *const usize).read_unaligned() };
                f(al, p, sz);
                got += 1;
            } else {
                backoff(&mut sp);
            }
        }
    });
    let mut r = Rng(3);
    let _pin = pin(cpus.map(|c| c.0));
    bar.wait();
    let t = Instant::now();
    for _ in 0..n {
        let sz = size_of_mode(mode, &mut r);
        let p = a(al, sz);
        // SAFETY: block of ≥ 16 bytes.
        unsafe { (p as *mut usize).write_unaligned(sz) };
        let mut sp = 0;
        while !ring.push(p as usize) {
            backoff(&mut sp);
        }
    }
    consumer.join().unwrap();
    ns_per(t, n)
}

/// Where `pingpong` gets the block it sends and what it does with a block it receives.
trait Blocks: Send + 'static {
    fn get(&mut self) -> *mut u8;
    fn put(&mut self, p: *mut u8);
}

/// Through the allocator: a fresh 64 B block per message, each received block freed.
struct ViaAlloc(Alloc);
impl Blocks for ViaAlloc {
    #[inline]
    fn get(&mut self) -> *mut u8 {
        a(self.0, 64)
    }
    #[inline]
    fn put(&mut self, p: *mut u8) {
        f(self.0, p, 64)
    }
}

/// No allocator at all: each side cycles through 4096 blocks of its own (first byte written,
/// like `a`), and a received block is dropped untouched. What is left is the harness itself —
/// the rings, the waits and the sender's own write — so no allocator can take less time.
struct Floor {
    mem: Vec<[u8; 64]>,
    next: usize,
}
impl Floor {
    fn new() -> Self {
        Self {
            mem: vec![[0u8; 64]; 4096],
            next: 0,
        }
    }
}
impl Blocks for Floor {
    #[inline]
    fn get(&mut self) -> *mut u8 {
        self.next = (self.next + 1) % self.mem.len();
        let p = self.mem[self.next].as_mut_ptr();
        // SAFETY: a block of our own array.
        unsafe { p.write_volatile(64) };
        p
    }
    #[inline]
    fn put(&mut self, p: *mut u8) {
        std::hint::black_box(p);
    }
}

/// Two threads; each message is a fresh 64 B block allocated by the sender and freed by the
/// receiver, which answers with a fresh block of its own. ns per message (one way).
pub fn xfree_pingpong(al: Alloc, s: &Scale) -> f64 {
    pingpong(ViaAlloc(al), ViaAlloc(al), s)
}

/// `xfree_pingpong`'s harness without an allocator (see [`Floor`]): the least time any
/// allocator can take in that case. ns per message.
pub fn xfree_pingpong_floor(s: &Scale) -> f64 {
    pingpong(Floor::new(), Floor::new(), s)
}

fn pingpong<A: Blocks, B: Blocks>(mut mine: A, mut theirs: B, s: &Scale) -> f64 {
    let n = s.n(100_000);
    let ab = Arc::new(Ring::new());
    let ba = Arc::new(Ring::new());
    let (ab2, ba2) = (ab.clone(), ba.clone());
    const INFLIGHT: u64 = 32;
    let bar = Arc::new(Barrier::new(2));
    let b2 = bar.clone();
    let cpus = two_cpus();
    let peer = std::thread::spawn(move || {
        let _pin = pin(cpus.map(|c| c.1));
        b2.wait();
        for _ in 0..n {
            let mut sp = 0;
            let v = loop {
                if let Some(v) = ab2.pop() {
                    break v;
                }
                backoff(&mut sp);
            };
            theirs.put(v as *mut u8);
            let p = theirs.get();
            let mut sp = 0;
            while !ba2.push(p as usize) {
                backoff(&mut sp);
            }
        }
    });
    let _pin = pin(cpus.map(|c| c.0));
    bar.wait();
    let t = Instant::now();
    let mut sent = 0;
    let mut recv = 0;
    let mut sp = 0;
    while recv < n {
        while sent < n && sent - recv < INFLIGHT {
            let p = mine.get();
            if !ab.push(p as usize) {
                mine.put(p);
                break;
            }
            sent += 1;
        }
        if let Some(v) = ba.pop() {
            mine.put(v as *mut u8);
            recv += 1;
            sp = 0;
        } else {
            backoff(&mut sp);
        }
    }
    let out = ns_per(t, 2 * n);
    peer.join().unwrap();
    out
}

/// One thread allocates bursts of 10 000 blocks (16..256 B) and hands each burst to a second
/// thread, which frees it while the first allocates the next. ns per block.
pub fn xfree_burst(al: Alloc, s: &Scale) -> f64 {
    let bursts = s.n(30);
    let ring = Arc::new(Ring::new());
    let r2 = ring.clone();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let cpus = two_cpus();
    let consumer = std::thread::spawn(move || {
        let _pin = pin(cpus.map(|c| c.1));
        let mut sp = 0;
        loop {
            if let Some(v) = r2.pop() {
                sp = 0;
                // SAFETY: a Box<Vec<..>> leaked by the producer.
                let burst = unsafe { Box::from_raw(v as *mut Vec<(usize, usize)>) };
                for &(p, sz) in burst.iter() {
                    f(al, p as *mut u8, sz);
                }
            } else if d2.load(Ordering::Acquire) && r2.is_empty() {
                break;
            } else {
                backoff(&mut sp);
            }
        }
    });
    let mut r = Rng(11);
    let _pin = pin(cpus.map(|c| c.0));
    let t = Instant::now();
    for _ in 0..bursts {
        let v: Vec<(usize, usize)> = (0..10_000)
            .map(|_| {
                let sz = 16 + r.below(241) as usize;
                (a(al, sz) as usize, sz)
            })
            .collect();
        let bx = Box::into_raw(Box::new(v)) as usize;
        let mut sp = 0;
        while !ring.push(bx) {
            backoff(&mut sp);
        }
    }
    done.store(true, Ordering::Release);
    consumer.join().unwrap();
    ns_per(t, bursts * 10_000)
}

/// Alloc + touch first byte + free of a large block. ns per pair.
pub fn large(al: Alloc, size: usize, s: &Scale) -> f64 {
    let n = s.n(match size {
        s if s <= 64 << 10 => 20_000,
        s if s <= 1 << 20 => 5_000,
        _ => 500,
    });
    let t = Instant::now();
    for _ in 0..n {
        let p = a(al, size);
        f(al, std::hint::black_box(p), size);
    }
    ns_per(t, n)
}
