//! `lattice tool gen-cert --out DIR`: a self-signed development certificate and its key, for
//! `localhost`, `127.0.0.1` and `::1` (rcgen, ECDSA P-256), written as `DIR/cert.pem` and
//! `DIR/key.pem` (mode 0600). For development and tests only: clients must be told to trust this
//! very certificate (e.g. `openssl s_client -CAfile DIR/cert.pem`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The names the certificate is valid for.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why no certificate was written.
#[derive(Debug, thiserror::Error)]
pub enum GenCertError {
    /// rcgen failed.
    #[error("cannot generate the certificate: {0}")]
    Generate(String),
    /// A file exists and `--force` was not given.
    #[error("{0} exists (use --force to overwrite)")]
    Exists(PathBuf),
    /// The directory or a file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// Generates the certificate and key and writes them into `dir` (created if missing). Refuses to
/// overwrite existing files unless `force`.
pub fn run(dir: &Path, force: bool) -> Result<Written, GenCertError> {
    let ck = rcgen::generate_simple_self_signed(NAMES.map(String::from).to_vec())
        .map_err(|e| GenCertError::Generate(e.to_string()))?;
    let out = Written {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if !force {
        for p in [&out.cert, &out.key] {
            if p.exists() {
                return Err(GenCertError::Exists(p.clone()));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| GenCertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write(&out.key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write(&out.cert, ck.cert.pem().as_bytes(), 0o644)?;
    Ok(out)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), GenCertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| GenCertError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Written beside the target, then renamed: a server reloading the pair never reads half a
    // file, and the key is never readable by others, not even for a moment.
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_pair_rustls_accepts_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("lattice-gen-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = run(&dir, false).unwrap();
        let cert = std::fs::read(&w.cert).unwrap();
        let key = std::fs::read(&w.key).unwrap();
        let opts = lattice_wire::tls::ServerOptions {
            alpn: vec![],
            ticketer: None,
        };
        lattice_wire::tls::server_config(&cert, &key, &opts).expect("rustls takes the pair");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&w.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is private");
        assert!(matches!(run(&dir, false), Err(GenCertError::Exists(_))));
        run(&dir, true).expect("--force overwrites");
        assert_ne!(std::fs::read(&w.key).unwrap(), key, "a new key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
