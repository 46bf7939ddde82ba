//! Deduplication and rate limit of alerts (sans-IO: the caller passes the time in ms).
//!
//! An alert has a key (`"handler_panics"`, `"shard_stalled:1"`, …). The same key is sent at most
//! once per `dedup_ms`; repeats in between are counted and the next one sent says how many were
//! folded into it. Across all keys at most `per_minute` alerts are sent in any rolling minute;
//! the rest are dropped and counted. Keys tracked are bounded ([`MAX_KEYS`]; the oldest is
//! forgotten).

use std::collections::VecDeque;

/// Keys remembered for deduplication.
pub const MAX_KEYS: usize = 256;

/// What to do with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it; `folded` repeats of its key were suppressed since the last one sent.
    Send {
        /// Repeats suppressed since the key was last sent.
        folded: u64,
    },
    /// A repeat within the dedup window.
    Duplicate,
    /// Over the per-minute limit.
    RateLimited,
}

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    dedup_ms: u64,
    per_minute: usize,
    /// (key, last sent ms, repeats since).
    keys: VecDeque<(String, u64, u64)>,
    sent: VecDeque<u64>,
}

impl Limiter {
    /// A limiter with a dedup window and a per-minute cap.
    pub fn new(dedup_ms: u64, per_minute: usize) -> Limiter {
        Limiter {
            dedup_ms,
            per_minute,
            keys: VecDeque::new(),
            sent: VecDeque::new(),
        }
    }

    /// Decides about an alert with `key` at `now_ms`.
    pub fn decide(&mut self, key: &str, now_ms: u64) -> Decision {
        let entry = self.keys.iter().position(|k| k.0 == key);
        if let Some(i) = entry {
            let (_, last, _) = self.keys[i];
            if now_ms.saturating_sub(last) < self.dedup_ms {
                self.keys[i].2 += 1;
                return Decision::Duplicate;
            }
        }
        while self
            .sent
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= 60_000)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_minute {
            return Decision::RateLimited;
        }
        self.sent.push_back(now_ms);
        let folded = match entry {
            Some(i) => {
                let f = self.keys[i].2;
                self.keys[i].1 = now_ms;
                self.keys[i].2 = 0;
                f
            }
            None => {
                if self.keys.len() >= MAX_KEYS {
                    self.keys.pop_front();
                }
                self.keys.push_back((key.to_string(), now_ms, 0));
                0
            }
        };
        Decision::Send { folded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_folded_into_the_next_send() {
        let mut l = Limiter::new(1000, 100);
        assert_eq!(l.decide("a", 0), Decision::Send { folded: 0 });
        assert_eq!(l.decide("a", 10), Decision::Duplicate);
        assert_eq!(l.decide("a", 999), Decision::Duplicate);
        assert_eq!(l.decide("b", 999), Decision::Send { folded: 0 });
        assert_eq!(l.decide("a", 1000), Decision::Send { folded: 2 });
        assert_eq!(l.decide("a", 1500), Decision::Duplicate);
    }

    #[test]
    fn at_most_per_minute_in_a_rolling_minute() {
        let mut l = Limiter::new(0, 3);
        for i in 0..3 {
            assert!(matches!(
                l.decide(&format!("k{i}"), i),
                Decision::Send { .. }
            ));
        }
        assert_eq!(l.decide("k9", 100), Decision::RateLimited);
        assert!(matches!(l.decide("k9", 60_000), Decision::Send { .. }));
    }

    #[test]
    fn keys_are_bounded() {
        let mut l = Limiter::new(1_000_000, usize::MAX);
        for i in 0..(MAX_KEYS + 10) {
            l.decide(&format!("k{i}"), 0);
        }
        assert_eq!(l.keys.len(), MAX_KEYS);
        // The oldest key was forgotten: it is sent again.
        assert!(matches!(l.decide("k0", 1), Decision::Send { .. }));
    }
}
