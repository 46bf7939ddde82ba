//! Lattice benchmarks: the `lattice-load` harness, the tokio baseline echo server, micro-benchmarks.
//!
//! Shared pieces of the harness and the baseline live here: frame encoding and the option parser,
//! the harness's transports (TCP, TLS), and the `login` scenario of `lattice-load` (register,
//! password login, token reconnect).

pub mod login;
pub mod transport;
pub mod wire;
pub mod ws;
