//! The non-blocking log writer: formatted lines go into a bounded queue that one thread
//! (`lattice-log`) writes to the console (stderr) and, when configured, a rotating file.
//!
//! A thread that logs never waits: a line that finds the queue full is dropped and counted
//! ([`LogStats::dropped`]). The crash path ([`crash_flush`], [`crash_write`]) uses only atomics,
//! `nanosleep`, `write(2)` and `fsync(2)`, which are async-signal-safe.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use super::log_file::{RotatingFile, Rotation};

/// Counters of the log writer (process-wide; rendered in `/metrics` by [`render`]).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines accepted into the queue and not yet written.
    pub queued: AtomicU64,
    /// Lines dropped because the queue was full (`log.queue_lines`).
    pub dropped: AtomicU64,
    /// Lines written.
    pub written: AtomicU64,
    /// File rotations.
    pub rotations: AtomicU64,
    /// Failed writes or rotations of the log file (the console still gets the line).
    pub file_errors: AtomicU64,
}

/// The process's log counters.
pub fn stats() -> &'static LogStats {
    static S: OnceLock<LogStats> = OnceLock::new();
    S.get_or_init(LogStats::default)
}

/// Where the writer sends lines.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// Write to stderr.
    pub console: bool,
    /// The log file and its rotation, if any.
    pub file: Option<(PathBuf, Rotation)>,
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The sending side, cloned into every [`LineBuf`].
#[derive(Clone)]
pub struct LogQueue {
    tx: SyncSender<Msg>,
}

static TX: OnceLock<LogQueue> = OnceLock::new();
/// The file's descriptor for the crash path (-1 = none).
static FILE_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether the console gets lines (the crash path honours it too).
static CONSOLE: AtomicI32 = AtomicI32::new(1);
/// The writer thread's kernel thread id (the crash path must not wait for itself).
static WRITER_TID: AtomicI32 = AtomicI32::new(0);

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The log file could not be opened.
    #[error("log.file {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The writer thread could not be spawned.
    #[error("log writer thread: {0}")]
    Thread(std::io::Error),
    /// A writer already runs in this process.
    #[error("the log writer is already running")]
    Running,
}

/// Starts the writer thread with a queue of `queue_lines` lines. Once per process.
pub fn start(sinks: Sinks, queue_lines: usize) -> Result<LogQueue, WriterError> {
    if TX.get().is_some() {
        return Err(WriterError::Running);
    }
    let today = today_utc();
    let file = match &sinks.file {
        Some((path, rot)) => {
            Some(
                RotatingFile::open(path, *rot, today).map_err(|source| WriterError::File {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    if let Some(f) = &file {
        FILE_FD.store(f.raw_fd(), Ordering::SeqCst);
    }
    CONSOLE.store(i32::from(sinks.console), Ordering::SeqCst);
    let (tx, rx) = sync_channel(queue_lines.max(1));
    std::thread::Builder::new()
        .name("lattice-log".into())
        .spawn(move || writer(rx, sinks.console, file))
        .map_err(WriterError::Thread)?;
    let q = LogQueue { tx };
    let _ = TX.set(q.clone());
    Ok(q)
}

/// At most one line on stderr per this long about the log file failing.
const FILE_ERROR_REPORT: Duration = Duration::from_secs(60);

/// Largest batch the writer gathers before one write (bounds its buffer).
const BATCH_BYTES: usize = 256 * 1024;

fn writer(rx: Receiver<Msg>, console: bool, mut file: Option<RotatingFile>) {
    // SAFETY: gettid has no preconditions.
    WRITER_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    let st = stats();
    let mut batch = Vec::with_capacity(16 * 1024);
    let mut waiters: Vec<SyncSender<()>> = Vec::new();
    // When the log file last failed in a line on stderr (at most one a minute: the log file
    // cannot tell of its own failures, and the console may be off).
    let mut told: Option<std::time::Instant> = None;
    let mut untold = 0u64;
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut lines = 0u64;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    batch.extend_from_slice(&l);
                    lines += 1;
                }
                Msg::Flush(ack) => waiters.push(ack),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if console {
                let _ = std::io::stderr().lock().write_all(&batch);
            }
            if let Some(f) = file.as_mut() {
                let today = today_utc();
                match f.write(&batch, today) {
                    Ok(rotated) => {
                        if rotated > 0 {
                            st.rotations
                                .fetch_add(u64::from(rotated), Ordering::Relaxed);
                            FILE_FD.store(f.raw_fd(), Ordering::SeqCst);
                        }
                    }
                    Err(e) => {
                        st.file_errors.fetch_add(1, Ordering::Relaxed);
                        if told.is_none_or(|t| t.elapsed() >= FILE_ERROR_REPORT) {
                            let _ = writeln!(
                                std::io::stderr().lock(),
                                "lattice: log file {}: {e} ({untold} more failures since the last such line; all counted in lattice_log_file_errors_total)",
                                f.path().display()
                            );
                            told = Some(std::time::Instant::now());
                            untold = 0;
                        } else {
                            untold += 1;
                        }
                    }
                }
            }
            batch.clear();
            st.written.fetch_add(lines, Ordering::Relaxed);
            st.queued.fetch_sub(lines, Ordering::SeqCst);
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Waits (at most `timeout`) until every line queued before the call is written. Returns false on
/// time-out or when no writer runs. Not for the crash path (it allocates and blocks on a channel).
pub fn flush(timeout: Duration) -> bool {
    let Some(q) = TX.get() else { return false };
    let (ack_tx, ack_rx) = sync_channel(1);
    if q.tx.send(Msg::Flush(ack_tx)).is_err() {
        return false;
    }
    ack_rx.recv_timeout(timeout).is_ok()
}

/// Async-signal-safe: waits up to `max_wait` (in 1 ms sleeps) until the writer thread has written
/// every queued line. Does not wait when called on the writer thread itself. Returns true when the
/// queue was empty at the end.
pub fn crash_flush(max_wait: Duration) -> bool {
    let st = stats();
    // SAFETY: gettid has no preconditions and is async-signal-safe.
    let me = unsafe { libc::gettid() };
    if WRITER_TID.load(Ordering::SeqCst) == me {
        return st.queued.load(Ordering::SeqCst) == 0;
    }
    let step = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let mut left = max_wait.as_millis() as u64;
    while st.queued.load(Ordering::SeqCst) > 0 && left > 0 {
        // SAFETY: nanosleep with a valid timespec and a null remainder is async-signal-safe.
        unsafe { libc::nanosleep(&step, std::ptr::null_mut()) };
        left -= 1;
    }
    st.queued.load(Ordering::SeqCst) == 0
}

/// Async-signal-safe: writes `bytes` with `write(2)` to the log file (then `fsync`) and to stderr
/// when the console is on. Best effort: errors are ignored (there is nowhere left to report them).
pub fn crash_write(bytes: &[u8]) {
    let fd = FILE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        raw_write(fd, bytes);
        // SAFETY: fsync on a descriptor we opened; an invalid one only returns EBADF.
        unsafe { libc::fsync(fd) };
    }
    if CONSOLE.load(Ordering::SeqCst) != 0 {
        raw_write(2, bytes);
    }
}

fn raw_write(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length come from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// One log line being formatted; queued (or dropped and counted) when dropped.
pub struct LineBuf {
    buf: Vec<u8>,
    queue: Option<LogQueue>,
}

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        let st = stats();
        match &self.queue {
            Some(q) => {
                // Count first so the writer's decrement never goes below zero.
                st.queued.fetch_add(1, Ordering::SeqCst);
                match q.tx.try_send(Msg::Line(line)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        st.queued.fetch_sub(1, Ordering::SeqCst);
                        st.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // No writer (tests, or before start): write directly.
            None => {
                let _ = std::io::stderr().lock().write_all(&line);
            }
        }
    }
}

/// `tracing_subscriber` writer factory over the queue.
#[derive(Clone)]
pub struct MakeLine(pub Option<LogQueue>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeLine {
    type Writer = LineBuf;
    fn make_writer(&'a self) -> LineBuf {
        LineBuf {
            buf: Vec::with_capacity(256),
            queue: self.0.clone(),
        }
    }
}

/// Appends the log writer's families to `/metrics`.
pub fn render(w: &mut super::prom::Writer<'_>) {
    use super::prom::Kind;
    let s = stats();
    w.single(
        "lattice_log_lines_written_total",
        Kind::Counter,
        "Log lines written by the log writer thread.",
        s.written.load(Ordering::Relaxed),
    );
    w.single(
        "lattice_log_lines_dropped_total",
        Kind::Counter,
        "Log lines dropped because the log queue was full (log.queue_lines); no thread waits on a log write.",
        s.dropped.load(Ordering::Relaxed),
    );
    w.single(
        "lattice_log_queue_lines",
        Kind::Gauge,
        "Log lines waiting for the writer thread.",
        s.queued.load(Ordering::Relaxed),
    );
    w.single(
        "lattice_log_rotations_total",
        Kind::Counter,
        "Log file rotations (by day or by size).",
        s.rotations.load(Ordering::Relaxed),
    );
    w.single(
        "lattice_log_file_errors_total",
        Kind::Counter,
        "Failed writes or rotations of the log file (the console still got the lines).",
        s.file_errors.load(Ordering::Relaxed),
    );
}

fn today_utc() -> chrono::NaiveDate {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).date_naive()
}
