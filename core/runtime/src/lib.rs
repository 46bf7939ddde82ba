//! Lattice runtime: the shards, the mesh between them, the socket glue, time, telemetry and
//! configuration.
//!
//! - [`Server`] starts one pinned thread per shard, each running a monoio executor (io_uring or
//!   epoll, [`driver`]), joined by the [`mesh`]: N×N bounded SPSC rings plus a control lane.
//! - [`shard`]: the loop pass, [`ShardCx`] (what an application may do) and [`ShardApp`] (what
//!   the runtime calls).
//! - [`net`]: the acceptor, the connection task that moves bytes between a socket and its
//!   `lattice_wire::Session`, and the per-shard session table.
//! - [`control`]: operator commands on the shards' control lanes (mass close, session listing,
//!   live rate limits) and the admin thread's handle on them.
//! - [`time`], [`telemetry`], [`config`].
//!
//! What this crate never knows: a role (gate, logic, …), a protobuf message, or storage. Roles are
//! [`ShardApp`]s built by `lattice-server`. Cross-shard work is always an explicit message through
//! the mesh; nothing on a shard's request path takes a lock.
#![warn(missing_docs)]

// A `--cfg loom` build (the mesh model, `tests/loom_mesh.rs`) compiles the mesh alone: under loom
// lattice-alloc exports only its ring, and nothing else here is modelled.

/// The per-shard allocator (`lattice-alloc`), re-exported so the binary can install it.
pub use lattice_alloc as alloc;

#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod control;
#[cfg(not(loom))]
pub mod driver;
pub mod mesh;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
mod server;
#[cfg(not(loom))]
pub mod shard;
#[cfg(not(loom))]
pub mod telemetry;
#[cfg(not(loom))]
pub mod time;

#[cfg(not(loom))]
pub use driver::{DriverChoice, DriverKind};
#[cfg(not(loom))]
pub use server::{
    OperatorSettings, RefusalFrames, RuntimeConfig, Server, ShardWatch, ShutdownConfig, StartError,
};
#[cfg(not(loom))]
pub use shard::{ShardApp, ShardCx};

#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(not(loom))]
static ALLOC_DUTIES: AtomicBool = AtomicBool::new(false);

/// Tells the shards that `lattice-alloc` is the global allocator: each shard then registers its own
/// heap, flushes its remote frees every loop pass, and shard 0 runs the central pool duty. Call
/// before [`Server::start`]. Without it the shards do none of that (another allocator is in use).
#[cfg(not(loom))]
pub fn enable_allocator_duties() {
    ALLOC_DUTIES.store(true, Ordering::SeqCst);
}

/// True when [`enable_allocator_duties`] was called.
#[cfg(not(loom))]
pub fn allocator_duties() -> bool {
    ALLOC_DUTIES.load(Ordering::Relaxed)
}
