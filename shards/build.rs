//! Link options of the `lattice` binary (bins only; tests and libraries are untouched).
//!
//! On Linux/glibc the binary is linked with packed relative relocations (`-z pack-relative-relocs`,
//! DT_RELR; GNU ld ≥ 2.38, glibc ≥ 2.36): a position-independent binary carries ≈ 60,000 relative
//! relocations, 1.4 MB of `.rela.dyn` that the loader reads at every start; packed they take
//! 24 kB. Start-up RSS 17.1 → 15.2 MiB (bench/startup_rss.py). `LATTICE_NO_RELR=1` links without
//! it (an older toolchain or C library).
fn main() {
    println!("cargo:rerun-if-env-changed=LATTICE_NO_RELR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("LATTICE_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
