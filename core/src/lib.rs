//! Lattice core.
