//! The bearer token of the `/admin/` API: where it comes from, and the guard every `/admin/`
//! request passes (registered once for the prefix, so a route added by any file is behind it).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lattice_runtime::telemetry::admin::{Guard, Request, Response};

/// Bytes of randomness in a generated token (written as 64 hex digits).
const TOKEN_BYTES: usize = 32;

/// Where the token of this run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `admin.token` was set.
    Config,
    /// Read from this file (generated there at an earlier start).
    File(PathBuf),
    /// Generated now into this file.
    Generated(PathBuf),
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read, created or written.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The token file holds no usable token.
    #[error("admin token file {0} is empty or not one line of printable text")]
    Bad(PathBuf),
    /// The token file can be read by others.
    #[error("admin token file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The token file inside the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The token: `configured` when not empty; else the one in `data_dir/admin.token`, generated
/// (mode 0600, created exclusively) when the file does not exist yet.
pub fn resolve(configured: &str, data_dir: &Path) -> Result<(String, TokenSource), TokenError> {
    if !configured.is_empty() {
        return Ok((configured.to_string(), TokenSource::Config));
    }
    let path = token_path(data_dir);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    match read_token(&path) {
        Ok(t) => return Ok((t, TokenSource::File(path))),
        Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut raw = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(io)?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    Ok((token, TokenSource::Generated(path)))
}

/// Reads a token file, refusing one that others can read.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let t = text.trim();
    if !usable_token(t) {
        return Err(TokenError::Bad(path.to_path_buf()));
    }
    Ok(t.to_string())
}

/// A token a request can carry: not empty, visible ASCII only (`!` to `~`). A space would be
/// trimmed from the header or stand between words; a control character makes the header invalid
/// (the request is a 400 before any guard), so such a token could never be given.
pub fn usable_token(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())
}

/// Compares in time that depends only on the lengths (the length of a token is no secret worth
/// keeping: a generated one is always 64 characters).
pub fn same_token(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The guard: 401 unless the request carries `Authorization: Bearer <token>`.
pub fn guard(token: String) -> Guard {
    Box::new(move |req: &Request| {
        if req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .count()
            > 1
        {
            return Some(unauthorized("more than one Authorization header"));
        }
        let given = req
            .header("authorization")
            .and_then(bearer_credentials)
            .map(str::trim);
        match given {
            Some(t) if same_token(t.as_bytes(), token.as_bytes()) => None,
            Some(_) => Some(unauthorized("wrong bearer token")),
            None => Some(unauthorized(
                "missing Authorization: Bearer <admin token> (admin.token or the data directory's admin.token file)",
            )),
        }
    })
}

/// The credentials of an `Authorization` value with the `Bearer` scheme, in any case (RFC 9110
/// 11.1: schemes are case-insensitive).
fn bearer_credentials(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

fn unauthorized(why: &str) -> Response {
    let mut r = Response::error(401, why);
    r.headers.push((
        "WWW-Authenticate".into(),
        "Bearer realm=\"lattice-admin\"".into(),
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lattice-token-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generated_once_with_mode_0600_then_reused() {
        let d = dir("gen");
        let (t, src) = resolve("", &d).unwrap();
        assert_eq!(src, TokenSource::Generated(token_path(&d)));
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(token_path(&d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (again, src) = resolve("", &d).unwrap();
        assert_eq!((again, src), (t, TokenSource::File(token_path(&d))));
        assert_eq!(
            resolve("abc", &d).unwrap(),
            ("abc".into(), TokenSource::Config)
        );
        std::fs::set_permissions(token_path(&d), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            resolve("", &d),
            Err(TokenError::Exposed { mode: 0o644, .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_visible_ascii_tokens_are_usable() {
        assert!(usable_token("abc-DEF_0.9~!"));
        for bad in [
            "",
            " ",
            "a b",
            "ab\u{1}c",
            "a\tb",
            "ab\u{7f}",
            "é",
            "a\u{2028}b",
        ] {
            assert!(!usable_token(bad), "{bad:?}");
        }
        let d = dir("ctrl");
        std::fs::create_dir_all(&d).unwrap();
        let p = token_path(&d);
        std::fs::write(&p, "ab\u{1}c\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(resolve("", &d), Err(TokenError::Bad(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"", b"abc"));
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for v in ["Bearer t", "bearer t", "BEARER t", "BeArEr t"] {
            assert_eq!(bearer_credentials(v), Some("t"), "{v}");
        }
        for v in ["Bearerx t", "Basic t", "Bearer", ""] {
            assert_eq!(bearer_credentials(v), None, "{v}");
        }
    }
}
