//! The per-address limit on new connections: one GCRA state per source address, in a table of
//! bounded size that evicts when full.
//!
//! Owned by one acceptor thread (no lock). An entry whose bucket has refilled carries no
//! information, so a sweep drops those first; when the table is still full (many addresses
//! connecting within one refill period: an attack or a large NAT), arbitrary entries are dropped
//! down to 7/8 of the capacity, so eviction costs O(1) amortised per insert. An evicted address
//! starts again with a full burst; evictions are counted.

use std::collections::HashMap;
use std::net::IpAddr;

use lattice_wire::rate::{Gcra, RateLimit};
use lattice_wire::MonoTime;

/// What [`IpLimiter::allow`] decided, with what it cost the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpCheck {
    /// The connection is within the address's rate.
    pub allowed: bool,
    /// Entries evicted to make room for this address.
    pub evicted: usize,
}

/// Per-address connection rate table. See the module documentation.
#[derive(Debug)]
pub struct IpLimiter {
    limit: Option<RateLimit>,
    capacity: usize,
    table: HashMap<IpAddr, Gcra>,
}

impl IpLimiter {
    /// A table of at most `capacity` addresses (at least 1) limiting each to `limit`
    /// (`None` = no limit: every check passes and nothing is stored).
    pub fn new(limit: Option<RateLimit>, capacity: usize) -> IpLimiter {
        IpLimiter {
            limit,
            capacity: capacity.max(1),
            table: HashMap::new(),
        }
    }

    /// Replaces the limit and the capacity (a live reload); entries are kept (trimmed at the next
    /// insert when the table shrank).
    pub fn reconfigure(&mut self, limit: Option<RateLimit>, capacity: usize) {
        self.limit = limit;
        self.capacity = capacity.max(1);
        if limit.is_none() {
            self.table = HashMap::new();
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Charges one new connection from `ip` at `now`.
    ///
    /// Cost: one hash lookup; when a new address finds the table full, a sweep (amortised O(1)).
    pub fn allow(&mut self, ip: IpAddr, now: MonoTime) -> IpCheck {
        let Some(limit) = self.limit else {
            return IpCheck {
                allowed: true,
                evicted: 0,
            };
        };
        let mut evicted = 0;
        if !self.table.contains_key(&ip) && self.table.len() >= self.capacity {
            evicted = self.make_room(&limit, now);
        }
        let allowed = self.table.entry(ip).or_default().allow(&limit, now, 1);
        IpCheck { allowed, evicted }
    }

    fn make_room(&mut self, limit: &RateLimit, now: MonoTime) -> usize {
        let before = self.table.len();
        // A bucket that would take a whole burst again is as good as a fresh entry.
        self.table.retain(|_, g| {
            let mut probe = *g;
            !probe.allow(limit, now, limit.burst())
        });
        let target = self.capacity - self.capacity / 8;
        if self.table.len() >= self.capacity {
            let excess = self.table.len() + 1 - target.max(1);
            let victims: Vec<IpAddr> = self.table.keys().take(excess).copied().collect();
            for v in victims {
                self.table.remove(&v);
            }
        }
        debug_assert!(self.table.len() < self.capacity);
        before - self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(i))
    }

    #[test]
    fn limits_each_address_separately() {
        let mut l = IpLimiter::new(RateLimit::per_second(10, 3), 100);
        let t = MonoTime(1000 * MS);
        let a: Vec<bool> = (0..5).map(|_| l.allow(ip(1), t).allowed).collect();
        assert_eq!(a, [true, true, true, false, false]);
        assert!(
            l.allow(ip(2), t).allowed,
            "another address has its own bucket"
        );
        assert!(
            l.allow(ip(1), MonoTime(1000 * MS + 100 * MS)).allowed,
            "refilled by one"
        );
        let mut open = IpLimiter::new(None, 1);
        assert!((0..100).all(|_| open.allow(ip(1), t).allowed));
        assert!(open.is_empty(), "no limit stores nothing");
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_idle_entries_first() {
        let mut l = IpLimiter::new(RateLimit::per_second(1, 2), 64);
        let t = MonoTime(1000 * MS);
        // Address 0 is busy (bucket drained); the others connect once.
        l.allow(ip(0), t);
        l.allow(ip(0), t);
        let mut evicted = 0;
        for i in 1..1000 {
            let c = l.allow(ip(i), t);
            assert!(c.allowed);
            evicted += c.evicted;
            assert!(l.len() <= 64);
        }
        assert!(evicted >= 1000 - 64, "{evicted}");
        // Three seconds on, every bucket is full again: a sweep empties the table of them.
        let later = MonoTime(4000 * MS);
        l.allow(ip(5000), later);
        let c = l.allow(ip(5001), later);
        assert_eq!(c.evicted, 0, "room was made by the sweep before");
        assert!(l.len() <= 64);
    }
}
