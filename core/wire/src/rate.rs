//! Rate limiting with GCRA (the generic cell rate algorithm): one `u64` of state per limited
//! quantity, no timer, no allocation.
//!
//! A limit allows `rate` units per second on average and bursts of up to `burst` units. GCRA keeps
//! only the "theoretical arrival time" (TAT) of the next unit: a request of `n` units at `now` is
//! allowed when `max(TAT, now) + n·T − now ≤ burst·T` (with `T = 1 s / rate`), and then moves TAT
//! there. It is the token bucket with the bucket's level stored as a time.

use std::time::Duration;

use crate::time::MonoTime;

/// One limit: `rate` units per second, bursts of `burst` units. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Nanoseconds per unit (`1 s / rate`), at least 1.
    interval_ns: u64,
    /// Units allowed at once from a full bucket, at least 1.
    burst: u64,
}

impl RateLimit {
    /// `rate` units per second with bursts of `burst` units; `None` when `rate` is 0 (no limit).
    /// `burst` is raised to at least 1; a rate above 10⁹/s is taken as 10⁹/s (1 ns per unit).
    pub fn per_second(rate: u64, burst: u64) -> Option<RateLimit> {
        if rate == 0 {
            return None;
        }
        Some(RateLimit {
            interval_ns: (1_000_000_000 / rate).max(1),
            burst: burst.max(1),
        })
    }

    /// The burst, in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The average rate, in units per second (rounded).
    pub fn rate(&self) -> u64 {
        1_000_000_000 / self.interval_ns
    }

    /// Time for the bucket to refill completely.
    pub fn refill(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.saturating_mul(self.burst))
    }
}

/// The state of one limited quantity (8 bytes): the theoretical arrival time of the next unit.
///
/// Starts full: the first `burst` units pass at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    tat: u64,
}

impl Gcra {
    /// Takes `units` at `now` if the limit allows them, else leaves the state unchanged and returns
    /// false. A request larger than the burst is charged as one full burst (so it passes when the
    /// bucket is full: a single frame larger than a byte burst is never refused forever).
    ///
    /// Cost: a few integer operations. A `now` behind an earlier one is treated as that earlier
    /// time (the state never moves back).
    pub fn allow(&mut self, limit: &RateLimit, now: MonoTime, units: u64) -> bool {
        let now = now.as_nanos();
        let units = units.clamp(1, limit.burst);
        let base = self.tat.max(now);
        let new_tat = base.saturating_add(units.saturating_mul(limit.interval_ns));
        let allowance = limit.burst.saturating_mul(limit.interval_ns);
        if new_tat - now > allowance {
            return false;
        }
        self.tat = new_tat;
        true
    }
}

/// What happens to a frame over a session limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePolicy {
    /// The frame is refused with `Error{RATE_LIMITED}`; the session stays open.
    Error,
    /// The frame is refused with `Error{RATE_LIMITED}` and counted; the session closes at the
    /// `close_after`-th such violation.
    Close,
}

/// A session's rate limits (`[limits]`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRates {
    /// Frames per second (every frame the peer sends counts one).
    pub msgs: Option<RateLimit>,
    /// What an excess frame under `msgs` gets.
    pub msgs_policy: RatePolicy,
    /// Bytes per second (a frame counts its whole length).
    pub bytes: Option<RateLimit>,
    /// What an excess frame under `bytes` gets.
    pub bytes_policy: RatePolicy,
    /// Violations of a `Close` limit after which the session closes (at least 1).
    pub close_after: u32,
}

impl SessionRates {
    /// No limit at all.
    pub const UNLIMITED: SessionRates = SessionRates {
        msgs: None,
        msgs_policy: RatePolicy::Error,
        bytes: None,
        bytes_policy: RatePolicy::Error,
        close_after: 1,
    };
}

/// Which limit refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The frames-per-second limit.
    Messages,
    /// The bytes-per-second limit.
    Bytes,
}

/// One session's limiter state: 16 bytes of GCRA plus a violation count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateState {
    msgs: Gcra,
    bytes: Gcra,
    /// Violations of limits whose policy is `Close`.
    pub(crate) close_violations: u32,
}

impl RateState {
    /// Charges one frame of `len` bytes. `Ok(())` when both limits allow it; otherwise which limit
    /// refused it and whether that limit's policy now closes the session. A refused frame charges
    /// neither limit.
    #[inline] // once per frame received; usually both limits are off or allow it
    pub(crate) fn check(
        &mut self,
        rates: &SessionRates,
        now: MonoTime,
        len: usize,
    ) -> Result<(), (Limited, bool)> {
        let (msgs_before, bytes_before) = (self.msgs, self.bytes);
        let refused = if rates.msgs.is_some_and(|l| !self.msgs.allow(&l, now, 1)) {
            Some((Limited::Messages, rates.msgs_policy))
        } else if rates
            .bytes
            .is_some_and(|l| !self.bytes.allow(&l, now, len as u64))
        {
            // The message allowance was taken above: give it back.
            self.msgs = msgs_before;
            Some((Limited::Bytes, rates.bytes_policy))
        } else {
            None
        };
        let Some((which, policy)) = refused else {
            return Ok(());
        };
        self.bytes = bytes_before;
        let close = match policy {
            RatePolicy::Error => false,
            RatePolicy::Close => {
                self.close_violations = self.close_violations.saturating_add(1);
                self.close_violations >= rates.close_after.max(1)
            }
        };
        Err((which, close))
    }

    /// Takes back what [`RateState::check`] counted toward `close_after` for a frame refused by
    /// `which` (a frame that must not count: an `Ack`, a duplicate).
    pub(crate) fn forgive(&mut self, rates: &SessionRates, which: Limited) {
        let policy = match which {
            Limited::Messages => rates.msgs_policy,
            Limited::Bytes => rates.bytes_policy,
        };
        if policy == RatePolicy::Close {
            self.close_violations = self.close_violations.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// The reference: a token bucket in floating point, refilled continuously.
    struct Bucket {
        level: f64,
        cap: f64,
        rate: f64,
        last: f64,
    }

    impl Bucket {
        fn allow(&mut self, now_ns: u64, n: f64) -> bool {
            let t = now_ns as f64 / 1e9;
            self.level = (self.level + (t - self.last) * self.rate).min(self.cap);
            self.last = t;
            let n = n.min(self.cap);
            if self.level + 1e-9 >= n {
                self.level -= n;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let l = RateLimit::per_second(100, 10).unwrap();
        let mut g = Gcra::default();
        let t0 = MonoTime(1_000 * MS);
        let passed = (0..20).filter(|_| g.allow(&l, t0, 1)).count();
        assert_eq!(passed, 10, "a full bucket passes exactly the burst");
        assert!(!g.allow(&l, MonoTime(t0.0 + 9 * MS), 1), "not yet refilled");
        assert!(
            g.allow(&l, MonoTime(t0.0 + 10 * MS), 1),
            "one unit per 10 ms"
        );
        assert!(!g.allow(&l, MonoTime(t0.0 + 10 * MS), 1));
        // A long pause refills to the burst, never beyond.
        let later = MonoTime(t0.0 + 10_000 * MS);
        assert_eq!((0..50).filter(|_| g.allow(&l, later, 1)).count(), 10);
    }

    #[test]
    fn oversize_requests_pass_from_a_full_bucket_and_time_never_goes_back() {
        let l = RateLimit::per_second(1000, 100).unwrap();
        let mut g = Gcra::default();
        assert!(g.allow(&l, MonoTime(5 * MS), 5000), "charged as one burst");
        assert!(!g.allow(&l, MonoTime(5 * MS), 1));
        let saved = g;
        assert!(
            !g.allow(&l, MonoTime(0), 1),
            "a clock behind is not a refill"
        );
        assert_eq!(g, saved, "a refused request changes nothing");
        assert!(RateLimit::per_second(0, 5).is_none(), "rate 0 = no limit");
    }

    #[test]
    fn agrees_with_a_token_bucket_on_random_schedules() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let rate = 1 + rnd(2000);
            let burst = 1 + rnd(50);
            let l = RateLimit::per_second(rate, burst).unwrap();
            let mut g = Gcra::default();
            let interval = l.interval_ns as f64 / 1e9;
            let mut b = Bucket {
                level: burst as f64,
                cap: burst as f64,
                rate: 1.0 / interval,
                last: 0.0,
            };
            let mut now = 0u64;
            for _ in 0..300 {
                now += rnd(3 * l.interval_ns);
                let n = 1 + rnd(3);
                let (a, e) = (g.allow(&l, MonoTime(now), n), b.allow(now, n as f64));
                assert_eq!(a, e, "rate {rate} burst {burst} at {now} ns, {n} units");
            }
        }
    }

    #[test]
    fn session_policies_count_and_close() {
        let rates = SessionRates {
            msgs: RateLimit::per_second(10, 2),
            msgs_policy: RatePolicy::Close,
            bytes: RateLimit::per_second(1000, 100),
            bytes_policy: RatePolicy::Error,
            close_after: 2,
        };
        let mut s = RateState::default();
        let t = MonoTime(MS);
        assert_eq!(s.check(&rates, t, 10), Ok(()));
        assert_eq!(s.check(&rates, t, 10), Ok(()));
        assert_eq!(s.check(&rates, t, 10), Err((Limited::Messages, false)));
        assert_eq!(s.check(&rates, t, 10), Err((Limited::Messages, true)));
        // Bytes refuse without closing; the message unit is not spent by a refused frame.
        let mut s = RateState::default();
        assert_eq!(s.check(&rates, t, 100), Ok(()));
        assert_eq!(s.check(&rates, t, 1), Err((Limited::Bytes, false)));
        assert_eq!(s.check(&rates, MonoTime(MS + 2 * MS), 1), Ok(()));
        assert_eq!(s.close_violations, 0);
    }
}
