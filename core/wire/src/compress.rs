//! Frame body compression (the `COMPRESSED` flag of docs/PROTOCOL.md): zlib streams (RFC 1950)
//! through `flate2`'s pure-Rust backend.
//!
//! Sans-IO: bytes in, bytes out, no socket, no clock. One [`BodyCompressor`] per shard (or per
//! session) reuses its deflate/inflate state across frames.
//!
//! - Sending: a body longer than [`CompressConfig::threshold`] is compressed; if the result is not
//!   smaller, it is sent as is (both cases are counted).
//! - Receiving: inflation stops as soon as the output would exceed [`CompressConfig::max_inflated`]
//!   (a compression bomb), so memory stays bounded by that cap (+1 byte); the caller closes
//!   the session with the error's message as the logged reason.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Compression settings: the `[compress]` section (`threshold`, `max_inflated`, `level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct CompressConfig {
    /// Bodies strictly longer than this many bytes are compressed. `usize::MAX` turns sending
    /// compression off. Default 1024.
    pub threshold: usize,
    /// Hard cap on the size of an inflated body. Default 1,048,576 (= the default `net.max_frame`).
    pub max_inflated: usize,
    /// zlib level 0..=9. Default 1 (fastest; game messages are small and CPU is the budget).
    pub level: u32,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            threshold: 1024,
            max_inflated: 1 << 20,
            level: 1,
        }
    }
}

/// Counters of a [`BodyCompressor`]; plain integers, owned by one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompressStats {
    /// Bodies sent compressed.
    pub compressed: u64,
    /// Bodies at or below the threshold, sent as is.
    pub below_threshold: u64,
    /// Bodies above the threshold that did not shrink, sent as is.
    pub not_smaller: u64,
    /// Bytes saved by compression (uncompressed minus compressed, over `compressed` bodies).
    pub bytes_saved: u64,
    /// Bodies inflated successfully.
    pub inflated: u64,
    /// Bodies refused because they inflate beyond `max_inflated` (bombs).
    pub rejected_too_large: u64,
    /// Bodies refused because they are not a valid, complete zlib stream.
    pub rejected_corrupt: u64,
}

/// Why a compressed body was refused. The `Display` text is meant as the session's close reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// The body inflates to more than the cap (a compression bomb, or a peer with a larger limit).
    #[error("compressed body inflates beyond the cap of {cap} bytes")]
    TooLarge {
        /// The configured `max_inflated`.
        cap: usize,
    },
    /// The zlib stream is invalid (bad header, bad data, bad checksum).
    #[error("compressed body is not a valid zlib stream: {0}")]
    Corrupt(String),
    /// The zlib stream ends before its end marker.
    #[error("compressed body is truncated (zlib stream has no end)")]
    Truncated,
    /// Bytes follow the end of the zlib stream.
    #[error("compressed body has {extra} bytes after the end of the zlib stream")]
    TrailingBytes {
        /// How many bytes follow the stream.
        extra: usize,
    },
}

/// Most bytes inflated per step.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Compresses outgoing bodies and inflates incoming ones, with reusable zlib state and counters.
pub struct BodyCompressor {
    config: CompressConfig,
    deflate: Compress,
    inflate: Decompress,
    stats: CompressStats,
}

impl BodyCompressor {
    /// A compressor with `config` (level clamped to 0..=9).
    pub fn new(config: CompressConfig) -> Self {
        let level = config.level.min(9);
        BodyCompressor {
            config: CompressConfig { level, ..config },
            deflate: Compress::new(Compression::new(level), true),
            inflate: Decompress::new(true),
            stats: CompressStats::default(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &CompressConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> CompressStats {
        self.stats
    }

    /// Compresses `body` onto the end of `out` when it is above the threshold and shrinks.
    ///
    /// Returns `true` if `out` received a zlib stream (send it with the `COMPRESSED` flag), `false`
    /// if `out` is unchanged (send `body` as is). Cost: one deflate pass over `body`, abandoned as
    /// soon as the output reaches `body.len()`; allocates at most `body.len()` bytes in `out`.
    pub fn compress(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        if body.len() <= self.config.threshold {
            self.stats.below_threshold += 1;
            return false;
        }
        let start = out.len();
        // Only a result shorter than the body is worth sending.
        let limit = body.len() - 1;
        out.reserve_exact(limit);
        self.deflate.reset();
        let mut consumed = 0usize;
        loop {
            let written = out.len() - start;
            if written >= limit {
                break;
            }
            let write_at = out.len();
            out.resize(start + limit, 0);
            let (in_before, out_before) = (self.deflate.total_in(), self.deflate.total_out());
            let status = self.deflate.compress(
                &body[consumed..],
                &mut out[write_at..],
                FlushCompress::Finish,
            );
            let read = (self.deflate.total_in() - in_before) as usize;
            let wrote = (self.deflate.total_out() - out_before) as usize;
            out.truncate(write_at + wrote);
            consumed += read;
            match status {
                Ok(Status::StreamEnd) => {
                    let size = out.len() - start;
                    self.stats.compressed += 1;
                    self.stats.bytes_saved += (body.len() - size) as u64;
                    return true;
                }
                // Output space ran out (loop head gives up) or no progress (cannot happen with
                // room left and Finish; treat as "did not shrink" rather than spin).
                Ok(_) if read == 0 && wrote == 0 => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out.truncate(start);
        self.stats.not_smaller += 1;
        false
    }

    /// Inflates the zlib stream `body` onto the end of `out`, refusing to produce more than
    /// `max_inflated` bytes.
    ///
    /// Cost: one inflate pass; `out`'s allocation never grows past `out.len() + max_inflated + 1`
    /// bytes, even for a bomb (its capacity is kept after an error, for reuse).
    /// Fails with [`InflateError`] (and leaves `out` as it was) on a bomb, a corrupt or truncated
    /// stream, or bytes after the stream's end. Each failure is counted.
    pub fn inflate(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        let start = out.len();
        let result = self.inflate_inner(body, out, start);
        match &result {
            Ok(()) => self.stats.inflated += 1,
            Err(InflateError::TooLarge { .. }) => self.stats.rejected_too_large += 1,
            Err(_) => self.stats.rejected_corrupt += 1,
        }
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn inflate_inner(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), InflateError> {
        let cap = self.config.max_inflated;
        self.inflate.reset(true);
        let mut consumed = 0usize;
        loop {
            let produced = out.len() - start;
            if produced > cap {
                return Err(InflateError::TooLarge { cap });
            }
            // Room for at most one byte beyond the cap: producing it proves the bomb.
            let room = (cap - produced + 1).min(INFLATE_CHUNK);
            let write_at = out.len();
            // Grow geometrically, but never past the cap (+1): that is the memory bound.
            let limit = start + cap + 1;
            if out.capacity() < write_at + room {
                let want = (out.capacity() * 2).clamp(write_at + room, limit.max(write_at + room));
                out.reserve_exact(want - out.len());
            }
            out.resize(write_at + room, 0);
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self.inflate.decompress(
                &body[consumed..],
                &mut out[write_at..],
                FlushDecompress::None,
            );
            let read = (self.inflate.total_in() - in_before) as usize;
            let wrote = (self.inflate.total_out() - out_before) as usize;
            out.truncate(write_at + wrote);
            consumed += read;
            match status {
                Err(e) => return Err(InflateError::Corrupt(e.to_string())),
                Ok(Status::StreamEnd) => {
                    if out.len() - start > cap {
                        return Err(InflateError::TooLarge { cap });
                    }
                    if consumed < body.len() {
                        return Err(InflateError::TrailingBytes {
                            extra: body.len() - consumed,
                        });
                    }
                    return Ok(());
                }
                Ok(_) if read == 0 && wrote == 0 => {
                    return Err(if consumed >= body.len() {
                        InflateError::Truncated
                    } else {
                        InflateError::Corrupt("inflate made no progress".into())
                    });
                }
                Ok(_) => {}
            }
        }
    }
}

impl std::fmt::Debug for BodyCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCompressor")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    /// Deterministic incompressible bytes (xorshift).
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).expect("in-memory write");
        e.finish().expect("in-memory finish")
    }

    #[test]
    fn round_trip_and_interop_with_standard_zlib() {
        let mut c = BodyCompressor::new(CompressConfig::default());
        for len in [1025, 4096, 100_000, 1 << 20] {
            let body = text(len);
            let mut wire = Vec::new();
            assert!(c.compress(&body, &mut wire), "len {len}");
            assert!(wire.len() < body.len());
            // A standard zlib decoder reads what we send...
            let mut plain = Vec::new();
            flate2::read::ZlibDecoder::new(&wire[..])
                .read_to_end(&mut plain)
                .expect("standard zlib stream");
            assert_eq!(plain, body);
            // ...and we read what a standard encoder sends, and our own output.
            let mut back = Vec::new();
            c.inflate(&zlib(&body), &mut back).expect("inflate");
            assert_eq!(back, body);
            back.clear();
            c.inflate(&wire, &mut back).expect("inflate own");
            assert_eq!(back, body);
        }
        let s = c.stats();
        assert_eq!((s.compressed, s.inflated, s.rejected_corrupt), (4, 8, 0));
        assert!(s.bytes_saved > 0);
    }

    #[test]
    fn output_is_appended_after_existing_bytes() {
        let mut c = BodyCompressor::new(CompressConfig::default());
        let body = text(5000);
        let mut wire = b"HDR".to_vec();
        assert!(c.compress(&body, &mut wire));
        assert_eq!(&wire[..3], b"HDR");
        let mut out = b"prefix".to_vec();
        c.inflate(&wire[3..], &mut out).expect("inflate");
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &body[..]);
    }

    #[test]
    fn threshold_is_exclusive_and_configurable() {
        let mut c = BodyCompressor::new(CompressConfig {
            threshold: 100,
            ..CompressConfig::default()
        });
        let mut out = Vec::new();
        assert!(!c.compress(&text(100), &mut out));
        assert!(out.is_empty());
        assert!(c.compress(&text(101), &mut out));
        assert!(!out.is_empty());
        let mut off = BodyCompressor::new(CompressConfig {
            threshold: usize::MAX,
            ..CompressConfig::default()
        });
        assert!(!off.compress(&text(1 << 16), &mut Vec::new()));
        assert_eq!(c.stats().below_threshold, 1);
        assert_eq!(c.stats().compressed, 1);
        assert_eq!(off.stats().below_threshold, 1);
    }

    #[test]
    fn incompressible_bodies_are_sent_plain_and_counted() {
        let mut c = BodyCompressor::new(CompressConfig::default());
        let mut out = vec![7u8];
        assert!(!c.compress(&noise(8192), &mut out));
        assert_eq!(out, vec![7u8]);
        assert_eq!(c.stats().not_smaller, 1);
        assert_eq!(c.stats().compressed, 0);
    }

    #[test]
    fn bomb_is_refused_with_bounded_memory() {
        // 64 MiB of zeros deflates to ≈ 64 KiB.
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).expect("in-memory write");
        }
        let bomb = e.finish().expect("in-memory finish");
        assert!(bomb.len() < 1 << 20);

        let cap = 1 << 20;
        let mut c = BodyCompressor::new(CompressConfig {
            max_inflated: cap,
            ..CompressConfig::default()
        });
        let mut out = Vec::new();
        let err = c.inflate(&bomb, &mut out).unwrap_err();
        assert_eq!(err, InflateError::TooLarge { cap });
        assert!(err.to_string().contains("cap of 1048576 bytes"), "{err}");
        assert!(out.is_empty());
        // The capacity reached while inflating is kept: it shows the peak allocation.
        assert!(out.capacity() <= cap + 1, "capacity {}", out.capacity());
        assert_eq!(c.stats().rejected_too_large, 1);
        // The compressor is still usable afterwards.
        let body = text(2000);
        c.inflate(&zlib(&body), &mut out).expect("next body");
        assert_eq!(out, body);
    }

    #[test]
    fn cap_is_exact() {
        let cap = 10_000;
        let mut c = BodyCompressor::new(CompressConfig {
            max_inflated: cap,
            ..CompressConfig::default()
        });
        let mut out = Vec::new();
        c.inflate(&zlib(&text(cap)), &mut out)
            .expect("exactly the cap");
        assert_eq!(out.len(), cap);
        out.clear();
        assert_eq!(
            c.inflate(&zlib(&text(cap + 1)), &mut out),
            Err(InflateError::TooLarge { cap })
        );
    }

    #[test]
    fn corrupt_truncated_and_trailing_streams_are_refused() {
        let mut c = BodyCompressor::new(CompressConfig::default());
        let good = zlib(&text(3000));
        let mut out = Vec::new();

        assert_eq!(
            c.inflate(&good[..good.len() - 5], &mut out),
            Err(InflateError::Truncated)
        );
        assert_eq!(c.inflate(&[], &mut out), Err(InflateError::Truncated));

        let mut trailing = good.clone();
        trailing.extend_from_slice(b"xyz");
        assert_eq!(
            c.inflate(&trailing, &mut out),
            Err(InflateError::TrailingBytes { extra: 3 })
        );

        assert!(matches!(
            c.inflate(b"not zlib at all", &mut out),
            Err(InflateError::Corrupt(_))
        ));
        let mut bad_sum = good.clone();
        let n = bad_sum.len();
        bad_sum[n - 1] ^= 0xff;
        assert!(matches!(
            c.inflate(&bad_sum, &mut out),
            Err(InflateError::Corrupt(_))
        ));
        assert!(out.is_empty());
        assert_eq!(c.stats().rejected_corrupt, 5);
        assert_eq!(c.stats().inflated, 0);
    }

    proptest::proptest! {
        #[test]
        fn any_body_round_trips(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096), rep in 1usize..4) {
            let body: Vec<u8> = body.iter().copied().cycle().take(body.len() * rep).collect();
            let mut c = BodyCompressor::new(CompressConfig { threshold: 0, ..CompressConfig::default() });
            let mut wire = Vec::new();
            if c.compress(&body, &mut wire) {
                let mut back = Vec::new();
                c.inflate(&wire, &mut back).expect("own output inflates");
                proptest::prop_assert_eq!(back, body);
            } else {
                proptest::prop_assert!(wire.is_empty());
            }
        }

        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut c = BodyCompressor::new(CompressConfig { max_inflated: 4096, ..CompressConfig::default() });
            let mut out = Vec::new();
            if c.inflate(&body, &mut out).is_err() {
                proptest::prop_assert!(out.is_empty());
            }
            proptest::prop_assert!(out.len() <= 4096);
        }
    }
}
