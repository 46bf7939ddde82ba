//! The server's crash set-up: fatal-signal handlers and core dumps (the runtime's
//! `telemetry::crash`), the panic hook, and the fault-injection switch.
//!
//! Fault injection is off unless the environment variable `LATTICE_FAULT` names a fault
//! (`segv`, `bus`, `abrt`, `fpe`, `ill`, or `panic` for an uncaught panic on the main thread):
//! `lattice run` then crashes that way one second after it starts serving. It exists for the crash tests and for
//! operators checking their core-dump set-up (docs/OPERATIONS.md); it is deliberately not a
//! configuration key and not in `--help`.

use lattice_runtime::telemetry::{crash, log_writer};

/// The environment variable that asks for a crash.
pub const FAULT_ENV: &str = "LATTICE_FAULT";

/// Every fault `LATTICE_FAULT` can name: the runtime's signals and a panic.
pub const KNOWN_FAULTS: [&str; 6] = ["segv", "bus", "abrt", "fpe", "ill", "panic"];

/// Installs the fatal-signal handlers, enables core dumps for this process and sets the panic
/// hook. Logs what it did; a failure to install is logged and the server goes on.
pub fn setup() {
    match crash::install() {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "crash handlers not installed"),
    }
    let core = crash::enable_core_dumps();
    let limit = if core.limit == u64::MAX {
        "unlimited".to_string()
    } else {
        core.limit.to_string()
    };
    tracing::info!(
        core_limit = %limit,
        dumpable = core.dumpable,
        "crash handlers installed for SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL; core dumps enabled for this process (core_pattern untouched)"
    );
    std::panic::set_hook(Box::new(|info| {
        let msg = lattice_runtime::shard::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("?");
        tracing::error!(thread = name, at, panic = %msg, "panic");
        // A panic on the main thread ends the process: make sure its line is written. Shard
        // threads never wait on the log (their panics are caught and counted).
        if name == "main" {
            log_writer::flush(std::time::Duration::from_secs(1));
        }
    }));
}

/// Crashes the process as `LATTICE_FAULT` asks, if it is set, one second after the call (so the
/// shards have started and logged: the crash line is then the file's last). Unknown names are
/// logged and ignored.
pub fn inject_if_asked() {
    let Ok(fault) = std::env::var(FAULT_ENV) else {
        return;
    };
    if !KNOWN_FAULTS.contains(&fault.as_str()) {
        tracing::error!(fault = %fault, known = ?KNOWN_FAULTS, "fault injection: unknown fault ({FAULT_ENV}); ignored, the server goes on");
        return;
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    tracing::error!(
        fault = %fault,
        "fault injection: crashing on purpose ({FAULT_ENV} is set)"
    );
    if fault == "panic" {
        panic!("fault injection: {FAULT_ENV}=panic");
    }
    if crash::inject(&fault).is_none() {
        tracing::error!(fault = %fault, known = ?crash::FAULTS, "fault injection: unknown fault; ignored");
    }
}
