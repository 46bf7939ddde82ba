//! Session tokens: what `LoginOk` hands out and `TokenLogin` takes back, so a reconnect costs an
//! HMAC (microseconds), not a password hash (tens of milliseconds).
//!
//! 65 bytes, opaque to clients:
//!
//! ```text
//! version u8 = 2 | user_id u64 | owner_key u32 | expires_ms u64 | generation u32 | nonce u64 | HMAC-SHA256 (32)
//! ```
//!
//! little-endian; the MAC covers the first 33 bytes under the server's key (`account.token_secret`).
//! The nonce makes every token distinct (two logins of one account in the same millisecond got
//! the same bytes under version 1, which had no nonce: 57 bytes, MAC over the first 25; those
//! are still accepted until they expire).
//! `owner_key` says which shard owns the account (it is derived from the account name, so it is
//! the same for every shard count); `generation` is the account's token generation, raised by every
//! password change, so older tokens stop working.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Encoded length.
pub const TOKEN_LEN: usize = 65;
const BODY_LEN: usize = 33;
const VERSION: u8 = 2;
/// Version 1 (no nonce): encoded length and signed part.
const V1_LEN: usize = 57;
const V1_BODY_LEN: usize = 25;

/// A nonce no other token of this process had: a counter from a random start.
fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without OS randomness the counter still makes this process's tokens distinct.
        let _ = getrandom::fill(&mut b);
        AtomicU64::new(u64::from_le_bytes(b))
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// The fields of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The account's user id.
    pub user_id: u64,
    /// Which shard owns the account (`owner_key % shards`).
    pub owner_key: u32,
    /// Expiry, Unix ms.
    pub expires_ms: u64,
    /// The account's token generation when it was issued.
    pub generation: u32,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Wrong length or version, or the MAC does not verify.
    #[error("invalid session token")]
    Invalid,
    /// Past its expiry.
    #[error("session token expired")]
    Expired,
}

/// The HMAC key. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from 64 hex digits.
    pub fn from_hex(s: &str) -> Option<TokenKey> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TokenKey(k))
    }

    /// A random key (OS randomness).
    pub fn random() -> Result<TokenKey, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(TokenKey(k))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// Encodes and signs `c` with a fresh nonce. Cost: one HMAC-SHA256 over 33 bytes (about a
    /// microsecond).
    pub fn sign(&self, c: &Claims) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_LEN);
        out.push(VERSION);
        out.extend_from_slice(&c.user_id.to_le_bytes());
        out.extend_from_slice(&c.owner_key.to_le_bytes());
        out.extend_from_slice(&c.expires_ms.to_le_bytes());
        out.extend_from_slice(&c.generation.to_le_bytes());
        out.extend_from_slice(&nonce().to_le_bytes());
        let mut m = self.mac();
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
        debug_assert_eq!(out.len(), TOKEN_LEN);
        out
    }

    /// Checks the MAC (in constant time) and the expiry against `now_ms`.
    pub fn verify(&self, token: &[u8], now_ms: u64) -> Result<Claims, TokenError> {
        let c = peek(token).ok_or(TokenError::Invalid)?;
        let body = if token[0] == VERSION {
            BODY_LEN
        } else {
            V1_BODY_LEN
        };
        let mut m = self.mac();
        m.update(&token[..body]);
        m.verify_slice(&token[body..])
            .map_err(|_| TokenError::Invalid)?;
        if now_ms >= c.expires_ms {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

/// The claims of a well-formed token *without* checking its MAC: for routing only (the owner
/// shard verifies it).
pub fn peek(token: &[u8]) -> Option<Claims> {
    match (token.len(), token.first()) {
        (TOKEN_LEN, Some(&VERSION)) | (V1_LEN, Some(1)) => {}
        _ => return None,
    }
    let u64_at = |i: usize| u64::from_le_bytes(token[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(token[i..i + 4].try_into().expect("4 bytes"));
    Some(Claims {
        user_id: u64_at(1),
        owner_key: u32_at(9),
        expires_ms: u64_at(13),
        generation: u32_at(21),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            user_id: 1 << 62,
            owner_key: 0xdead_beef,
            expires_ms: 2_000,
            generation: 3,
        }
    }

    #[test]
    fn sign_verify_and_every_failure() {
        let k = TokenKey::random().unwrap();
        let t = k.sign(&claims());
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(k.verify(&t, 1_999), Ok(claims()));
        assert_eq!(k.verify(&t, 2_000), Err(TokenError::Expired));
        // Any flipped bit breaks it.
        for i in 0..TOKEN_LEN {
            let mut bad = t.clone();
            bad[i] ^= 0x10;
            assert_eq!(k.verify(&bad, 0), Err(TokenError::Invalid), "byte {i}");
        }
        assert_eq!(k.verify(&t[..TOKEN_LEN - 1], 0), Err(TokenError::Invalid));
        assert_eq!(k.verify(&[], 0), Err(TokenError::Invalid));
        // Another key does not verify it.
        let other = TokenKey::random().unwrap();
        assert_eq!(other.verify(&t, 0), Err(TokenError::Invalid));
        assert_eq!(peek(&t).unwrap().owner_key, 0xdead_beef);
    }

    #[test]
    fn every_token_is_distinct_and_version_1_still_verifies() {
        let k = TokenKey::random().unwrap();
        // The same claims (one account, one millisecond) twice: two tokens.
        let (a, b) = (k.sign(&claims()), k.sign(&claims()));
        assert_ne!(a, b);
        assert_eq!(k.verify(&a, 0), Ok(claims()));
        assert_eq!(k.verify(&b, 0), Ok(claims()));
        // A version 1 token (57 bytes, MAC over 25) issued before the nonce.
        let mut v1 = a[..V1_BODY_LEN].to_vec();
        v1[0] = 1;
        let mut m = k.mac();
        m.update(&v1);
        v1.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(v1.len(), V1_LEN);
        assert_eq!(k.verify(&v1, 1_999), Ok(claims()));
        assert_eq!(k.verify(&v1, 2_000), Err(TokenError::Expired));
        let mut bad = v1.clone();
        bad[5] ^= 1;
        assert_eq!(k.verify(&bad, 0), Err(TokenError::Invalid));
        // A version 1 header on a version 2 length, and the other way round: refused.
        let mut mixed = a.clone();
        mixed[0] = 1;
        assert_eq!(k.verify(&mixed, 0), Err(TokenError::Invalid));
        let mut mixed = v1.clone();
        mixed[0] = VERSION;
        assert_eq!(k.verify(&mixed, 0), Err(TokenError::Invalid));
    }

    #[test]
    fn hex_keys() {
        let k = TokenKey::random().unwrap();
        let again = TokenKey::from_hex(&k.to_hex()).unwrap();
        let t = k.sign(&claims());
        assert_eq!(again.verify(&t, 0), Ok(claims()));
        assert!(TokenKey::from_hex("abc").is_none());
        assert!(TokenKey::from_hex(&"zz".repeat(32)).is_none());
        assert_eq!(format!("{k:?}"), "TokenKey(..)");
    }
}
