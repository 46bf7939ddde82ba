//! Resume tokens: 16 bytes from the kernel's CSPRNG (`/dev/urandom`), read 4 KiB at a time per
//! shard so a token costs no system call on average.

use std::fs::File;
use std::io::Read;

use lattice_wire::TOKEN_LEN;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /dev/urandom for resume tokens: {0}")]
pub struct TokenError(#[from] std::io::Error);

/// A per-shard source of resume tokens.
#[derive(Debug)]
pub struct TokenSource {
    file: Option<File>,
    buf: Box<[u8; 4096]>,
    used: usize,
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource {
            file: None,
            buf: Box::new([0; 4096]),
            used: 4096,
        }
    }
}

impl TokenSource {
    /// The next token. Fails (and the caller refuses resume for this session, logged) only when
    /// `/dev/urandom` cannot be opened or read.
    pub fn token(&mut self) -> Result<[u8; TOKEN_LEN], TokenError> {
        if self.used + TOKEN_LEN > self.buf.len() {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(File::open("/dev/urandom")?),
            };
            file.read_exact(&mut self.buf[..])?;
            self.used = 0;
        }
        let mut t = [0; TOKEN_LEN];
        t.copy_from_slice(&self.buf[self.used..self.used + TOKEN_LEN]);
        // Never hand the same bytes out twice.
        self.buf[self.used..self.used + TOKEN_LEN].fill(0);
        self.used += TOKEN_LEN;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_across_refills() {
        let mut s = TokenSource::default();
        let tokens: Vec<_> = (0..600).map(|_| s.token().unwrap()).collect();
        let mut sorted = tokens.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            tokens.len(),
            "600 random 128-bit tokens are distinct"
        );
    }
}
