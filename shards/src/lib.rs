//! Lattice roles as services (gate in front, logic behind) and the `lattice` binary's pieces.
//!
//! `app` is the per-shard application (the gate and the service instances); `service` is the
//! component framework; `logic` holds the demo components (echo, chat). Nothing here touches a
//! socket: the shard runtime in `lattice-core` does.
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod logic;
pub mod server;
pub mod service;
