//! Tracing set-up: pretty (human) or JSON lines, filtered by a level or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

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
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("log.level: {0}")]
pub struct LogInitError(String);

/// Installs the global subscriber (stderr). Fails on a bad filter directive; a second call in the
/// same process is ignored.
pub fn init(cfg: &LogConfig) -> Result<(), LogInitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.level),
    }
    .map_err(|e| LogInitError(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    let _ = match cfg.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
