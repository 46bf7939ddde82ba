//! Rate limit for warnings, per reason: a storm of one kind of protocol violation writes a few lines
//! and then one summary, instead of a line per session.
//!
//! Sans-IO: the caller passes the time in ms. One limiter per shard (no locks). Within a window of
//! `window_ms` starting at a reason's first warning, at most `burst` warnings of that reason are
//! let through; the rest are counted. When the window is over, the next check or
//! [`WarnLimiter::poll`] hands back the count so the caller logs one summary line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Distinct reasons tracked; further reasons share the last slot (`"other"`).
pub const MAX_REASONS: usize = 16;

static DEFAULT_BURST: AtomicU64 = AtomicU64::new(10);
static DEFAULT_WINDOW_MS: AtomicU64 = AtomicU64::new(10_000);

/// Sets what [`WarnLimiter::from_defaults`] uses (`log.warn_burst`, `log.warn_window_ms`); call
/// before the shards start.
pub fn set_defaults(burst: u32, window_ms: u64) {
    DEFAULT_BURST.store(u64::from(burst), Ordering::Relaxed);
    DEFAULT_WINDOW_MS.store(window_ms, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    reason: &'static str,
    start_ms: u64,
    emitted: u32,
    suppressed: u64,
}

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// Do not log it (counted for the next summary).
    Suppress,
}

/// A summary due: `suppressed` warnings of `reason` were not logged in the window that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The reason.
    pub reason: &'static str,
    /// Warnings not logged.
    pub suppressed: u64,
    /// The window's length, ms.
    pub window_ms: u64,
}

/// The per-reason limiter. Cost: a linear scan of at most [`MAX_REASONS`] slots per check.
#[derive(Debug)]
pub struct WarnLimiter {
    burst: u32,
    window_ms: u64,
    slots: Vec<Slot>,
    pending: bool,
}

impl WarnLimiter {
    /// At most `burst` warnings per reason per `window_ms` (`burst` 0 suppresses all and only
    /// summarises).
    pub fn new(burst: u32, window_ms: u64) -> Self {
        WarnLimiter {
            burst,
            window_ms: window_ms.max(1),
            slots: Vec::new(),
            pending: false,
        }
    }

    /// A limiter with the process's configured burst and window ([`set_defaults`]).
    pub fn from_defaults() -> Self {
        WarnLimiter::new(
            DEFAULT_BURST
                .load(Ordering::Relaxed)
                .min(u64::from(u32::MAX)) as u32,
            DEFAULT_WINDOW_MS.load(Ordering::Relaxed),
        )
    }

    /// Runs `log` (which writes the warning) unless `reason` is over its burst in this window; a
    /// summary of the window that just ended, if any, is logged first (`WARN`, naming `reason`).
    pub fn warn(&mut self, reason: &'static str, now_ms: u64, log: impl FnOnce()) {
        let (verdict, summary) = self.check(reason, now_ms);
        if let Some(s) = summary {
            tracing::warn!(
                reason = s.reason,
                suppressed = s.suppressed,
                window_ms = s.window_ms,
                "further warnings of this reason suppressed in the last window"
            );
        }
        if verdict == Verdict::Log {
            log();
        }
    }

    /// Logs the summary of every window with suppressed warnings, ended or not, as [`Self::warn`]
    /// logs one (at a stop: such a window would never end, and what it suppressed would be in no
    /// log line).
    pub fn flush(&mut self) {
        self.poll(u64::MAX, |s| {
            tracing::warn!(
                reason = s.reason,
                suppressed = s.suppressed,
                window_ms = s.window_ms,
                "further warnings of this reason suppressed in the last window"
            );
        });
    }

    /// Decides about one warning of `reason` at `now_ms`; a summary of the window that just ended,
    /// if any, comes back with it (log it before the warning).
    pub fn check(&mut self, reason: &'static str, now_ms: u64) -> (Verdict, Option<Summary>) {
        let window = self.window_ms;
        let i = match self.slots.iter().position(|s| s.reason == reason) {
            Some(i) => i,
            None if self.slots.len() < MAX_REASONS => {
                self.slots.push(Slot {
                    reason,
                    start_ms: now_ms,
                    emitted: 0,
                    suppressed: 0,
                });
                self.slots.len() - 1
            }
            None => {
                let last = MAX_REASONS - 1;
                self.slots[last].reason = "other";
                last
            }
        };
        let slot = &mut self.slots[i];
        let mut summary = None;
        if now_ms.saturating_sub(slot.start_ms) >= window {
            if slot.suppressed > 0 {
                summary = Some(Summary {
                    reason: slot.reason,
                    suppressed: slot.suppressed,
                    window_ms: window,
                });
            }
            slot.start_ms = now_ms;
            slot.emitted = 0;
            slot.suppressed = 0;
        }
        let verdict = if slot.emitted < self.burst {
            slot.emitted += 1;
            Verdict::Log
        } else {
            slot.suppressed += 1;
            self.pending = true;
            Verdict::Suppress
        };
        (verdict, summary)
    }

    /// When the next summary falls due (ms, the caller's clock), if warnings wait to be
    /// summarised: a parked loop should wake by then.
    pub fn next_due(&self) -> Option<u64> {
        if !self.pending {
            return None;
        }
        self.slots
            .iter()
            .filter(|s| s.suppressed > 0)
            .map(|s| s.start_ms + self.window_ms)
            .min()
    }

    /// Summaries of windows that ended by `now_ms` with suppressed warnings (call it now and then,
    /// e.g. once per loop pass: cheap while nothing is suppressed).
    pub fn poll(&mut self, now_ms: u64, mut out: impl FnMut(Summary)) {
        if !self.pending {
            return;
        }
        let mut still = false;
        for s in &mut self.slots {
            if s.suppressed == 0 {
                continue;
            }
            if now_ms.saturating_sub(s.start_ms) >= self.window_ms {
                out(Summary {
                    reason: s.reason,
                    suppressed: s.suppressed,
                    window_ms: self.window_ms,
                });
                s.suppressed = 0;
                s.emitted = 0;
                s.start_ms = now_ms;
            } else {
                still = true;
            }
        }
        self.pending = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_runs_the_log_only_within_the_burst() {
        let mut l = WarnLimiter::new(2, 1000);
        let mut logged = 0;
        for t in 0..10 {
            l.warn("x", t, || logged += 1);
        }
        assert_eq!(logged, 2);
        l.warn("y", 10, || logged += 1);
        assert_eq!(logged, 3, "another reason has its own burst");
        l.warn("x", 2000, || logged += 1);
        assert_eq!(logged, 4, "a new window");
    }

    #[test]
    fn a_storm_logs_burst_lines_then_one_summary() {
        let mut l = WarnLimiter::new(3, 1000);
        let mut logged = 0;
        for i in 0..2000u64 {
            let (v, s) = l.check("protocol_error", i / 4);
            assert_eq!(s, None, "window not over yet");
            logged += u32::from(v == Verdict::Log);
        }
        assert_eq!(logged, 3);
        let mut sums = Vec::new();
        assert_eq!(l.next_due(), Some(1000));
        l.poll(999, |s| sums.push(s));
        assert!(sums.is_empty());
        l.poll(1000, |s| sums.push(s));
        assert_eq!(
            sums,
            vec![Summary {
                reason: "protocol_error",
                suppressed: 1997,
                window_ms: 1000
            }]
        );
        assert_eq!(l.next_due(), None);
        l.poll(5000, |s| sums.push(s));
        assert_eq!(sums.len(), 1, "nothing suppressed since");
    }

    #[test]
    fn reasons_are_limited_separately_and_a_new_window_reports_the_old() {
        let mut l = WarnLimiter::new(1, 100);
        assert_eq!(l.check("a", 0).0, Verdict::Log);
        assert_eq!(l.check("a", 1).0, Verdict::Suppress);
        assert_eq!(l.check("b", 2).0, Verdict::Log);
        let (v, s) = l.check("a", 150);
        assert_eq!(v, Verdict::Log);
        assert_eq!(s.unwrap().suppressed, 1);
    }

    #[test]
    fn reason_slots_are_bounded() {
        let mut l = WarnLimiter::new(1, 100);
        const NAMES: [&str; 20] = [
            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15", "r16", "r17", "r18", "r19",
        ];
        for n in NAMES {
            l.check(n, 0);
        }
        assert_eq!(l.slots.len(), MAX_REASONS);
        assert_eq!(l.slots[MAX_REASONS - 1].reason, "other");
    }
}
