//! The work of the operator subcommands of the `lattice` binary (`lattice admin`, `lattice tool
//! …`), one file each.

pub mod admin;
pub mod gen_cert;
pub mod ps;
pub mod version;
