//! Observability: tracing set-up, per-shard metrics, the one Prometheus writer, the admin HTTP
//! listener.

pub mod admin;
pub mod alloc_metrics;
pub mod continuity;
pub mod gateway;
pub mod log;
pub mod metrics;
pub mod prom;
