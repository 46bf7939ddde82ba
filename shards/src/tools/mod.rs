//! The work of the operator subcommands of the `lattice` binary (one file each).

pub mod admin;
