//! Hierarchical timer wheel: one per shard, driven by the shard loop.
//!
//! Layout: 6 levels × 64 slots over an integer tick (1 ms in Lattice), so level `L` slots are
//! `64^L` ticks wide and the wheel covers `2^36` ticks (≈ 2.2 years at 1 ms); deadlines further
//! out wait in an overflow list that is re-sorted into the wheel once per wheel revolution.
//! Timers cascade down a level when their slot comes up, so a timer fires in exactly the tick
//! of its deadline (no coarsening); see `docs/TIME.md` for the lateness bound.
//!
//! Work per [`TimerWheel::advance`] is bounded twice: at most `max_fire_per_pass` firings and
//! at most `max_cascade_per_pass` entry moves; a big slot is moved over several passes, and
//! inserts into its range queue behind it, so budgets delay firings but never reorder them.
//!
//! Entries sit in a chunked slab ([`super::slab`]) and are linked into per-slot doubly linked
//! lists by `u32` index, so insert, cancel and reschedule are O(1) and never allocate once the
//! slab has grown. Handles carry a generation: cancelling a timer that already fired (or whose
//! slot was reused) is a no-op.
//!
//! The wheel knows nothing of clocks, sockets or shards; the caller passes ticks in.

use super::slab::{Slab, LOC_FREE, NIL};

/// Number of levels.
pub const LEVELS: usize = 6;
/// Slots per level.
pub const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Bits of tick covered by the wheel proper (`LEVELS × 6`).
pub const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
const OVERFLOW_LOC: u16 = (LEVELS * SLOTS) as u16;

/// Largest deadline (and period) accepted, in ticks (`2^62`: ≈ 146 million years at 1 ms).
pub const MAX_TICK: u64 = 1 << 62;

/// A point in wheel time, counted in ticks since the clock's origin.
pub type Tick = u64;

/// Names one timer. Cheap to copy; stays safe when stale.
///
/// A handle packs the slab index and the slot's generation. Once the timer fires (one-shot) or is
/// cancelled, the slot's generation moves on and every call with the old handle is a no-op.
/// (A handle can only be confused with a new timer after 2^32 reuses of the same slot.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

impl TimerHandle {
    /// Slab index of the timer.
    pub fn index(self) -> u32 {
        self.index
    }

    /// Generation of the slab slot when the timer was created.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl std::fmt::Display for TimerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timer {} (generation {})", self.index, self.generation)
    }
}

/// Errors of the timer wheel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// The wheel holds `max` timers already (see [`WheelConfig::max_timers`]); counted in
    /// [`WheelStats::rejected_full`].
    #[error("timer wheel is full: {max} timers pending")]
    Full {
        /// The configured bound.
        max: u32,
    },
    /// A periodic timer needs a period of at least one tick.
    #[error("timer period must be at least one tick")]
    ZeroPeriod,
    /// Deadline or period beyond [`MAX_TICK`].
    #[error("tick value {0} is beyond the wheel's range (max {MAX_TICK})")]
    OutOfRange(u64),
    /// The configuration is unusable.
    #[error("invalid timer wheel config: {0}")]
    InvalidConfig(&'static str),
}

/// Bounds and sizing of a wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelConfig {
    /// Most timers pending at once; insert beyond it fails with [`TimerError::Full`].
    /// At most `u32::MAX - 1`.
    pub max_timers: u32,
    /// Most timers fired by one [`TimerWheel::advance`] call; the rest fire in the next call and
    /// are counted in [`WheelStats::deferred_fired`]. At least 1.
    pub max_fire_per_pass: u32,
    /// Most entries moved down a level (cascaded) by one advance call. When a slot holds more,
    /// the move continues in the next call and nothing in that slot's range fires until it is
    /// done (counted in [`WheelStats::cascade_budget_hits`]). At least 1.
    pub max_cascade_per_pass: u32,
    /// Slots allocated up front (rounded up to 1024), so early inserts never allocate.
    pub preallocate: u32,
}

impl Default for WheelConfig {
    fn default() -> Self {
        Self {
            max_timers: 1 << 22,
            max_fire_per_pass: 4096,
            max_cascade_per_pass: 16_384,
            preallocate: 0,
        }
    }
}

/// A timer handed back by [`TimerWheel::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<T> {
    /// The timer's handle. Still valid for a periodic timer (cancel it with this handle); stale
    /// for a one-shot timer.
    pub handle: TimerHandle,
    /// The value given at insert (a clone of it for a periodic timer).
    pub item: T,
    /// The tick it was due, which is also the wheel tick it fired in (a deadline already past
    /// at insert is moved to the wheel's tick then). The caller's lateness is `now - deadline`.
    pub deadline: Tick,
    /// For a periodic timer: occurrences skipped because the wheel was advanced past them in
    /// one go (the next occurrence is always after the `now` of this pass).
    pub skipped: u64,
    /// Whether the timer is periodic (and so still pending).
    pub periodic: bool,
}

/// What one [`TimerWheel::advance`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdvanceOutcome {
    /// Timers fired in this pass.
    pub fired: u32,
    /// Whether the pass stopped at a budget (fire or cascade) with work left that was due by
    /// `now`; call again (or let the next pass do it).
    pub budget_hit: bool,
    /// Whether the pass stopped at the cascade budget in the middle of moving a slot.
    pub cascade_pending: bool,
}

/// Counters for metrics. All monotonic except `pending` and `allocated_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WheelStats {
    /// Timers inserted (one-shot and periodic).
    pub inserted: u64,
    /// Successful cancels.
    pub cancelled: u64,
    /// Timers fired (each periodic occurrence counts).
    pub fired: u64,
    /// Entry moves from a higher level (or the overflow list) to a lower one.
    pub cascaded: u64,
    /// Passes that stopped at a budget (`max_fire_per_pass` with timers still due, or
    /// `max_cascade_per_pass` in the middle of a slot).
    pub budget_hits: u64,
    /// Timers that fired in a later pass than the one in which they were due.
    pub deferred_fired: u64,
    /// Passes that stopped at `max_cascade_per_pass` with a slot half moved.
    pub cascade_budget_hits: u64,
    /// Inserts refused because the wheel was full.
    pub rejected_full: u64,
    /// Timers pending now.
    pub pending: u64,
    /// Bytes held by the wheel (slab chunks, list heads, the wheel struct).
    pub allocated_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct ListHead {
    head: u32,
    tail: u32,
}

const EMPTY_LIST: ListHead = ListHead {
    head: NIL,
    tail: NIL,
};

/// Next piece of work: a level-0 slot to fire, a higher slot to cascade, or the overflow list.
#[derive(Debug, Clone, Copy)]
struct Event {
    level: usize,
    slot: usize,
    tick: Tick,
}

/// A hierarchical timer wheel holding values of type `T`.
///
/// Cost: `insert`, `cancel`, `reschedule` are O(1) (a few cache lines); `advance` is O(fired +
/// moved), bounded by the two per-pass budgets, each timer moving at most `LEVELS - 1` times
/// (plus once per wheel revolution while beyond the horizon); `next_deadline` is O(LEVELS).
/// Not thread-safe by design: one wheel per shard.
#[derive(Debug)]
pub struct TimerWheel<T> {
    slab: Slab<T>,
    heads: Box<[ListHead]>,
    occupied: [u64; LEVELS],
    elapsed: Tick,
    cfg: WheelConfig,
    clone_fn: Option<fn(&T) -> T>,
    budget_hit_now: Option<Tick>,
    /// A higher-level slot (level, slot) whose entries are being moved down; it started at
    /// `elapsed`. While set, nothing fires and inserts into its range join its list.
    cascading: Option<(usize, usize)>,
    stats: WheelStats,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose time starts at tick 0.
    ///
    /// Fails with [`TimerError::InvalidConfig`] when `max_fire_per_pass` or
    /// `max_cascade_per_pass` is 0, or `max_timers` is 0 or `u32::MAX`.
    pub fn new(cfg: WheelConfig) -> Result<Self, TimerError> {
        Self::starting_at(cfg, 0)
    }

    /// Creates an empty wheel whose time starts at `now`.
    pub fn starting_at(cfg: WheelConfig, now: Tick) -> Result<Self, TimerError> {
        if cfg.max_fire_per_pass == 0 {
            return Err(TimerError::InvalidConfig(
                "max_fire_per_pass must be at least 1",
            ));
        }
        if cfg.max_cascade_per_pass == 0 {
            return Err(TimerError::InvalidConfig(
                "max_cascade_per_pass must be at least 1",
            ));
        }
        if cfg.max_timers == 0 || cfg.max_timers == u32::MAX {
            return Err(TimerError::InvalidConfig(
                "max_timers must be in 1..u32::MAX",
            ));
        }
        if now > MAX_TICK {
            return Err(TimerError::OutOfRange(now));
        }
        let mut slab = Slab::new();
        slab.reserve_total(cfg.preallocate.min(cfg.max_timers) as usize);
        Ok(Self {
            slab,
            heads: vec![EMPTY_LIST; LEVELS * SLOTS + 1].into_boxed_slice(),
            occupied: [0; LEVELS],
            elapsed: now,
            cfg,
            clone_fn: None,
            budget_hit_now: None,
            cascading: None,
            stats: WheelStats::default(),
        })
    }

    /// The wheel's current tick: every timer due before it has fired.
    pub fn elapsed(&self) -> Tick {
        self.elapsed
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// The configuration in force.
    pub fn config(&self) -> &WheelConfig {
        &self.cfg
    }

    /// Counters for metrics (cheap copy).
    pub fn stats(&self) -> WheelStats {
        let mut s = self.stats;
        s.pending = self.slab.len() as u64;
        s.allocated_bytes = (self.slab.allocated_bytes()
            + self.heads.len() * std::mem::size_of::<ListHead>()
            + std::mem::size_of::<Self>()) as u64;
        s
    }

    /// Schedules `item` to fire at tick `deadline` (a past deadline fires on the next advance).
    ///
    /// Fails with [`TimerError::Full`] at `max_timers` and [`TimerError::OutOfRange`] past
    /// [`MAX_TICK`]; nothing is stored then.
    #[inline]
    pub fn insert(&mut self, deadline: Tick, item: T) -> Result<TimerHandle, TimerError> {
        self.insert_entry(deadline, 0, item)
    }

    /// Schedules `item` to fire `delay` ticks after the wheel's current tick.
    #[inline]
    pub fn insert_after(&mut self, delay: u64, item: T) -> Result<TimerHandle, TimerError> {
        self.insert_entry(self.elapsed.saturating_add(delay), 0, item)
    }

    /// Schedules a periodic timer: first at `first_deadline`, then every `period` ticks until
    /// cancelled. Each firing hands out a clone of `item`. Occurrences that a single advance
    /// jumps over are not replayed; [`Expired::skipped`] counts them.
    ///
    /// Fails like [`Self::insert`], and with [`TimerError::ZeroPeriod`] for a zero period.
    pub fn insert_periodic(
        &mut self,
        first_deadline: Tick,
        period: u64,
        item: T,
    ) -> Result<TimerHandle, TimerError>
    where
        T: Clone,
    {
        if period == 0 {
            return Err(TimerError::ZeroPeriod);
        }
        if period > MAX_TICK {
            return Err(TimerError::OutOfRange(period));
        }
        self.clone_fn = Some(<T as Clone>::clone);
        self.insert_entry(first_deadline, period, item)
    }

    #[inline]
    fn insert_entry(
        &mut self,
        deadline: Tick,
        period: u64,
        item: T,
    ) -> Result<TimerHandle, TimerError> {
        if deadline > MAX_TICK {
            return Err(TimerError::OutOfRange(deadline));
        }
        let Some(idx) = self.slab.alloc(self.cfg.max_timers) else {
            self.stats.rejected_full += 1;
            return Err(TimerError::Full {
                max: self.cfg.max_timers,
            });
        };
        let deadline = deadline.max(self.elapsed);
        let loc = self.place(deadline);
        let e = self.slab.get_mut(idx);
        e.item = Some(item);
        e.deadline = deadline;
        e.period = period;
        let generation = e.generation;
        self.link_tail(idx, loc);
        self.stats.inserted += 1;
        Ok(TimerHandle {
            index: idx,
            generation,
        })
    }

    /// The pending entry named by `handle`, if the handle is current.
    #[inline]
    fn live_index(&self, handle: TimerHandle) -> Option<u32> {
        let e = self.slab.try_get(handle.index)?;
        (e.generation == handle.generation && e.loc != LOC_FREE).then_some(handle.index)
    }

    /// Cancels the timer and returns its value; `None` (and no effect) when the handle is stale
    /// (already fired, cancelled, or slot reused).
    #[inline]
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        let idx = self.live_index(handle)?;
        self.unlink(idx);
        self.stats.cancelled += 1;
        self.slab.release(idx)
    }

    /// Whether the timer is still pending.
    pub fn is_pending(&self, handle: TimerHandle) -> bool {
        self.live_index(handle).is_some()
    }

    /// The tick a pending timer is due, `None` when the handle is stale.
    pub fn deadline_of(&self, handle: TimerHandle) -> Option<Tick> {
        self.live_index(handle).map(|i| self.slab.get(i).deadline)
    }

    /// Moves a pending timer to a new deadline (it goes to the back of that tick's order).
    ///
    /// Returns `Ok(false)` and changes nothing when the handle is stale;
    /// [`TimerError::OutOfRange`] past [`MAX_TICK`].
    pub fn reschedule(&mut self, handle: TimerHandle, deadline: Tick) -> Result<bool, TimerError> {
        if deadline > MAX_TICK {
            return Err(TimerError::OutOfRange(deadline));
        }
        let Some(idx) = self.live_index(handle) else {
            return Ok(false);
        };
        self.unlink(idx);
        let deadline = deadline.max(self.elapsed);
        self.slab.get_mut(idx).deadline = deadline;
        let loc = self.place(deadline);
        self.link_tail(idx, loc);
        Ok(true)
    }

    /// The earliest tick at which [`Self::advance`] has work to do, `None` if no timer is
    /// pending. Never later than the earliest deadline; may be earlier (a slot of a higher level
    /// must be cascaded then), so a shard that parks until it wakes at most one extra time per
    /// level. Use it for the park timeout. O(LEVELS).
    pub fn next_deadline(&self) -> Option<Tick> {
        if self.cascading.is_some() {
            return Some(self.elapsed);
        }
        self.next_event().map(|e| e.tick)
    }

    /// Fires every timer due at or before `now`, at most `max_fire_per_pass` of them (and at
    /// most `max_cascade_per_pass` entry moves), calling `f` for each in deadline order
    /// (insertion order within a tick). What the budgets hold back is done by the next call, in
    /// the same order, and counted ([`WheelStats::deferred_fired`], `budget_hits`).
    ///
    /// `f` cannot touch the wheel; collect follow-up inserts and do them after the call.
    /// A `now` before the wheel's tick is treated as the wheel's tick (time never runs back).
    pub fn advance<F: FnMut(Expired<T>)>(&mut self, now: Tick, f: F) -> AdvanceOutcome {
        let max = self.cfg.max_fire_per_pass;
        self.advance_bounded(now, max, f)
    }

    /// [`Self::advance`] with an explicit fire budget for this call (0 fires nothing).
    pub fn advance_bounded<F: FnMut(Expired<T>)>(
        &mut self,
        now: Tick,
        max_fire: u32,
        mut f: F,
    ) -> AdvanceOutcome {
        let now = now.clamp(self.elapsed, MAX_TICK.max(self.elapsed));
        let deferred_limit = self.budget_hit_now;
        let mut fired = 0u32;
        let mut moved = 0u32;
        let mut budget_hit = false;
        let mut cascade_pending = false;
        loop {
            if let Some((level, slot)) = self.cascading {
                if !self.cascade_step(level, slot, &mut moved) {
                    cascade_pending = true;
                    break;
                }
                continue;
            }
            let ev = match self.next_event() {
                Some(ev) if ev.tick <= now => ev,
                _ => {
                    self.elapsed = now;
                    break;
                }
            };
            if ev.level == 0 && fired >= max_fire {
                self.elapsed = ev.tick;
                budget_hit = true;
                break;
            }
            debug_assert!(ev.tick >= self.elapsed, "wheel time runs back");
            self.elapsed = ev.tick;
            if ev.level == LEVELS {
                self.relink_list(OVERFLOW_LOC as usize);
            } else if ev.level > 0 {
                self.cascading = Some((ev.level, ev.slot));
            } else {
                while fired < max_fire {
                    let idx = self.heads[ev.slot].head;
                    if idx == NIL {
                        break;
                    }
                    self.unlink(idx);
                    if let Some(limit) = deferred_limit {
                        if self.slab.get(idx).deadline <= limit {
                            self.stats.deferred_fired += 1;
                        }
                    }
                    self.fire(idx, now, &mut f);
                    fired += 1;
                }
            }
        }
        self.stats.fired += u64::from(fired);
        if cascade_pending {
            self.stats.cascade_budget_hits += 1;
            budget_hit = true;
        }
        if budget_hit {
            self.stats.budget_hits += 1;
            self.budget_hit_now = Some(now);
        } else {
            self.budget_hit_now = None;
        }
        AdvanceOutcome {
            fired,
            budget_hit,
            cascade_pending,
        }
    }

    /// Hands an unlinked entry to `f`; re-links it first if it is periodic.
    #[inline]
    fn fire<F: FnMut(Expired<T>)>(&mut self, idx: u32, now: Tick, f: &mut F) {
        let e = self.slab.get(idx);
        let deadline = e.deadline;
        let period = e.period;
        let handle = TimerHandle {
            index: idx,
            generation: e.generation,
        };
        let mut skipped = 0;
        if period != 0 {
            let mut next = deadline + period;
            if next <= now {
                let k = (now - next) / period + 1;
                skipped = k;
                next += k * period;
            }
            if let (true, Some(clone)) = (next <= MAX_TICK, self.clone_fn) {
                let e = self.slab.get_mut(idx);
                let item = e.item.as_ref().map(clone);
                e.deadline = next;
                let loc = self.place(next);
                self.link_tail(idx, loc);
                if let Some(item) = item {
                    f(Expired {
                        handle,
                        item,
                        deadline,
                        skipped,
                        periodic: true,
                    });
                }
                return;
            }
            // Past MAX_TICK: the timer ends with this firing.
        }
        if let Some(item) = self.slab.release(idx) {
            f(Expired {
                handle,
                item,
                deadline,
                skipped,
                periodic: false,
            });
        } else {
            debug_assert!(false, "linked timer without item");
        }
    }

    /// Moves entries of the cascading slot down, in order, within the pass's move budget.
    /// Returns whether the slot is empty (cascade finished).
    fn cascade_step(&mut self, level: usize, slot: usize, moved: &mut u32) -> bool {
        let loc = level * SLOTS + slot;
        while *moved < self.cfg.max_cascade_per_pass {
            let idx = self.heads[loc].head;
            if idx == NIL {
                break;
            }
            self.unlink(idx);
            let to = self.loc_for(self.slab.get(idx).deadline);
            debug_assert!((to as usize) < level * SLOTS, "cascade must move down");
            self.link_tail(idx, to);
            self.stats.cascaded += 1;
            *moved += 1;
        }
        if self.heads[loc].head == NIL {
            self.cascading = None;
            true
        } else {
            false
        }
    }

    /// Where a new or moved entry goes: its level/slot, or the tail of the slot being
    /// cascaded when its deadline falls in that slot's range (keeps insertion order per tick).
    #[inline]
    fn place(&self, deadline: Tick) -> u16 {
        let loc = self.loc_for(deadline);
        if let Some((level, slot)) = self.cascading {
            if loc != OVERFLOW_LOC && (loc as usize) < level * SLOTS {
                return (level * SLOTS + slot) as u16;
            }
        }
        loc
    }

    /// Re-inserts every entry of list `loc` relative to the current tick, keeping their order.
    fn relink_list(&mut self, loc: usize) {
        let mut idx = self.heads[loc].head;
        self.heads[loc] = EMPTY_LIST;
        while idx != NIL {
            let e = self.slab.get(idx);
            let next = e.next;
            let to = self.loc_for(e.deadline);
            debug_assert!((to as usize) < loc || loc == OVERFLOW_LOC as usize);
            self.link_tail(idx, to);
            self.stats.cascaded += 1;
            idx = next;
        }
    }

    /// Level/slot for `deadline` (≥ elapsed): the level is set by the highest bit in which the
    /// deadline differs from the current tick, so an entry always sits in a slot that comes up
    /// before the entries of any higher level.
    #[inline]
    fn loc_for(&self, deadline: Tick) -> u16 {
        let masked = (self.elapsed ^ deadline) | SLOT_MASK;
        let significant = 63 - masked.leading_zeros();
        let level = significant / SLOT_BITS;
        if level as usize >= LEVELS {
            OVERFLOW_LOC
        } else {
            (level as usize * SLOTS + ((deadline >> (level * SLOT_BITS)) & SLOT_MASK) as usize)
                as u16
        }
    }

    #[inline]
    fn link_tail(&mut self, idx: u32, loc: u16) {
        let head = &mut self.heads[loc as usize];
        let old_tail = head.tail;
        head.tail = idx;
        if old_tail == NIL {
            head.head = idx;
        }
        {
            let e = self.slab.get_mut(idx);
            e.prev = old_tail;
            e.next = NIL;
            e.loc = loc;
        }
        if old_tail != NIL {
            self.slab.get_mut(old_tail).next = idx;
        }
        if loc != OVERFLOW_LOC {
            self.occupied[loc as usize / SLOTS] |= 1u64 << (loc as usize % SLOTS);
        }
    }

    #[inline]
    fn unlink(&mut self, idx: u32) {
        let (prev, next, loc) = {
            let e = self.slab.get(idx);
            (e.prev, e.next, e.loc)
        };
        debug_assert_ne!(loc, LOC_FREE);
        if prev == NIL {
            self.heads[loc as usize].head = next;
        } else {
            self.slab.get_mut(prev).next = next;
        }
        if next == NIL {
            self.heads[loc as usize].tail = prev;
        } else {
            self.slab.get_mut(next).prev = prev;
        }
        if loc != OVERFLOW_LOC && self.heads[loc as usize].head == NIL {
            self.occupied[loc as usize / SLOTS] &= !(1u64 << (loc as usize % SLOTS));
        }
    }

    /// The earliest slot with entries (lower levels always come first), or the overflow drain.
    #[inline]
    fn next_event(&self) -> Option<Event> {
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) & SLOT_MASK) as u32;
            debug_assert!(
                occ.checked_shr(now_slot).unwrap_or(0) != 0,
                "occupied slot behind the wheel's tick at level {level}"
            );
            let slot = (now_slot + occ.rotate_right(now_slot).trailing_zeros()) as usize % SLOTS;
            let level_span = 1u64 << (shift + SLOT_BITS);
            let level_start = self.elapsed & !(level_span - 1);
            let tick = level_start + ((slot as u64) << shift);
            return Some(Event { level, slot, tick });
        }
        if self.heads[OVERFLOW_LOC as usize].head != NIL {
            let span = 1u64 << WHEEL_BITS;
            let tick = (self.elapsed | (span - 1)) + 1;
            return Some(Event {
                level: LEVELS,
                slot: 0,
                tick,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel() -> TimerWheel<u64> {
        TimerWheel::new(WheelConfig::default()).expect("valid config")
    }

    fn collect(w: &mut TimerWheel<u64>, now: Tick) -> Vec<(u64, Tick)> {
        let mut out = Vec::new();
        w.advance(now, |e| out.push((e.item, e.deadline)));
        out
    }

    #[test]
    fn fires_at_exact_tick_across_levels() {
        let mut w = wheel();
        let deadlines = [
            0u64,
            1,
            63,
            64,
            65,
            4095,
            4096,
            262_143,
            262_144,
            1 << 30,
            1 << 35,
        ];
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(*d, i as u64).expect("insert");
        }
        let mut fired = Vec::new();
        // Step through each deadline and one tick before it.
        for d in deadlines {
            if d > 0 {
                assert!(collect(&mut w, d - 1).iter().all(|(_, t)| *t < d));
            }
            let got = collect(&mut w, d);
            fired.extend(got.iter().copied());
            assert!(got.iter().all(|(_, t)| *t == d), "fired {got:?} at {d}");
        }
        assert_eq!(fired.len(), deadlines.len());
        assert!(w.is_empty());
    }

    #[test]
    fn big_jump_fires_everything_in_order() {
        let mut w = wheel();
        w.insert(5000, 1).expect("insert");
        w.insert(70, 2).expect("insert");
        w.insert(70, 3).expect("insert");
        w.insert(3, 4).expect("insert");
        let got = collect(&mut w, 1_000_000);
        assert_eq!(got, vec![(4, 3), (2, 70), (3, 70), (1, 5000)]);
        assert_eq!(w.elapsed(), 1_000_000);
    }

    #[test]
    fn overflow_list_beyond_horizon() {
        let mut w = wheel();
        let far = (1u64 << WHEEL_BITS) * 3 + 12345;
        w.insert(far, 9).expect("insert");
        w.insert(10, 1).expect("insert");
        assert_eq!(w.next_deadline(), Some(10));
        assert_eq!(collect(&mut w, 10), vec![(1, 10)]);
        // Next work is the overflow drain at the end of this revolution.
        assert_eq!(w.next_deadline(), Some(1 << WHEEL_BITS));
        assert!(collect(&mut w, far - 1).is_empty());
        assert_eq!(collect(&mut w, far), vec![(9, far)]);
        assert!(w.stats().cascaded > 0);
    }

    #[test]
    fn stale_handles_are_noops() {
        let mut w = wheel();
        let h = w.insert(10, 1).expect("insert");
        assert_eq!(collect(&mut w, 10), vec![(1, 10)]);
        assert_eq!(w.cancel(h), None, "already fired");
        let h2 = w.insert(20, 2).expect("insert");
        assert_eq!(h2.index(), h.index(), "slot reused");
        assert_ne!(h2.generation(), h.generation());
        assert_eq!(
            w.cancel(h),
            None,
            "old handle must not cancel the new timer"
        );
        assert_eq!(w.reschedule(h, 99), Ok(false));
        assert!(w.is_pending(h2));
        assert_eq!(w.cancel(h2), Some(2));
        assert_eq!(w.cancel(h2), None, "double cancel");
        let bogus = TimerHandle {
            index: 1_000_000,
            generation: 0,
        };
        assert_eq!(w.cancel(bogus), None);
        assert_eq!(w.stats().cancelled, 1);
    }

    #[test]
    fn past_deadline_fires_next_pass_at_current_tick() {
        let mut w = wheel();
        collect(&mut w, 500);
        w.insert(3, 7).expect("insert");
        assert_eq!(w.next_deadline(), Some(500));
        let mut out = Vec::new();
        w.advance(500, |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].deadline, 500);
    }

    #[test]
    fn budget_defers_and_counts() {
        let cfg = WheelConfig {
            max_fire_per_pass: 3,
            ..WheelConfig::default()
        };
        let mut w = TimerWheel::new(cfg).expect("config");
        for i in 0..5 {
            w.insert(10, i).expect("insert");
        }
        w.insert(11, 5).expect("insert");
        let first = collect(&mut w, 20);
        assert_eq!(first, vec![(0, 10), (1, 10), (2, 10)]);
        assert_eq!(w.elapsed(), 10);
        let s = w.stats();
        assert_eq!(s.budget_hits, 1);
        let second = collect(&mut w, 20);
        assert_eq!(second, vec![(3, 10), (4, 10), (5, 11)]);
        let s = w.stats();
        assert_eq!(s.deferred_fired, 3);
        assert_eq!(s.budget_hits, 1, "second pass emptied the due set");
        assert_eq!(w.elapsed(), 20);
    }

    #[test]
    fn periodic_rearms_skips_and_cancels() {
        let mut w = wheel();
        let h = w.insert_periodic(10, 10, 42).expect("insert");
        assert_eq!(collect(&mut w, 10), vec![(42, 10)]);
        assert_eq!(w.deadline_of(h), Some(20));
        let mut out = Vec::new();
        w.advance(55, |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].deadline, out[0].skipped), (20, 3));
        assert!(out[0].periodic);
        assert_eq!(w.deadline_of(h), Some(60));
        assert_eq!(w.cancel(h), Some(42));
        assert!(collect(&mut w, 1000).is_empty());
        assert_eq!(w.insert_periodic(1, 0, 1), Err(TimerError::ZeroPeriod));
    }

    #[test]
    fn reschedule_moves_timer() {
        let mut w = wheel();
        let h = w.insert(100, 1).expect("insert");
        w.insert(50, 2).expect("insert");
        assert_eq!(w.reschedule(h, 40), Ok(true));
        assert_eq!(collect(&mut w, 60), vec![(1, 40), (2, 50)]);
        assert_eq!(
            w.reschedule(h, MAX_TICK + 1),
            Err(TimerError::OutOfRange(MAX_TICK + 1))
        );
    }

    #[test]
    fn bounds_are_typed_errors() {
        let cfg = WheelConfig {
            max_timers: 2,
            ..WheelConfig::default()
        };
        let mut w: TimerWheel<u8> = TimerWheel::new(cfg).expect("config");
        w.insert(1, 1).expect("insert");
        w.insert(1, 2).expect("insert");
        assert_eq!(w.insert(1, 3), Err(TimerError::Full { max: 2 }));
        assert_eq!(w.stats().rejected_full, 1);
        assert_eq!(
            w.insert(MAX_TICK + 1, 4),
            Err(TimerError::OutOfRange(MAX_TICK + 1))
        );
        let bad = WheelConfig {
            max_fire_per_pass: 0,
            ..WheelConfig::default()
        };
        assert!(matches!(
            TimerWheel::<u8>::new(bad),
            Err(TimerError::InvalidConfig(_))
        ));
    }

    #[test]
    fn next_deadline_is_lower_bound_and_empty_is_none() {
        let mut w = wheel();
        assert_eq!(w.next_deadline(), None);
        w.insert(100_000, 1).expect("insert");
        let nd = w.next_deadline().expect("pending");
        assert!(nd <= 100_000);
        // Walking by next_deadline reaches the timer in at most LEVELS wake-ups.
        let mut wakeups = 0;
        let mut fired = Vec::new();
        while let Some(t) = w.next_deadline() {
            wakeups += 1;
            fired.extend(collect(&mut w, t));
        }
        assert_eq!(fired, vec![(1, 100_000)]);
        assert!(wakeups <= LEVELS, "{wakeups} wake-ups");
    }
}
