//! Lattice core.

pub mod net;
