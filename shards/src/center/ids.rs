//! Unique 64-bit ids, snowflake style, issued by each shard on its own: no lock, no atomic on the
//! way of an id.
//!
//! Layout (63 bits, so an id is a positive `BIGINT` and fits a signed 64-bit column):
//!
//! ```text
//!  62                      22 21      15 14     7 6     0
//! ┌──────────────────────────┬──────────┬────────┬───────┐
//! │ ms since 2025-01-01 (41) │ machine 7│ shard 8│ seq 7 │
//! └──────────────────────────┴──────────┴────────┴───────┘
//! ```
//!
//! 41 bits of milliseconds last until 2094; 128 machine ids, 256 shards, 128 ids per millisecond
//! per shard in real time. When the sequence of a millisecond runs out the generator *borrows* the
//! next millisecond (stamps ids a little ahead of the clock), so bursts go on at full speed; how
//! far ahead it may go is bounded by the lease's reservation ([`IdGen`]'s ceiling): an id is never
//! stamped later than the last timestamp the center confirmed in storage, so a restarted node
//! (which starts above that timestamp) can never issue an id twice. Ids from one shard increase
//! strictly; ids of different shards or machines differ in their shard or machine bits.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The id epoch: 2025-01-01T00:00:00Z in Unix ms.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
/// Bits of the timestamp.
pub const TIME_BITS: u32 = 41;
/// Bits of the machine id.
pub const MACHINE_BITS: u32 = 7;
/// Bits of the shard index.
pub const SHARD_BITS: u32 = 8;
/// Bits of the per-millisecond sequence.
pub const SEQ_BITS: u32 = 7;
/// Largest machine id.
pub const MAX_MACHINE: u32 = (1 << MACHINE_BITS) - 1;
/// Largest shard index an id can carry.
pub const MAX_SHARD: u32 = (1 << SHARD_BITS) - 1;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
const SHARD_SHIFT: u32 = SEQ_BITS;
const MACHINE_SHIFT: u32 = SEQ_BITS + SHARD_BITS;
const TIME_SHIFT: u32 = SEQ_BITS + SHARD_BITS + MACHINE_BITS;
/// The last Unix ms an id can carry.
pub const MAX_MS: u64 = EPOCH_MS + (1 << TIME_BITS) - 1;

/// A unique id. `Display` reads `id 123 (2026-…ms, machine 3, shard 1, seq 0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(u64);

impl Id {
    /// Packs the parts (each masked to its width).
    pub fn new(unix_ms: u64, machine: u32, shard: u32, seq: u32) -> Id {
        let t = unix_ms.saturating_sub(EPOCH_MS) & ((1 << TIME_BITS) - 1);
        Id((t << TIME_SHIFT)
            | ((u64::from(machine) & u64::from(MAX_MACHINE)) << MACHINE_SHIFT)
            | ((u64::from(shard) & u64::from(MAX_SHARD)) << SHARD_SHIFT)
            | (u64::from(seq) & MAX_SEQ))
    }

    /// The raw value (always below 2^63).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from its raw value.
    pub fn from_u64(v: u64) -> Id {
        Id(v)
    }

    /// The timestamp, Unix ms.
    pub fn unix_ms(self) -> u64 {
        (self.0 >> TIME_SHIFT) + EPOCH_MS
    }

    /// The machine id.
    pub fn machine(self) -> u32 {
        ((self.0 >> MACHINE_SHIFT) & u64::from(MAX_MACHINE)) as u32
    }

    /// The shard index.
    pub fn shard(self) -> u32 {
        ((self.0 >> SHARD_SHIFT) & u64::from(MAX_SHARD)) as u32
    }

    /// The sequence within its millisecond.
    pub fn seq(self) -> u32 {
        (self.0 & MAX_SEQ) as u32
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id {} ({} ms, machine {}, shard {}, seq {})",
            self.0,
            self.unix_ms(),
            self.machine(),
            self.shard(),
            self.seq()
        )
    }
}

/// Why no id was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id would carry a timestamp past the last one the center confirmed (renewals failing,
    /// the lease lost, or a burst that borrowed the whole reservation). Retry later.
    #[error("machine-id lease unconfirmed up to {want_ms} ms (confirmed up to {ceiling_ms})")]
    LeaseUnconfirmed {
        /// The timestamp the id would have carried.
        want_ms: u64,
        /// The last confirmed timestamp (0: none, or the lease is lost).
        ceiling_ms: u64,
    },
}

/// The center's state that shards read: the machine id and how far ids may be stamped. Written by
/// the center's renewal thread, read by a shard only when an id would pass its cached ceiling
/// (once per renewal, not per id).
#[derive(Debug)]
pub struct IdLease {
    machine_id: u32,
    /// Last confirmed reservation, Unix ms; 0 once the lease is lost.
    ceiling_ms: AtomicU64,
    /// Largest timestamp each shard issued, reported when it stops (`u64::MAX`: not reported).
    reported: Vec<AtomicU64>,
}

impl IdLease {
    /// A lease on `machine_id` for `shards` shards, nothing confirmed yet.
    pub fn new(machine_id: u32, shards: usize) -> IdLease {
        IdLease {
            machine_id,
            ceiling_ms: AtomicU64::new(0),
            reported: (0..shards).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    /// The leased machine id.
    pub fn machine_id(&self) -> u32 {
        self.machine_id
    }

    /// Raises the confirmed ceiling (never lowers it, except [`IdLease::revoke`]).
    pub fn confirm(&self, ceiling_ms: u64) {
        self.ceiling_ms.fetch_max(ceiling_ms, Ordering::AcqRel);
    }

    /// The lease is lost: no more ids from any shard.
    pub fn revoke(&self) {
        self.ceiling_ms.store(0, Ordering::Release);
    }

    /// The confirmed ceiling, Unix ms (0: none).
    pub fn ceiling_ms(&self) -> u64 {
        self.ceiling_ms.load(Ordering::Acquire)
    }

    /// A shard reports the largest timestamp it issued (when it stops).
    pub fn report(&self, shard: usize, last_ms: u64) {
        if let Some(r) = self.reported.get(shard) {
            r.store(last_ms, Ordering::Release);
        }
    }

    /// The largest timestamp issued, when every shard reported; `None` otherwise.
    pub fn issued_high_water(&self) -> Option<u64> {
        let mut max = 0;
        for r in &self.reported {
            let v = r.load(Ordering::Acquire);
            if v == u64::MAX {
                return None;
            }
            max = max.max(v);
        }
        Some(max)
    }
}

/// One shard's id generator. Cost of [`IdGen::next`]: a compare, an increment and a few shifts;
/// one atomic load when the cached ceiling is passed (once per lease renewal).
#[derive(Debug)]
pub struct IdGen {
    machine: u32,
    shard: u32,
    /// Timestamp of the last id, Unix ms.
    last_ms: u64,
    seq: u64,
    /// Cached confirmed ceiling.
    ceiling_ms: u64,
    lease: Option<Arc<IdLease>>,
    /// Ids issued.
    pub issued: u64,
    /// Ids stamped with a borrowed (future) millisecond.
    pub borrowed: u64,
    /// Requests refused (lease unconfirmed).
    pub refused: u64,
}

impl IdGen {
    /// A generator for `shard` under `lease`, whose first id is stamped after `floor_ms` (the
    /// persisted last timestamp of the machine id).
    pub fn new(lease: Arc<IdLease>, shard: usize, floor_ms: u64) -> IdGen {
        let mut g = IdGen::with_ceiling(lease.machine_id(), shard, floor_ms, 0);
        g.lease = Some(lease);
        g
    }

    /// A generator with a fixed ceiling and no lease (benchmarks, tests).
    pub fn with_ceiling(machine: u32, shard: usize, floor_ms: u64, ceiling_ms: u64) -> IdGen {
        IdGen {
            machine,
            shard: u32::try_from(shard).unwrap_or(u32::MAX),
            last_ms: floor_ms,
            // The floor's millisecond may have been used up: the first id goes strictly above it.
            seq: MAX_SEQ,
            ceiling_ms,
            lease: None,
            issued: 0,
            borrowed: 0,
            refused: 0,
        }
    }

    /// A generator that never issues (no lease): for hosts built without a center.
    pub fn none(shard: usize) -> IdGen {
        IdGen::with_ceiling(0, shard, 0, 0)
    }

    /// Reports the last timestamp to the lease as `shard`'s final one (call when the shard stops).
    pub fn report_stop(&self, shard: usize) {
        if let Some(l) = &self.lease {
            l.report(shard, self.last_ms);
        }
    }

    /// The timestamp of the last id issued (or the floor), Unix ms.
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// The next id at wall time `now_ms`. Strictly greater than every id this generator issued
    /// before, whatever `now_ms` does (a clock that steps back is ignored). Fails with
    /// [`IdError::LeaseUnconfirmed`] when the id would be stamped past the confirmed ceiling.
    #[inline]
    pub fn next(&mut self, now_ms: u64) -> Result<Id, IdError> {
        let (ts, seq) = if now_ms > self.last_ms {
            (now_ms, 0)
        } else if self.seq < MAX_SEQ {
            (self.last_ms, self.seq + 1)
        } else {
            (self.last_ms + 1, 0)
        };
        if ts > self.ceiling_ms && !self.refresh(ts) {
            self.refused += 1;
            return Err(IdError::LeaseUnconfirmed {
                want_ms: ts,
                ceiling_ms: self.ceiling_ms,
            });
        }
        if ts > now_ms {
            self.borrowed += 1;
        }
        self.last_ms = ts;
        self.seq = seq;
        self.issued += 1;
        Ok(Id::new(ts, self.machine, self.shard, seq as u32))
    }

    #[cold]
    fn refresh(&mut self, ts: u64) -> bool {
        if let Some(l) = &self.lease {
            self.ceiling_ms = l.ceiling_ms().min(MAX_MS);
        }
        ts <= self.ceiling_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const T0: u64 = EPOCH_MS + 1_000_000_000;

    #[test]
    fn layout_round_trips_and_stays_positive() {
        let id = Id::new(MAX_MS, MAX_MACHINE, MAX_SHARD, 127);
        assert!(id.as_u64() < 1 << 63);
        assert_eq!(
            (id.unix_ms(), id.machine(), id.shard(), id.seq()),
            (MAX_MS, 127, 255, 127)
        );
        let id = Id::new(T0, 3, 17, 5);
        assert_eq!(
            (id.unix_ms(), id.machine(), id.shard(), id.seq()),
            (T0, 3, 17, 5)
        );
        assert!(id.to_string().contains("machine 3, shard 17, seq 5"));
        assert_eq!(TIME_BITS + MACHINE_BITS + SHARD_BITS + SEQ_BITS, 63);
    }

    #[test]
    fn ids_increase_and_borrow_when_the_sequence_runs_out() {
        let mut g = IdGen::with_ceiling(1, 2, T0, T0 + 10);
        let mut prev = 0;
        // 5 ms worth of ids at a frozen clock: 128 per ms, then borrowed milliseconds.
        for i in 0..(128 * 5) {
            let id = g.next(T0).unwrap();
            assert!(id.as_u64() > prev, "id {i} not increasing");
            prev = id.as_u64();
            assert_eq!((id.machine(), id.shard()), (1, 2));
        }
        assert_eq!(
            g.last_ms(),
            T0 + 5,
            "first id goes above the floor; 5 ms used"
        );
        assert_eq!(g.borrowed, 128 * 5);
        // The clock catches up: no borrowing.
        let id = g.next(T0 + 9).unwrap();
        assert_eq!((id.unix_ms(), id.seq()), (T0 + 9, 0));
    }

    #[test]
    fn a_clock_stepped_back_never_repeats_an_id() {
        let mut g = IdGen::with_ceiling(0, 0, 0, T0 + 1000);
        let mut seen = HashSet::new();
        for now in [T0, T0 + 5, T0 + 2, T0 - 500, T0 + 5, T0 + 6] {
            for _ in 0..200 {
                assert!(
                    seen.insert(g.next(now).unwrap()),
                    "duplicate at clock {now}"
                );
            }
        }
        assert!(g.last_ms() >= T0 + 6);
    }

    #[test]
    fn nothing_past_the_ceiling_and_a_lapsed_lease_stops_ids() {
        let lease = Arc::new(IdLease::new(9, 1));
        let mut g = IdGen::new(lease.clone(), 0, T0);
        // Nothing confirmed yet.
        assert!(matches!(
            g.next(T0 + 1),
            Err(IdError::LeaseUnconfirmed { .. })
        ));
        lease.confirm(T0 + 2);
        assert_eq!(g.next(T0 + 1).unwrap().machine(), 9);
        // The renewals stop: ids go on up to the ceiling (borrowing) and then stop.
        let mut n = 1;
        while g.next(T0 + 1).is_ok() {
            n += 1;
        }
        assert_eq!(n, 128 * 2, "ms T0+1 and T0+2, 128 each");
        assert!(g.refused >= 1);
        // A renewal lets it go on; a revoked lease stops it for good.
        lease.confirm(T0 + 100);
        assert!(g.next(T0 + 50).is_ok());
        lease.revoke();
        // The cached ceiling still covers T0+100; past it the generator rereads and stops.
        assert!(g.next(T0 + 101).is_err());
        assert!(g.next(T0 + 10_000).is_err());
    }

    #[test]
    fn restarts_never_repeat_ids() {
        // A run persists its reservation; the next run starts above it, even with a clock that
        // went back inside the reservation (the center refuses a clock behind it; the floor covers
        // the millisecond itself).
        let mut all = HashSet::new();
        let mut floor = T0;
        let mut clock = T0;
        for run in 0..20u64 {
            let lease = Arc::new(IdLease::new(4, 2));
            let reservation = clock + 50;
            lease.confirm(reservation);
            let mut gens: Vec<IdGen> = (0..2)
                .map(|s| IdGen::new(lease.clone(), s, floor))
                .collect();
            for i in 0..300u64 {
                for g in gens.iter_mut() {
                    // Each run ends somewhere inside its reservation.
                    if let Ok(id) = g.next(clock + (i * run) % 40) {
                        assert!(all.insert(id), "run {run}: {id} issued twice");
                    }
                }
            }
            for (s, g) in gens.iter().enumerate() {
                lease.report(s, g.last_ms());
            }
            // A crash persists the reservation; a clean stop the high water. Alternate.
            floor = if run % 2 == 0 {
                reservation
            } else {
                lease.issued_high_water().unwrap()
            };
            // The next start sees a clock at (not behind) the floor.
            clock = floor;
        }
        assert!(all.len() > 10_000);
    }

    #[test]
    fn high_water_needs_every_shard() {
        let l = IdLease::new(0, 3);
        l.report(0, 5);
        l.report(2, 9);
        assert_eq!(l.issued_high_water(), None);
        l.report(1, 7);
        assert_eq!(l.issued_high_water(), Some(9));
    }
}
