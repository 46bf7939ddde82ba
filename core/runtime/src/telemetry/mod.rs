//! Observability: tracing set-up and its non-blocking writer, rate-limited warnings, crash
//! handling, per-shard metrics, the one Prometheus writer, the admin HTTP listener.

pub mod admin;
pub mod alloc_metrics;
pub mod continuity;
pub mod crash;
pub mod gateway;
pub mod log;
pub mod log_file;
pub mod log_writer;
pub mod metrics;
pub mod prom;
pub mod warn_limit;
