//! Lattice benchmarks: the `lattice-load` harness, the tokio baseline echo server, micro-benchmarks.
//!
//! Shared pieces of the harness and the baseline live here: frame encoding and the option parser,
//! and the harness's transports (TCP, TLS).

pub mod transport;
pub mod wire;
pub mod ws;
