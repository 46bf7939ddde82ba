//! The conditions that raise alerts, checked by the watcher thread from counters the shards and
//! the storage engine publish (sans-IO: observations and the time go in, alerts come out).
//!
//! - handler panics: at least `panics_per_minute` more in the last minute;
//! - a shard stalled: no loop pass for `stall_ms` (an idle shard passes every 500 ms, so it is
//!   stuck in a callback), and its recovery when passes resume;
//! - storage outage: failed idle pings or failed statements since the last check;
//! - dump file written: records appended to the dump file since the last check.

use std::collections::VecDeque;

/// One look at the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Handler panics caught, all shards.
    pub handler_panics: u64,
    /// Loop passes per shard.
    pub passes: Vec<u64>,
    /// The storage engine's counters, when it runs.
    pub storage: Option<StorageObs>,
}

/// The storage counters the watcher reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageObs {
    /// Failed idle pings.
    pub ping_failures: u64,
    /// Failed statements.
    pub statement_errors: u64,
    /// Records appended to the dump file.
    pub dumps: u64,
    /// Records waiting in the dump file.
    pub dump_pending: u64,
}

/// An alert: a key for deduplication and a text for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable key (`handler_panics`, `shard_stalled:1`, …).
    pub key: String,
    /// The message.
    pub text: String,
}

/// Thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Handler panics per rolling minute that raise an alert (0 = off).
    pub panics_per_minute: u64,
    /// A shard that makes no pass this long is stalled, ms (0 = off; must exceed the 500 ms idle
    /// pass).
    pub stall_ms: u64,
}

/// The watcher's memory between observations.
#[derive(Debug)]
pub struct Watch {
    t: Thresholds,
    /// (ms, panics total) over the last minute.
    panics: VecDeque<(u64, u64)>,
    /// The panics total at the last look: the alert is raised only when it grew (a burst that
    /// stays inside the rolling minute is not raised again at every check).
    panics_seen: u64,
    /// Per shard: (passes, since ms, alerted).
    stall: Vec<(u64, u64, bool)>,
    storage: Option<StorageObs>,
}

impl Watch {
    /// A watcher with thresholds `t`.
    pub fn new(t: Thresholds) -> Watch {
        Watch {
            t,
            panics: VecDeque::new(),
            panics_seen: 0,
            stall: Vec::new(),
            storage: None,
        }
    }

    /// Compares `o` at `now_ms` with what was seen before.
    pub fn observe(&mut self, now_ms: u64, o: &Observation) -> Vec<Alert> {
        let mut out = Vec::new();
        if self.t.panics_per_minute > 0 {
            // Counters start at zero with the process, which started just before the watcher:
            // panics before the first look count as new.
            if self.panics.is_empty() {
                self.panics.push_back((now_ms, 0));
            }
            self.panics.push_back((now_ms, o.handler_panics));
            while self
                .panics
                .front()
                .is_some_and(|&(t, _)| now_ms.saturating_sub(t) > 60_000)
            {
                self.panics.pop_front();
            }
            let base = self.panics.front().map(|p| p.1).unwrap_or(o.handler_panics);
            let n = o.handler_panics.saturating_sub(base);
            let new = o.handler_panics > self.panics_seen;
            self.panics_seen = o.handler_panics;
            if new && n >= self.t.panics_per_minute {
                out.push(Alert {
                    key: "handler_panics".into(),
                    text: format!(
                        "{n} handler panics in the last minute (threshold {}): requests answered INTERNAL; see the log for the panicking component",
                        self.t.panics_per_minute
                    ),
                });
            }
        }
        if self.t.stall_ms > 0 {
            self.stall.resize(o.passes.len(), (0, now_ms, false));
            for (i, &p) in o.passes.iter().enumerate() {
                let s = &mut self.stall[i];
                if p != s.0 {
                    if s.2 {
                        out.push(Alert {
                            key: format!("shard_recovered:{i}"),
                            text: format!("shard {i} makes progress again"),
                        });
                    }
                    *s = (p, now_ms, false);
                } else if !s.2 && now_ms.saturating_sub(s.1) >= self.t.stall_ms {
                    s.2 = true;
                    out.push(Alert {
                        key: format!("shard_stalled:{i}"),
                        text: format!(
                            "shard {i} made no progress for {} ms (stuck in a handler or callback); its sessions get no answers",
                            now_ms.saturating_sub(s.1)
                        ),
                    });
                }
            }
        }
        if let Some(now) = o.storage {
            if let Some(before) = self.storage {
                let pings = now.ping_failures.saturating_sub(before.ping_failures);
                let errors = now.statement_errors.saturating_sub(before.statement_errors);
                if pings + errors > 0 {
                    out.push(Alert {
                        key: "storage_outage".into(),
                        text: format!(
                            "storage failing: {pings} failed pings and {errors} failed statements since the last check; writes are retried, then dumped to the dump file"
                        ),
                    });
                }
                let dumps = now.dumps.saturating_sub(before.dumps);
                if dumps > 0 {
                    out.push(Alert {
                        key: "dump_written".into(),
                        text: format!(
                            "{dumps} records written to the dump file ({} waiting for replay): the database refused them",
                            now.dump_pending
                        ),
                    });
                }
            }
            self.storage = Some(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            panics_per_minute: 3,
            stall_ms: 1000,
        }
    }

    fn obs(panics: u64, passes: &[u64]) -> Observation {
        Observation {
            handler_panics: panics,
            passes: passes.to_vec(),
            storage: None,
        }
    }

    #[test]
    fn panic_rate_counts_the_last_minute_only() {
        let mut w = Watch::new(t());
        assert!(w.observe(0, &obs(0, &[])).is_empty());
        assert!(w.observe(1000, &obs(2, &[])).is_empty());
        let a = w.observe(2000, &obs(3, &[]));
        assert_eq!(a[0].key, "handler_panics");
        assert!(a[0].text.starts_with("3 handler panics"));
        // No new panic: not raised again while the burst stays in the minute (it was raised at
        // every check, and counted as a repeat each time).
        assert!(w.observe(3000, &obs(3, &[])).is_empty());
        assert!(w.observe(4000, &obs(3, &[])).is_empty());
        let a = w.observe(5000, &obs(4, &[]));
        assert!(a[0].text.starts_with("4 handler panics"), "{a:?}");
        // A minute later the burst has left the window.
        assert!(w.observe(70_000, &obs(3, &[])).is_empty());
        // Panics before the watcher's first look (the process had just started) count.
        let mut w = Watch::new(t());
        assert_eq!(w.observe(5, &obs(4, &[]))[0].key, "handler_panics");
    }

    #[test]
    fn a_stuck_shard_alerts_once_and_recovers() {
        let mut w = Watch::new(t());
        assert!(w.observe(0, &obs(0, &[5, 9])).is_empty());
        assert!(w.observe(999, &obs(0, &[5, 10])).is_empty());
        let a = w.observe(1000, &obs(0, &[5, 11]));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].key, "shard_stalled:0");
        assert!(w.observe(5000, &obs(0, &[5, 12])).is_empty(), "once");
        let a = w.observe(6000, &obs(0, &[6, 13]));
        assert_eq!(a[0].key, "shard_recovered:0");
    }

    #[test]
    fn storage_failures_and_dumps_since_the_last_check() {
        let mut w = Watch::new(t());
        let mut o = obs(0, &[]);
        o.storage = Some(StorageObs::default());
        assert!(w.observe(0, &o).is_empty());
        o.storage = Some(StorageObs {
            ping_failures: 2,
            statement_errors: 1,
            dumps: 4,
            dump_pending: 4,
        });
        let keys: Vec<String> = w.observe(1, &o).into_iter().map(|a| a.key).collect();
        assert_eq!(keys, vec!["storage_outage", "dump_written"]);
        assert!(w.observe(2, &o).is_empty(), "nothing new");
    }
}
