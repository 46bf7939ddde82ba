//! The `[account]` section (defaults and their documentation in `account.toml`).

/// `[account]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Shortest account name, characters.
    pub account_min_len: usize,
    /// Longest account name, characters.
    pub account_max_len: usize,
    /// Allowed characters besides ASCII letters and digits.
    pub account_symbols: String,
    /// Shortest password, characters.
    pub password_min_len: usize,
    /// Longest password, bytes.
    pub password_max_len: usize,
    /// Printable ASCII only.
    pub password_ascii_only: bool,
    /// Shortest nickname, characters.
    pub nickname_min_len: usize,
    /// Longest nickname, characters.
    pub nickname_max_len: usize,
    /// Spaces allowed inside nicknames.
    pub nickname_spaces: bool,
    /// Argon2id memory, KiB.
    pub hash_memory_kib: u32,
    /// Argon2id passes.
    pub hash_passes: u32,
    /// Hash worker threads (0 = half the cores).
    pub hash_workers: usize,
    /// Hash jobs waiting beyond the workers.
    pub hash_queue: usize,
    /// Failures that lock an account.
    pub account_lock_failures: usize,
    /// Account failure window, ms.
    pub account_lock_window_ms: u64,
    /// Account lock duration, ms.
    pub account_lock_ms: u64,
    /// Failures that lock an IP address.
    pub ip_lock_failures: usize,
    /// IP failure window, ms.
    pub ip_lock_window_ms: u64,
    /// IP lock duration, ms.
    pub ip_lock_ms: u64,
    /// Lock-out entries per shard and kind.
    pub lock_table_max: usize,
    /// Token lifetime, ms.
    pub token_ttl_ms: u64,
    /// Token HMAC key, hex.
    pub token_secret: String,
    /// Online players per owner shard.
    pub max_online_per_shard: usize,
    /// Password logins of one account name that may wait for its registration in flight.
    pub max_deferred_logins: usize,
}

/// Longest account name or nickname a column holds, characters.
pub const MAX_NAME_CHARS: usize = 64;

impl AccountConfig {
    /// The documented defaults (`account.toml`).
    pub fn defaults() -> AccountConfig {
        let t: toml::Table = include_str!("account.toml")
            .parse()
            .expect("account.toml parses");
        t["account"]
            .clone()
            .try_into()
            .expect("account.toml matches AccountConfig")
    }

    /// The defaults with a cheap hash (1 pass over 8 KiB) and one worker, for unit tests only.
    pub fn for_tests() -> AccountConfig {
        AccountConfig {
            hash_memory_kib: 8,
            hash_passes: 1,
            hash_workers: 1,
            ..AccountConfig::defaults()
        }
    }

    /// Checks the bounds; the error names the key. `strict` enforces the OWASP minimum hash cost
    /// (the server always does; unit tests may hash cheaply).
    pub fn validate(&self, strict: bool) -> Result<(), String> {
        let bad = |k: &str, why: &str| Err(format!("account.{k}: {why}"));
        if self.account_min_len == 0 || self.account_min_len > self.account_max_len {
            return bad("account_min_len", "must be 1..=account_max_len");
        }
        if self.account_max_len > MAX_NAME_CHARS {
            return bad("account_max_len", "at most 64");
        }
        if self.nickname_min_len == 0 || self.nickname_min_len > self.nickname_max_len {
            return bad("nickname_min_len", "must be 1..=nickname_max_len");
        }
        if self.nickname_max_len > MAX_NAME_CHARS {
            return bad("nickname_max_len", "at most 64");
        }
        if self.password_min_len == 0 || self.password_min_len > self.password_max_len {
            return bad("password_min_len", "must be 1..=password_max_len");
        }
        if self
            .account_symbols
            .chars()
            .any(|c| !c.is_ascii_punctuation())
        {
            return bad("account_symbols", "ASCII punctuation only");
        }
        if strict && self.hash_memory_kib < 19_456 {
            return bad(
                "hash_memory_kib",
                "at least 19456 (19 MiB, the OWASP minimum for Argon2id)",
            );
        }
        if strict && self.hash_passes < 2 {
            return bad("hash_passes", "at least 2 (the OWASP minimum at 19 MiB)");
        }
        if self.hash_memory_kib < 8 || self.hash_passes == 0 {
            return bad("hash_memory_kib", "Argon2 needs at least 8 KiB and 1 pass");
        }
        if self.account_lock_failures == 0 {
            return bad("account_lock_failures", "must be at least 1");
        }
        if self.ip_lock_failures == 0 {
            return bad("ip_lock_failures", "must be at least 1");
        }
        if self.lock_table_max == 0 {
            return bad("lock_table_max", "must be at least 1");
        }
        if self.max_online_per_shard == 0 {
            return bad("max_online_per_shard", "must be at least 1");
        }
        if self.max_deferred_logins == 0 {
            return bad("max_deferred_logins", "must be at least 1");
        }
        if self.token_ttl_ms == 0 {
            return bad("token_ttl_ms", "must be at least 1");
        }
        if !self.token_secret.is_empty()
            && super::token::TokenKey::from_hex(&self.token_secret).is_none()
        {
            return bad("token_secret", "64 hex digits (32 bytes), or empty");
        }
        Ok(())
    }

    /// Worker threads: the configured number, or half the cores (at least 1).
    pub fn workers(&self) -> usize {
        if self.hash_workers > 0 {
            return self.hash_workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).max(1)
    }
}
