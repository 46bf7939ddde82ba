//! Lattice benchmarks.
