//! Crash safety: fatal-signal handlers that flush the log and still dump core, core dumps enabled
//! for this process only, and a fault-injection switch for tests.
//!
//! On SIGSEGV, SIGBUS, SIGABRT, SIGFPE or SIGILL the handler waits (bounded) for the log writer to
//! write what is queued, appends one line naming the signal and the thread with `write(2)` and
//! `fsync(2)`, restores the default action and re-raises, so the kernel ends the process with that
//! signal and writes a core file. The handler uses only async-signal-safe calls and no allocation.
//! The system's `core_pattern` is never read or changed: [`enable_core_dumps`] raises this
//! process's `RLIMIT_CORE` soft limit to its hard limit and sets the dumpable flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::log_writer;

/// The signals handled, with their names.
pub const FATAL_SIGNALS: [(i32, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGILL, "SIGILL"),
];

/// How long the handler waits for queued log lines to be written.
pub const FLUSH_WAIT: Duration = Duration::from_millis(500);

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Why crash handling could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    /// `sigaction` failed for a signal.
    #[error("cannot install a handler for {0}: {1}")]
    Sigaction(&'static str, std::io::Error),
}

/// Installs the handlers for [`FATAL_SIGNALS`]. Idempotent. A handler runs on the thread's
/// alternate signal stack (the Rust runtime gives every thread one), so a stack overflow is
/// reported too.
pub fn install() -> Result<(), CrashError> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    for (sig, name) in FATAL_SIGNALS {
        // SAFETY: a zeroed sigaction is valid; we fill the handler, flags and an empty mask, and
        // the handler only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fatal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                INSTALLED.store(false, Ordering::SeqCst);
                return Err(CrashError::Sigaction(name, std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// What [`enable_core_dumps`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreDumps {
    /// `RLIMIT_CORE` soft limit after the call (`u64::MAX` = unlimited).
    pub limit: u64,
    /// The dumpable flag is set.
    pub dumpable: bool,
}

/// Enables core dumps for this process only: soft `RLIMIT_CORE` = hard limit, `PR_SET_DUMPABLE`
/// = 1. Never touches `/proc/sys/kernel/core_pattern`. Failures leave the old settings and show in
/// the returned value.
pub fn enable_core_dumps() -> CoreDumps {
    // SAFETY: getrlimit/setrlimit/prctl with valid pointers and constant arguments.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut rl) == 0 && rl.rlim_cur != rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &rl);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        let mut now: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_CORE, &mut now);
        CoreDumps {
            limit: if now.rlim_cur == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                now.rlim_cur
            },
            dumpable: libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1,
        }
    }
}

/// A fixed buffer for building the crash line without allocating.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
    fn num(&mut self, mut v: u64, min_digits: usize) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        while v > 0 || d.len() - i < min_digits.max(1) {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.push(&d[i..]);
    }
}

extern "C" fn on_fatal(sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let name = FATAL_SIGNALS
        .iter()
        .find(|(s, _)| *s == sig)
        .map(|(_, n)| *n)
        .unwrap_or("fatal signal");
    log_writer::crash_flush(FLUSH_WAIT);
    let mut l = Line {
        buf: [0; 256],
        len: 0,
    };
    // SAFETY: clock_gettime and prctl(PR_GET_NAME) are async-signal-safe system calls writing into
    // our stack buffers.
    let (secs, millis, thread) = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let mut name = [0u8; 17];
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0);
        (ts.tv_sec as u64, (ts.tv_nsec / 1_000_000) as u64, name)
    };
    l.push(b"unix=");
    l.num(secs, 1);
    l.push(b".");
    l.num(millis, 3);
    l.push(b" FATAL lattice: fatal signal ");
    l.push(name.as_bytes());
    l.push(b" (");
    l.num(sig as u64, 1);
    l.push(b") in thread \"");
    let tn = thread.iter().position(|&b| b == 0).unwrap_or(16);
    l.push(&thread[..tn]);
    l.push(b"\"; log flushed; dumping core\n");
    log_writer::crash_write(&l.buf[..l.len]);
    // SAFETY: restoring the default action and re-raising are async-signal-safe. The signal is
    // blocked while this handler runs, so the raised one is delivered (default action: core dump)
    // when it returns; a hardware fault re-executes the faulting instruction, which also ends the
    // process with the default action.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The faults [`inject`] can cause.
pub const FAULTS: [&str; 5] = ["segv", "bus", "abrt", "fpe", "ill"];

/// Fault injection for tests (`LATTICE_FAULT`, docs/OPERATIONS.md): makes this thread crash with
/// the named signal — a real invalid write (segv), a read past a truncated mapping (bus),
/// `abort()` (abrt), an integer division by zero (fpe), an undefined instruction (ill). Returns
/// only for an unknown name.
pub fn inject(fault: &str) -> Option<std::convert::Infallible> {
    match fault {
        // SAFETY: deliberately invalid: address 16 is never mapped (mmap_min_addr), so this write
        // faults with SIGSEGV; that is the point.
        "segv" => unsafe {
            std::ptr::write_volatile(16usize as *mut u8, 1);
        },
        "bus" => bus(),
        "abrt" => std::process::abort(),
        "fpe" => fpe(),
        "ill" => ill(),
        _ => return None,
    }
    // Faults that did not fire (should not happen): raise the signal instead.
    let sig = match fault {
        "segv" => libc::SIGSEGV,
        "bus" => libc::SIGBUS,
        "fpe" => libc::SIGFPE,
        _ => libc::SIGILL,
    };
    // SAFETY: raise is always safe to call.
    unsafe { libc::raise(sig) };
    std::process::abort()
}

fn bus() {
    // SAFETY: a 4 KiB shared mapping of an empty memfd: touching it is past the end of the file,
    // which the kernel answers with SIGBUS. Descriptors and the mapping are left to the crash.
    unsafe {
        let fd = libc::memfd_create(c"lattice-fault".as_ptr(), 0);
        if fd < 0 {
            return;
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        std::ptr::read_volatile(p as *const u8);
    }
}

#[cfg(target_arch = "x86_64")]
fn fpe() {
    // SAFETY: `div` by a zero register raises #DE, which Linux delivers as SIGFPE; that is the
    // point. Registers are declared as clobbered.
    unsafe {
        std::arch::asm!("xor edx, edx", "mov eax, 1", "div ecx", in("ecx") 0u32, out("eax") _, out("edx") _);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn fpe() {
    // SAFETY: raise is always safe to call.
    unsafe { libc::raise(libc::SIGFPE) };
}

#[cfg(target_arch = "x86_64")]
fn ill() {
    // SAFETY: `ud2` is the architecture's defined invalid instruction (SIGILL); that is the point.
    unsafe { std::arch::asm!("ud2") };
}

#[cfg(not(target_arch = "x86_64"))]
fn ill() {
    // SAFETY: raise is always safe to call.
    unsafe { libc::raise(libc::SIGILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_and_truncation() {
        let mut l = Line {
            buf: [0; 256],
            len: 0,
        };
        l.num(0, 1);
        l.push(b" ");
        l.num(7, 3);
        l.push(b" ");
        l.num(1234567890123, 1);
        assert_eq!(&l.buf[..l.len], b"0 007 1234567890123");
        l.push(&[b'x'; 400]);
        assert_eq!(l.len, 256);
    }

    #[test]
    fn core_dumps_enabled_for_this_process() {
        let c = enable_core_dumps();
        assert!(c.dumpable);
        // SAFETY: getrlimit into a zeroed struct.
        let hard = unsafe {
            let mut rl: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_CORE, &mut rl);
            rl.rlim_max
        };
        let hard = if hard == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            hard
        };
        assert_eq!(c.limit, hard, "soft limit raised to the hard limit");
    }

    #[test]
    fn unknown_fault_returns() {
        assert!(inject("nope").is_none());
    }
}
