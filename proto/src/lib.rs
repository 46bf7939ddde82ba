//! Lattice protocol messages (issue 5 fills this in).
