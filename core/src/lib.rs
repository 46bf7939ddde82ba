//! Lattice core.
pub mod storage;
