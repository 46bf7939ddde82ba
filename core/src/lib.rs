//! Lattice core: the shard runtime, the mesh, networking (sans-IO codecs, sessions, listeners),
//! telemetry and configuration.
//!
//! Nothing here knows a role (gate, logic, …): roles are [`runtime::ShardApp`]s built in
//! `lattice-shards`. Cross-shard work is always an explicit message through the mesh.
#![warn(missing_docs)]

/// The per-shard allocator (`lattice-alloc`), re-exported so the binary can install it.
pub use lattice_alloc as alloc;

pub mod config;
pub mod mesh;
pub mod net;
pub mod runtime;
pub mod storage;
pub mod telemetry;
pub mod time;
