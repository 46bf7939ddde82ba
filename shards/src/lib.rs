//! Lattice roles.
