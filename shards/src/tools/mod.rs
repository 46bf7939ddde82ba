//! Operator tools run by `lattice tool …`, one file each.

pub mod gen_cert;
