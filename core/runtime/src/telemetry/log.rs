//! Tracing set-up: pretty (human) or JSON lines, filtered by a level or `RUST_LOG`, written through
//! the non-blocking writer ([`super::log_writer`]) to stderr and, when `log.file` is set, a file
//! rotated by day and size.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use super::log_file::Rotation;
use super::log_writer::{self, MakeLine, Sinks};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter directive, e.g. `info` or `lattice_core=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    /// Write lines to stderr.
    pub console: bool,
    /// Log file path; empty = no file.
    pub file: String,
    /// Rotate the file before it passes this many bytes (0 = never by size).
    pub rotate_bytes: u64,
    /// Rotate the file when the UTC day changes.
    pub rotate_daily: bool,
    /// Rotated files kept.
    pub keep: usize,
    /// Lines the writer queue holds; a line that finds it full is dropped and counted.
    pub queue_lines: usize,
    /// Protocol-violation warnings logged per reason per window on each shard; the rest are
    /// counted and summarised in one line.
    pub warn_burst: u32,
    /// The window of `warn_burst`, in ms.
    pub warn_window_ms: u64,
}

/// An optional value for a log field: the value itself, or `none` (not Rust's `Some(…)`/`None`):
/// `addr = %or_none(peer)`.
pub fn or_none<T: std::fmt::Display>(v: Option<T>) -> OrNone<T> {
    OrNone(v)
}

/// See [`or_none`].
pub struct OrNone<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrNone<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// A list for a log field: its items separated by commas (`1,3`), not Rust's `[1, 3]`.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    /// A bad filter directive (the message names where it came from).
    #[error("{0}")]
    Filter(String),
    /// The writer (file or thread) could not start.
    #[error(transparent)]
    Writer(#[from] log_writer::WriterError),
}

/// Checks a `log.level` value (the filter syntax of `RUST_LOG`) without installing anything.
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber and starts the writer thread. Fails on a bad filter directive
/// or a log file that cannot be opened; a second call in the same process is an error from the
/// writer ([`log_writer::WriterError::Running`]).
pub fn init(cfg: &LogConfig) -> Result<(), LogInitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).map_err(|e| {
            LogInitError::Filter(format!(
                "environment RUST_LOG {v:?} (it overrides log.level): {e}"
            ))
        }),
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| LogInitError::Filter(format!("config key `log.level`: {e}"))),
    }?;
    let file = (!cfg.file.is_empty()).then(|| {
        (
            PathBuf::from(&cfg.file),
            Rotation {
                max_bytes: cfg.rotate_bytes,
                daily: cfg.rotate_daily,
                keep: cfg.keep,
            },
        )
    });
    let has_file = file.is_some();
    super::warn_limit::set_defaults(cfg.warn_burst, cfg.warn_window_ms);
    let q = log_writer::start(
        Sinks {
            console: cfg.console,
            file,
        },
        cfg.queue_lines,
    )?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeLine(Some(q)))
        .with_ansi(
            !has_file
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    let _ = match cfg.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
