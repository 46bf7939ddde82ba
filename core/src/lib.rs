//! Lattice core.

pub mod time;
