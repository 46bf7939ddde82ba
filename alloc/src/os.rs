//! OS memory: aligned anonymous mappings, release, and the global mapping counters.
//!
//! Every byte the allocator gets from the kernel goes through here, so the counters are the
//! allocator's whole OS footprint (address space mapped, not resident pages).

use core::sync::atomic::{AtomicU64, Ordering};

/// OS page size assumed by the layout (x86-64 / aarch64 with 4 KiB pages).
pub const OS_PAGE: usize = 4096;

pub(crate) static OS_MAPPED: AtomicU64 = AtomicU64::new(0);
pub(crate) static OS_RETURNED: AtomicU64 = AtomicU64::new(0);
pub(crate) static MMAP_CALLS: AtomicU64 = AtomicU64::new(0);
pub(crate) static MMAP_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Rounds `n` up to a multiple of `to` (a power of two).
#[inline]
pub const fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

/// Maps `size` bytes (a multiple of [`OS_PAGE`]) aligned to `align` (a power of two ≥ OS_PAGE).
/// Returns null when the kernel refuses. Memory is zeroed.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(size.is_multiple_of(OS_PAGE) && align.is_power_of_two() && align >= OS_PAGE);
    let Some(reserve) = size.checked_add(align - OS_PAGE) else {
        return core::ptr::null_mut();
    };
    MMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: anonymous private mapping with no address hint; the kernel picks a free range and
    // nothing else in the process refers to it yet.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        MMAP_FAILURES.fetch_add(1, Ordering::Relaxed);
        return core::ptr::null_mut();
    }
    let start = p as usize;
    let aligned = round_up(start, align);
    let head = aligned - start;
    let tail = reserve - head - size;
    if head > 0 {
        // SAFETY: [start, aligned) lies inside the mapping we just created and is not used.
        unsafe { libc::munmap(start as *mut _, head) };
    }
    if tail > 0 {
        // SAFETY: [aligned+size, start+reserve) lies inside our fresh mapping and is not used.
        unsafe { libc::munmap((aligned + size) as *mut _, tail) };
    }
    OS_MAPPED.fetch_add(size as u64, Ordering::Relaxed);
    aligned as *mut u8
}

/// Returns a mapping made by [`map_aligned`] (or a page-aligned tail of one) to the OS.
///
/// # Safety
/// `[p, p+size)` must be a range this module mapped, no longer referenced by anyone.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(p as *mut _, size) };
    OS_RETURNED.fetch_add(size as u64, Ordering::Relaxed);
}

/// Tries to grow a mapping in place (never moves it, so address alignment is kept).
///
/// # Safety
/// `[p, p+old)` must be a live mapping made by this module.
pub unsafe fn grow_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    // SAFETY: flags 0 forbids moving; on failure the old mapping is untouched.
    let r = unsafe { libc::mremap(p as *mut _, old, new, 0) };
    if r == libc::MAP_FAILED {
        return false;
    }
    OS_MAPPED.fetch_add((new - old) as u64, Ordering::Relaxed);
    true
}

/// Resident set size of this process in bytes, from `/proc/self/statm` (0 if unreadable).
/// Reads with raw syscalls so it never allocates (safe to call from inside the allocator).
pub fn process_rss_bytes() -> u64 {
    let path = c"/proc/self/statm";
    // SAFETY: valid NUL-terminated path; read-only open.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 128];
    // SAFETY: buf is a writable buffer of the given length; fd is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return 0;
    }
    // fields: size resident shared ...
    let text = &buf[..n as usize];
    let mut fields = text.split(|b| *b == b' ');
    let _size = fields.next();
    let resident = fields.next().unwrap_or(b"0");
    let mut pages = 0u64;
    for &b in resident {
        if b.is_ascii_digit() {
            pages = pages * 10 + u64::from(b - b'0');
        }
    }
    pages * OS_PAGE as u64
}
