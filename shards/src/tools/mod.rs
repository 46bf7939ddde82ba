//! `lattice tool …`: operator tools, one file each (`migrate --print` lives with the storage crate).

pub mod gen_cert;
pub mod ps;
pub mod version;
