//! Lock-outs after repeated failed logins: per account (on the shard that owns it) and per IP
//! address (on the shard the address hashes to). A key is locked when `failures` failures fall
//! within `window_ms`; it stays locked for `lock_ms`.
//!
//! Memory is bounded: at most `max` keys, each holding at most `failures` timestamps. When the
//! table is full an entry that is not locked is dropped to make room (counted); a locked entry is
//! never dropped before its lock ends (that would lift the lock), so when every entry is locked a
//! failure of a new key is not remembered (counted too). [`Lockouts::purge`] removes entries with
//! nothing left to remember; call it periodically (cost O(entries)).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Settings of one lock-out table.
#[derive(Debug, Clone, Copy)]
pub struct LockRule {
    /// Failures within the window that lock.
    pub failures: usize,
    /// Window, ms.
    pub window_ms: u64,
    /// Lock duration, ms.
    pub lock_ms: u64,
    /// Most keys kept.
    pub max: usize,
}

#[derive(Debug, Default)]
struct Entry {
    /// Recent failure times (at most `failures`), oldest first.
    recent: VecDeque<u64>,
    locked_until: u64,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; not locked.
    Counted,
    /// This failure locked the key.
    Locked,
}

/// A lock-out table.
#[derive(Debug)]
pub struct Lockouts<K> {
    rule: LockRule,
    entries: HashMap<K, Entry>,
    /// Entries dropped because the table was full, since [`Lockouts::take_counts`].
    evicted: u64,
    /// Failures of new keys not remembered because every entry was locked, since
    /// [`Lockouts::take_counts`].
    untracked: u64,
}

impl<K: Hash + Eq + Clone> Lockouts<K> {
    /// An empty table.
    pub fn new(rule: LockRule) -> Self {
        Lockouts {
            rule,
            entries: HashMap::new(),
            evicted: 0,
            untracked: 0,
        }
    }

    /// Milliseconds left of `key`'s lock at `now`, if it is locked.
    pub fn locked<Q>(&self, key: &Q, now: u64) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|e| e.locked_until > now)
            .map(|e| e.locked_until - now)
    }

    /// Records a failure of `key` at `now`.
    pub fn failure(&mut self, key: &K, now: u64) -> Failure {
        if !self.entries.contains_key(key) && self.entries.len() >= self.rule.max {
            self.make_room(now);
            if self.entries.len() >= self.rule.max {
                self.untracked += 1;
                return Failure::Counted;
            }
        }
        let rule = self.rule;
        let e = self.entries.entry(key.clone()).or_default();
        while e.recent.front().is_some_and(|&t| t + rule.window_ms <= now) {
            e.recent.pop_front();
        }
        e.recent.push_back(now);
        if e.recent.len() > rule.failures {
            e.recent.pop_front();
        }
        if e.recent.len() >= rule.failures && e.locked_until <= now {
            e.locked_until = now + rule.lock_ms;
            e.recent.clear();
            return Failure::Locked;
        }
        Failure::Counted
    }

    /// A success clears `key`'s failures (not a running lock).
    pub fn success(&mut self, key: &K, now: u64) {
        if let Some(e) = self.entries.get(key) {
            if e.locked_until <= now {
                self.entries.remove(key);
            }
        }
    }

    /// Drops entries whose failures are all older than the window and whose lock is over.
    pub fn purge(&mut self, now: u64) {
        let w = self.rule.window_ms;
        self.entries
            .retain(|_, e| e.locked_until > now || e.recent.back().is_some_and(|&t| t + w > now));
    }

    /// Entries dropped for room and failures not remembered since the last call: `(evicted,
    /// untracked)`.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.evicted),
            std::mem::take(&mut self.untracked),
        )
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: u64) {
        self.purge(now);
        if self.entries.len() < self.rule.max {
            return;
        }
        let victim = self
            .entries
            .iter()
            .find(|(_, e)| e.locked_until <= now)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> LockRule {
        LockRule {
            failures: 5,
            window_ms: 60_000,
            lock_ms: 60_000,
            max: 4,
        }
    }

    #[test]
    fn five_failures_within_a_minute_lock_for_a_minute() {
        let mut l = Lockouts::new(rule());
        for i in 0..4 {
            assert_eq!(l.failure(&"a", i * 10_000), Failure::Counted);
        }
        assert_eq!(l.locked(&"a", 40_000), None);
        assert_eq!(l.failure(&"a", 40_000), Failure::Locked);
        assert_eq!(l.locked(&"a", 40_001), Some(59_999));
        assert_eq!(
            l.locked(&"a", 100_000),
            None,
            "the lock ends after a minute"
        );
        // Spread over more than a minute: never locked.
        let mut l = Lockouts::new(rule());
        for i in 0..20 {
            assert_eq!(l.failure(&"b", i * 16_000), Failure::Counted);
        }
    }

    #[test]
    fn success_clears_failures_but_not_a_lock() {
        let mut l = Lockouts::new(rule());
        for i in 0..4 {
            l.failure(&"a", i);
        }
        l.success(&"a", 5);
        assert_eq!(l.failure(&"a", 6), Failure::Counted, "count restarted");
        for i in 0..5 {
            l.failure(&"b", i);
        }
        l.success(&"b", 10);
        assert!(l.locked(&"b", 10).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_keeps_locked_entries() {
        let mut l = Lockouts::new(rule());
        for i in 0..5 {
            l.failure(&0u32, i);
        }
        for k in 1..100u32 {
            l.failure(&k, 10);
            assert!(l.len() <= 4);
        }
        assert!(
            l.locked(&0, 11).is_some(),
            "the locked key survived the flood"
        );
        assert_eq!(l.take_counts(), (96, 0));
        l.purge(1_000_000);
        assert!(l.is_empty());
    }

    #[test]
    fn a_table_full_of_locks_lifts_none_and_counts_the_new_keys_it_cannot_remember() {
        let mut l = Lockouts::new(rule());
        for k in 0..4u32 {
            for i in 0..5 {
                l.failure(&k, i);
            }
        }
        for k in 4..50u32 {
            for i in 0..5 {
                assert_eq!(l.failure(&k, 10 + i), Failure::Counted);
            }
        }
        for k in 0..4u32 {
            assert!(
                l.locked(&k, 20).is_some(),
                "lock of {k} lifted by the flood"
            );
        }
        assert_eq!(l.take_counts(), (0, 46 * 5));
        assert_eq!(l.take_counts(), (0, 0), "counts are taken once");
        // Once the locks end, new keys are remembered again.
        assert_eq!(l.failure(&99, 70_000), Failure::Counted);
        assert!(l.len() <= 4);
        assert_eq!(l.take_counts(), (0, 0));
    }
}
