//! The session-token key: `account.token_secret`, or a key generated once into
//! `<storage.data_dir>/token.key` (mode 0600) and read back at every start, so tokens survive a
//! restart. Resolved before the shards start; the key is put into the merged configuration the
//! account component is built from (never printed: `lattice config` does not resolve it).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::token::TokenKey;
use crate::config::Config;

/// The key file's name inside `storage.data_dir`.
pub const KEY_FILE: &str = "token.key";

/// Reads or creates the key file `path`. Fails with a one-line reason (unreadable, malformed,
/// cannot create).
pub fn load_or_create(path: &Path) -> Result<TokenKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => TokenKey::from_hex(&text).ok_or_else(|| {
            format!(
                "{}: not 64 hex digits (delete it to generate a new key; every session token becomes invalid)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("create {}: {e}", d.display()))?;
            }
            let key = TokenKey::random().map_err(|e| format!("no OS randomness: {e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
            writeln!(f, "{}", key.to_hex())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "account: generated the session-token key");
            Ok(key)
        }
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

/// Puts the token key into `cfg.table["account"]["token_secret"]` unless one is configured.
pub fn resolve(cfg: &mut Config) -> Result<(), String> {
    let configured = cfg
        .table
        .get("account")
        .and_then(|a| a.get("token_secret"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if !configured.is_empty() {
        return TokenKey::from_hex(&configured)
            .map(|_| ())
            .ok_or_else(|| "account.token_secret: 64 hex digits (32 bytes), or empty".into());
    }
    let key = load_or_create(&cfg.storage.data_dir.join(KEY_FILE))?;
    if let Some(toml::Value::Table(a)) = cfg.table.get_mut("account") {
        a.insert("token_secret".into(), toml::Value::String(key.to_hex()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("lattice-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(KEY_FILE);
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.to_hex(), b.to_hex());
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("64 hex digits"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
