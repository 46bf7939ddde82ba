//! Hierarchical timer wheel: one per shard, driven by the shard loop.
//!
//! Layout: 6 levels × 64 slots over an integer tick (1 ms in Lattice), so level `L` slots are
//! `64^L` ticks wide and the wheel covers `2^36` ticks (≈ 2.2 years at 1 ms); deadlines further
//! out wait in an overflow list that is re-sorted into the wheel once per wheel revolution.
//! Timers cascade down a level when their slot comes up, so a timer fires in exactly the tick
//! of its deadline (no coarsening); see `docs/TIME.md` for the lateness bound.
//!
//! Work per [`TimerWheel::advance`] is bounded twice: at most `max_fire_per_pass` firings and
//! at most `max_cascade_per_pass` record moves or discards; a big slot is moved over several
//! passes, and inserts into its range queue behind it, so budgets delay firings but never
//! reorder them.
//!
//! Timers sit in a chunked slab ([`super::slab`]); each slot of the wheel is a FIFO queue of
//! slab indices in 64-byte blocks ([`super::records`]). Cancel is lazy: it frees the slab entry
//! and leaves the timer's record where it is; the record is recognised as dead (its entry no
//! longer points back at it) and dropped when its slot is fired, cascaded or compacted. So a
//! cancel touches one entry and no list, and dead records cost 4 bytes each until then. Their
//! number is bounded: past `pending / 2 + dead_record_slack` the wheel compacts its lists a
//! few records per call. Handles carry a generation: cancelling a timer that already fired (or
//! whose slot was reused) is a no-op.
//!
//! The wheel knows nothing of clocks, sockets or shards; the caller passes ticks in.

use super::records::{Compaction, RecordList, RecordPool, Run, NIL};
use super::slab::{Cold, Slab};

/// Number of levels.
pub const LEVELS: usize = 6;
/// Slots per level.
pub const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Bits of tick covered by the wheel proper (`LEVELS × 6`).
pub const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
const OVERFLOW_LOC: u16 = (LEVELS * SLOTS) as u16;
const LISTS: usize = LEVELS * SLOTS + 1;
const RUN_LEN: usize = std::mem::size_of::<Run>() / 4;
/// Compaction steps (records looked at) owed by each insert and reschedule while dead records
/// are over their bound. Each such call adds at most one record, so 4 steps keep well ahead.
const COMPACT_STEPS_PER_OP: u32 = 4;
/// Owed steps are run once this many have accumulated.
const COMPACT_BATCH: u32 = 64;

/// Largest deadline (and period) accepted, in ticks (`2^62`: ≈ 146 million years at 1 ms).
pub const MAX_TICK: u64 = 1 << 62;

/// A point in wheel time, counted in ticks since the clock's origin.
pub type Tick = u64;

/// Names one timer. Cheap to copy; stays safe when stale.
///
/// A handle packs the slab index and the slot's generation. Once the timer fires (one-shot) or is
/// cancelled, the slot's generation moves on and every call with the old handle is a no-op. A
/// slot is retired rather than let its generation wrap, so a stale handle never reaches a later
/// timer.
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
    /// The wheel holds `max` timers already (see [`WheelConfig::max_timers`]), or — far beyond
    /// any size that fits in memory — its slot lists hold 2^31 records; counted in
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
    /// Most records moved down a level (cascaded) or discarded (records of cancelled timers) by
    /// one advance call. When a slot holds more, the work continues in the next call and nothing
    /// in that slot's range fires until it is done (counted in
    /// [`WheelStats::cascade_budget_hits`]). What is left of it after the pass's own work goes
    /// to compaction. At least 1.
    pub max_cascade_per_pass: u32,
    /// Records of cancelled or rescheduled timers allowed beyond half the number of pending
    /// timers before the wheel compacts its slot lists (4 bytes each; see
    /// [`WheelStats::dead_records`]).
    pub dead_record_slack: u32,
    /// Slots allocated up front (rounded up to 1024), so early inserts never allocate.
    pub preallocate: u32,
}

impl Default for WheelConfig {
    fn default() -> Self {
        Self {
            max_timers: 1 << 22,
            max_fire_per_pass: 4096,
            max_cascade_per_pass: 16_384,
            dead_record_slack: 16_384,
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

/// Counters for metrics. All monotonic except `pending`, `dead_records` and `allocated_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WheelStats {
    /// Timers inserted (one-shot and periodic).
    pub inserted: u64,
    /// Successful cancels.
    pub cancelled: u64,
    /// Timers fired (each periodic occurrence counts).
    pub fired: u64,
    /// Record moves from a higher level (or the overflow list) to a lower one.
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
    /// Records of cancelled or rescheduled timers still in slot lists (4 bytes each). Bounded:
    /// compaction starts past `pending / 2 + dead_record_slack`.
    pub dead_records: u64,
    /// Dead records dropped by compaction (the rest are dropped when their slot comes up).
    pub compacted: u64,
    /// Slab slots retired because their generation would wrap (one per 2^31 timers in a slot).
    pub retired_slots: u64,
    /// Bytes held by the wheel (slab chunks, record blocks, list heads, the wheel struct).
    pub allocated_bytes: u64,
}

/// Next piece of work: a level-0 slot to fire, a higher slot to cascade, or the overflow list.
#[derive(Debug, Clone, Copy)]
struct Event {
    level: usize,
    slot: usize,
    tick: Tick,
}

/// How far the slot lists' compaction has got: the list it is in and, while inside one, its
/// position there.
#[derive(Debug, Clone, Copy, Default)]
struct Compactor {
    loc: usize,
    at: Option<Compaction>,
}

/// How a level-0 slot's firing ended.
enum SlotEnd {
    /// The slot is empty.
    Empty,
    /// A budget stopped it with work left in the slot.
    Budget,
}

/// A hierarchical timer wheel holding values of type `T`.
///
/// Cost: `insert`, `cancel`, `reschedule` are O(1): `cancel` touches the timer's entry and
/// nothing else; `insert` and `reschedule` touch the entry and the tail block of one slot list
/// (plus a few compaction steps while dead records are over their bound). `advance` is
/// O(fired + moved + discarded), bounded by the two per-pass budgets, each timer moving at most
/// `LEVELS - 1` times (plus once per wheel revolution while beyond the horizon);
/// `next_deadline` is O(LEVELS). Not thread-safe by design: one wheel per shard.
#[derive(Debug)]
pub struct TimerWheel<T> {
    slab: Slab<T>,
    pool: RecordPool,
    lists: Box<[RecordList]>,
    occupied: [u64; LEVELS],
    elapsed: Tick,
    cfg: WheelConfig,
    clone_fn: Option<fn(&T) -> T>,
    budget_hit_now: Option<Tick>,
    /// A higher-level slot (level, slot) whose entries are being moved down; it started at
    /// `elapsed`. While set, nothing fires and inserts into its range join its list.
    cascading: Option<(usize, usize)>,
    /// Records in lists whose timer was cancelled or rescheduled away.
    dead: u64,
    compactor: Compactor,
    /// Compaction steps owed by inserts and reschedules, run in batches.
    compact_debt: u32,
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
        let mut slab = Slab::new(cfg.max_timers);
        slab.reserve_total(cfg.preallocate.min(cfg.max_timers) as usize);
        Ok(Self {
            slab,
            pool: RecordPool::new(),
            lists: vec![RecordList::EMPTY; LISTS].into_boxed_slice(),
            occupied: [0; LEVELS],
            elapsed: now,
            cfg,
            clone_fn: None,
            budget_hit_now: None,
            cascading: None,
            dead: 0,
            compactor: Compactor::default(),
            compact_debt: 0,
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
        s.dead_records = self.dead;
        s.retired_slots = self.slab.retired();
        s.allocated_bytes = (self.slab.allocated_bytes()
            + self.pool.allocated_bytes()
            + self.lists.len() * std::mem::size_of::<RecordList>()
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
    fn full(&mut self) -> TimerError {
        self.stats.rejected_full += 1;
        TimerError::Full {
            max: self.cfg.max_timers,
        }
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
        if !self.pool.has_room_for_new() {
            return Err(self.full());
        }
        let deadline = deadline.max(self.elapsed);
        let cold = Cold {
            item: Some(item),
            deadline,
            period,
        };
        let Some((idx, generation)) = self.slab.alloc(cold) else {
            return Err(self.full());
        };
        let loc = self.place(deadline);
        let Some(addr) = self.push_record(loc, idx) else {
            // Unreachable with the room check above; undo rather than keep a timer that is
            // in no list (its item is dropped: the insert failed).
            drop(self.slab.cold_mut(idx).item.take());
            self.slab.release(idx);
            return Err(self.full());
        };
        self.slab.set_link(idx, addr);
        self.stats.inserted += 1;
        self.compact_on_op();
        Ok(TimerHandle {
            index: idx,
            generation,
        })
    }

    /// Whether `handle` names a pending timer.
    #[inline]
    fn is_live(&self, handle: TimerHandle) -> bool {
        self.slab.is_live(handle.index, handle.generation)
    }

    /// Cancels the timer; `false` (and no effect) when the handle is stale (already fired,
    /// cancelled, or slot reused). Use [`Self::remove`] to get the value back.
    ///
    /// Cost: one 8-byte slot word read and written (the slab's hot half); the timer's record
    /// stays in its slot list, dead, until the slot is swept (counted in
    /// [`WheelStats::dead_records`]). A `T` with drop glue is dropped here, which reads the
    /// cold half too; a `T` without (ids, `Copy` enums) is left as dead data until the slot is
    /// reused.
    #[inline]
    pub fn cancel(&mut self, handle: TimerHandle) -> bool {
        if !self.is_live(handle) {
            return false;
        }
        if std::mem::needs_drop::<T>() {
            drop(self.slab.cold_mut(handle.index).item.take());
        }
        self.release_cancelled(handle.index);
        true
    }

    /// Cancels the timer and returns its value; `None` (and no effect) when the handle is stale.
    /// Cost: [`Self::cancel`] plus a read of the slot's cold half (one more cache miss when the
    /// wheel is large and the timer was not touched lately).
    #[inline]
    pub fn remove(&mut self, handle: TimerHandle) -> Option<T> {
        if !self.is_live(handle) {
            return None;
        }
        let item = self.slab.cold_mut(handle.index).item.take();
        self.release_cancelled(handle.index);
        item
    }

    #[inline]
    fn release_cancelled(&mut self, idx: u32) {
        self.slab.release(idx);
        self.dead += 1;
        self.stats.cancelled += 1;
    }

    /// Whether the timer is still pending.
    pub fn is_pending(&self, handle: TimerHandle) -> bool {
        self.is_live(handle)
    }

    /// The tick a pending timer is due, `None` when the handle is stale.
    pub fn deadline_of(&self, handle: TimerHandle) -> Option<Tick> {
        self.is_live(handle)
            .then(|| self.slab.cold(handle.index).deadline)
    }

    /// Moves a pending timer to a new deadline (it goes to the back of that tick's order).
    ///
    /// Returns `Ok(false)` and changes nothing when the handle is stale;
    /// [`TimerError::OutOfRange`] past [`MAX_TICK`]; [`TimerError::Full`] (nothing changed) only
    /// when the slot lists hold 2^31 records. Cost: like an insert; the old record is left dead
    /// in its list.
    pub fn reschedule(&mut self, handle: TimerHandle, deadline: Tick) -> Result<bool, TimerError> {
        if deadline > MAX_TICK {
            return Err(TimerError::OutOfRange(deadline));
        }
        if !self.is_live(handle) {
            return Ok(false);
        }
        if !self.pool.has_room_for_new() {
            return Err(self.full());
        }
        let deadline = deadline.max(self.elapsed);
        let loc = self.place(deadline);
        let Some(addr) = self.push_record(loc, handle.index) else {
            return Err(self.full());
        };
        self.slab.cold_mut(handle.index).deadline = deadline;
        self.slab.set_link(handle.index, addr);
        self.dead += 1;
        self.compact_on_op();
        Ok(true)
    }

    /// The earliest tick at which [`Self::advance`] has work to do, `None` if no timer is
    /// pending. Never later than the earliest deadline; may be earlier (a slot of a higher level
    /// must be cascaded then, or a slot holds only records of cancelled timers), so a shard that
    /// parks until then may wake without firing anything. Use it for the park timeout.
    /// O(LEVELS).
    pub fn next_deadline(&self) -> Option<Tick> {
        if self.slab.len() == 0 {
            return None;
        }
        if self.cascading.is_some() {
            return Some(self.elapsed);
        }
        self.next_event().map(|e| e.tick)
    }

    /// Fires every timer due at or before `now`, at most `max_fire_per_pass` of them (and at
    /// most `max_cascade_per_pass` record moves or discards), calling `f` for each in deadline
    /// order (insertion order within a tick). What the budgets hold back is done by the next
    /// call, in the same order, and counted ([`WheelStats::deferred_fired`], `budget_hits`).
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
            debug_assert!(ev.tick >= self.elapsed, "wheel time runs back");
            self.elapsed = ev.tick;
            if ev.level == LEVELS {
                self.relink_overflow();
            } else if ev.level > 0 {
                self.stop_compacting(ev.level * SLOTS + ev.slot);
                self.cascading = Some((ev.level, ev.slot));
            } else {
                let end = self.fire_slot(
                    ev.slot,
                    now,
                    max_fire,
                    deferred_limit,
                    &mut fired,
                    &mut moved,
                    &mut f,
                );
                if let SlotEnd::Budget = end {
                    budget_hit = true;
                    break;
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
        let left = self.cfg.max_cascade_per_pass.saturating_sub(moved);
        self.compact_if_needed(left);
        AdvanceOutcome {
            fired,
            budget_hit,
            cascade_pending,
        }
    }

    /// Fires the live timers of level-0 slot `slot` in order and drops its dead records, within
    /// the pass's budgets. Live timers count against `max_fire`, dead records against the move
    /// budget.
    #[allow(clippy::too_many_arguments)]
    fn fire_slot<F: FnMut(Expired<T>)>(
        &mut self,
        slot: usize,
        now: Tick,
        max_fire: u32,
        deferred_limit: Option<Tick>,
        fired: &mut u32,
        moved: &mut u32,
        f: &mut F,
    ) -> SlotEnd {
        self.stop_compacting(slot);
        let mut run: Run = [NIL; RUN_LEN];
        loop {
            // Firing never appends to this slot (a periodic timer's next deadline is later than
            // this tick, so in another slot), so the copied run stays the list's head.
            let (n, first) = self.pool.head_run(&mut self.lists[slot], &mut run);
            if n == 0 {
                self.occupied[0] &= !(1u64 << slot);
                return SlotEnd::Empty;
            }
            for (k, &rec) in run[..n].iter().enumerate() {
                let addr = first + k as u32;
                if rec != NIL && self.slab.live_link(rec) == Some(addr) {
                    if *fired >= max_fire {
                        self.pool.consume(&mut self.lists[slot], k);
                        return SlotEnd::Budget;
                    }
                    if deferred_limit.is_some_and(|limit| self.slab.cold(rec).deadline <= limit) {
                        self.stats.deferred_fired += 1;
                    }
                    self.fire(rec, now, f);
                    *fired += 1;
                } else {
                    if *moved >= self.cfg.max_cascade_per_pass {
                        self.pool.consume(&mut self.lists[slot], k);
                        return SlotEnd::Budget;
                    }
                    if rec != NIL {
                        self.dead -= 1;
                    }
                    *moved += 1;
                }
            }
            self.pool.consume(&mut self.lists[slot], n);
        }
    }

    /// Hands the entry of a taken record to `f`; re-queues it first if it is periodic.
    #[inline]
    fn fire<F: FnMut(Expired<T>)>(&mut self, idx: u32, now: Tick, f: &mut F) {
        let handle = TimerHandle {
            index: idx,
            generation: self.slab.hot(idx).generation,
        };
        // One reach into the cold half for a one-shot timer (each is a bounds-checked index).
        let e = self.slab.cold_mut(idx);
        let deadline = e.deadline;
        let period = e.period;
        if period == 0 {
            let item = e.item.take();
            self.fire_last(idx, handle, item, deadline, 0, f);
            return;
        }
        // Periodic: re-queued at its next occurrence after `now`.
        let mut skipped = 0;
        let mut next = deadline + period;
        if next <= now {
            let k = (now - next) / period + 1;
            skipped = k;
            next += k * period;
        }
        if let (true, Some(clone)) = (next <= MAX_TICK, self.clone_fn) {
            let loc = self.place(next);
            // A move never lacks a block (see `records::MAX_BLOCKS_FOR_NEW`); if it did,
            // the timer would end with this firing below instead of being lost.
            if let Some(addr) = self.push_record(loc, idx) {
                let e = self.slab.cold_mut(idx);
                let item = e.item.as_ref().map(clone);
                e.deadline = next;
                self.slab.set_link(idx, addr);
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
        }
        // Next occurrence past MAX_TICK (or no block): the timer ends with this firing.
        let item = self.slab.cold_mut(idx).item.take();
        self.fire_last(idx, handle, item, deadline, skipped, f);
    }

    /// The last firing of a timer: frees its record and hands its entry (`item`, taken from
    /// the record by the caller) to `f`.
    #[inline]
    fn fire_last<F: FnMut(Expired<T>)>(
        &mut self,
        idx: u32,
        handle: TimerHandle,
        item: Option<T>,
        deadline: Tick,
        skipped: u64,
        f: &mut F,
    ) {
        self.slab.release(idx);
        if let Some(item) = item {
            f(Expired {
                handle,
                item,
                deadline,
                skipped,
                periodic: false,
            });
        } else {
            debug_assert!(false, "queued timer without item");
        }
    }

    /// Moves records of the cascading slot down, in order, within the pass's move budget, and
    /// drops its dead ones. Returns whether the slot is empty (cascade finished).
    fn cascade_step(&mut self, level: usize, slot: usize, moved: &mut u32) -> bool {
        let loc = level * SLOTS + slot;
        let mut run: Run = [NIL; RUN_LEN];
        'runs: while *moved < self.cfg.max_cascade_per_pass {
            // Moves go to lower levels, never to this list, so the copied run stays its head.
            let (n, first) = self.pool.head_run(&mut self.lists[loc], &mut run);
            if n == 0 {
                break;
            }
            let n = n.min((self.cfg.max_cascade_per_pass - *moved) as usize);
            for (k, &rec) in run[..n].iter().enumerate() {
                let addr = first + k as u32;
                if rec == NIL || self.slab.live_link(rec) != Some(addr) {
                    if rec != NIL {
                        self.dead -= 1;
                    }
                    continue;
                }
                let to = self.loc_for(self.slab.cold(rec).deadline);
                debug_assert!((to as usize) < level * SLOTS, "cascade must move down");
                // Should a block ever be missing, the record stays put (taken up to `k` only).
                let Some(new) = self.push_record(to, rec) else {
                    debug_assert!(false, "a move lacked a record block");
                    *moved += k as u32;
                    self.pool.consume(&mut self.lists[loc], k);
                    break 'runs;
                };
                self.slab.set_link(rec, new);
                self.stats.cascaded += 1;
            }
            *moved += n as u32;
            self.pool.consume(&mut self.lists[loc], n);
        }
        if self.pool.front(&mut self.lists[loc]).is_none() {
            self.occupied[level] &= !(1u64 << slot);
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

    /// Re-inserts every record of the overflow list relative to the current tick, keeping their
    /// order (the one unbudgeted step: once per `2^WHEEL_BITS` ticks).
    fn relink_overflow(&mut self) {
        let from = OVERFLOW_LOC as usize;
        self.stop_compacting(from);
        let mut src = std::mem::replace(&mut self.lists[from], RecordList::EMPTY);
        while let Some((rec, addr)) = self.pool.front(&mut src) {
            self.pool.pop_front(&mut src);
            if rec == NIL || self.slab.live_link(rec) != Some(addr) {
                if rec != NIL {
                    self.dead -= 1;
                }
                continue;
            }
            let to = self.loc_for(self.slab.cold(rec).deadline);
            // The popped record's block stays allocated until the next `front`, so this
            // push is covered by the same reserve as every other move.
            let Some(new) = self.push_record(to, rec) else {
                debug_assert!(false, "a move lacked a record block");
                continue;
            };
            self.slab.set_link(rec, new);
            self.stats.cascaded += 1;
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

    /// Appends record `idx` to list `loc` and marks the slot occupied; the record's address.
    #[inline]
    fn push_record(&mut self, loc: u16, idx: u32) -> Option<u32> {
        let addr = self.pool.push(&mut self.lists[loc as usize], idx)?;
        if loc != OVERFLOW_LOC {
            self.occupied[loc as usize / SLOTS] |= 1u64 << (loc as usize % SLOTS);
        }
        Some(addr)
    }

    /// Whether dead records are past their bound: half the pending timers plus the slack.
    #[inline]
    fn over_dead_bound(&self) -> bool {
        self.dead > self.slab.len() as u64 / 2 + u64::from(self.cfg.dead_record_slack)
    }

    /// An insert's or reschedule's share of compaction while dead records are over their bound:
    /// `COMPACT_STEPS_PER_OP` steps, run in batches of `COMPACT_BATCH` (one call, one pass over
    /// consecutive records, instead of a few steps per call).
    #[inline]
    fn compact_on_op(&mut self) {
        if self.over_dead_bound() {
            self.compact_debt += COMPACT_STEPS_PER_OP;
            if self.compact_debt >= COMPACT_BATCH {
                let budget = std::mem::take(&mut self.compact_debt);
                self.compact(budget);
            }
        }
    }

    /// Compacts slot lists for at most `budget` steps while dead records are over their bound.
    /// Lists are visited round-robin; the one being cascaded is skipped.
    #[inline]
    fn compact_if_needed(&mut self, budget: u32) {
        if self.over_dead_bound() {
            self.compact(budget);
        }
    }

    #[cold]
    fn compact(&mut self, budget: u32) {
        let mut left = budget;
        while left > 0 && self.over_dead_bound() {
            let loc = self.compactor.loc;
            let next = Compactor {
                loc: (loc + 1) % LISTS,
                at: None,
            };
            let mut at = match self.compactor.at.take() {
                Some(at) => at,
                None => {
                    left -= 1;
                    let cascading = self
                        .cascading
                        .is_some_and(|(level, slot)| level * SLOTS + slot == loc);
                    match self.pool.start_compaction(&mut self.lists[loc]) {
                        Some(at) if !cascading => at,
                        _ => {
                            self.clear_if_empty(loc);
                            self.compactor = next;
                            continue;
                        }
                    }
                }
            };
            let slab = &mut self.slab;
            let out = self
                .pool
                .compact(&mut self.lists[loc], &mut at, left, |rec, from, to| {
                    if slab.live_link(rec) != Some(from) {
                        return false;
                    }
                    slab.set_link(rec, to);
                    true
                });
            left -= out.steps;
            self.dead -= u64::from(out.dropped);
            self.stats.compacted += u64::from(out.dropped);
            if out.done {
                self.clear_if_empty(loc);
                self.compactor = next;
            } else {
                self.compactor.at = Some(at);
            }
        }
    }

    /// Clears a slot's occupancy bit once its list is empty.
    #[inline]
    fn clear_if_empty(&mut self, loc: usize) {
        if loc != OVERFLOW_LOC as usize && self.lists[loc].is_empty() {
            self.occupied[loc / SLOTS] &= !(1u64 << (loc % SLOTS));
        }
    }

    /// Called before list `loc` is consumed: a compaction inside it is dropped (the records it
    /// passed are `NIL`, which consumers skip) and resumes at the next list.
    #[inline]
    fn stop_compacting(&mut self, loc: usize) {
        if self.compactor.at.is_some() && self.compactor.loc == loc {
            self.compactor = Compactor {
                loc: (loc + 1) % LISTS,
                at: None,
            };
        }
    }

    /// Test check of the bookkeeping: every pending timer has exactly one live record, the dead
    /// records number `dead`, and a slot's occupancy bit is set exactly when its list has blocks.
    #[cfg(test)]
    pub(crate) fn audit(&self) -> Result<(), String> {
        let (mut live, mut dead) = (0usize, 0u64);
        for (loc, list) in self.lists.iter().enumerate() {
            if loc != OVERFLOW_LOC as usize {
                let bit = self.occupied[loc / SLOTS] & (1u64 << (loc % SLOTS)) != 0;
                if bit == list.is_empty() {
                    return Err(format!(
                        "list {loc}: occupancy bit {bit}, empty {}",
                        list.is_empty()
                    ));
                }
            }
            for (rec, addr) in self.pool.records(list) {
                if rec == NIL {
                    continue;
                }
                if self.slab.live_link(rec) == Some(addr) {
                    live += 1;
                } else {
                    dead += 1;
                }
            }
        }
        if live != self.slab.len() || dead != self.dead {
            return Err(format!(
                "live records {live} vs pending {}, dead records {dead} vs counted {}",
                self.slab.len(),
                self.dead
            ));
        }
        Ok(())
    }

    /// The earliest slot with records (lower levels always come first), or the overflow drain.
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
        if !self.lists[OVERFLOW_LOC as usize].is_empty() {
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
        assert!(!w.cancel(h), "already fired");
        let h2 = w.insert(20, 2).expect("insert");
        assert_eq!(h2.index(), h.index(), "slot reused");
        assert_ne!(h2.generation(), h.generation());
        assert!(!w.cancel(h), "old handle must not cancel the new timer");
        assert_eq!(w.reschedule(h, 99), Ok(false));
        assert!(w.is_pending(h2));
        assert_eq!(w.remove(h2), Some(2));
        assert_eq!(w.remove(h2), None, "double cancel");
        assert!(!w.cancel(h2), "double cancel");
        let bogus = TimerHandle {
            index: 1_000_000,
            generation: 0,
        };
        assert!(!w.cancel(bogus));
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
        assert_eq!(w.remove(h), Some(42));
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

#[cfg(test)]
mod dead_record_tests {
    //! Lazy cancel leaves records behind; these tests hold the wheel to its bound on them.

    use super::*;

    const SLACK: u32 = 256;

    fn wheel() -> TimerWheel<u64> {
        TimerWheel::new(WheelConfig {
            dead_record_slack: SLACK,
            ..WheelConfig::default()
        })
        .expect("config")
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The bound the wheel promises after any insert, reschedule or advance: dead records at most
    /// one compaction round's lag past `pending / 2 + slack`, i.e. twice that.
    fn check(w: &TimerWheel<u64>, what: &str) {
        let s = w.stats();
        let bound = 2 * (s.pending / 2 + u64::from(SLACK));
        assert!(
            s.dead_records <= bound,
            "{what}: {} dead records, {} pending, bound {bound}",
            s.dead_records,
            s.pending
        );
    }

    #[test]
    fn insert_cancel_churn_without_advance() {
        let mut w = wheel();
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<TimerHandle> = (0..2000)
            .map(|i| w.insert(1 + r.next() % 600_000, i).expect("insert"))
            .collect();
        for i in 0..200_000u64 {
            let k = (r.next() % live.len() as u64) as usize;
            assert!(w.cancel(live[k]));
            live[k] = w.insert(1 + r.next() % 600_000, i).expect("insert");
            check(&w, "churn");
        }
        assert!(w.stats().compacted > 100_000, "compaction did the work");
        w.audit().expect("bookkeeping");
    }

    #[test]
    fn reschedule_churn_without_advance() {
        let mut w = wheel();
        let mut r = Rng(0x1234_5678);
        let hs: Vec<TimerHandle> = (0..500)
            .map(|i| w.insert(1 + r.next() % 100_000, i).expect("insert"))
            .collect();
        for _ in 0..100_000 {
            let h = hs[(r.next() % hs.len() as u64) as usize];
            assert_eq!(w.reschedule(h, 1 + r.next() % 100_000), Ok(true));
            check(&w, "reschedule");
        }
        w.audit().expect("bookkeeping");
        // Every timer still fires once, at its last deadline.
        let mut fired = 0;
        w.advance(200_000, |_| fired += 1);
        assert_eq!(fired, 500);
        assert_eq!(w.stats().dead_records, 0, "sweeping dropped the rest");
    }

    #[test]
    fn heartbeat_rearm_with_advance() {
        // 1000 sessions with a 30 s idle timer, re-armed (cancel + insert) once a second each,
        // the wheel advanced every tick: without compaction ~29 000 dead records would pile up
        // in the 4 s-wide level-2 slots before those slots come up.
        let mut w = wheel();
        let mut hs: Vec<TimerHandle> = (0..1000)
            .map(|i| w.insert(30_000, i).expect("insert"))
            .collect();
        let mut max_dead = 0;
        for now in 1..=40_000u64 {
            let s = (now % 1000) as usize;
            assert!(w.cancel(hs[s]));
            hs[s] = w.insert(now + 30_000, s as u64).expect("insert");
            let out = w.advance(now, |_| panic!("no session times out"));
            assert!(!out.budget_hit);
            check(&w, "heartbeat");
            max_dead = max_dead.max(w.stats().dead_records);
        }
        assert!(max_dead <= 2 * (500 + u64::from(SLACK)), "max {max_dead}");
        w.audit().expect("bookkeeping");
    }

    #[test]
    fn cancel_everything_then_advance_frees_records() {
        let mut w = wheel();
        let hs: Vec<TimerHandle> = (0..50_000)
            .map(|i| w.insert(1000 + i, i).expect("insert"))
            .collect();
        for h in hs {
            assert!(w.cancel(h));
        }
        // Cancel alone does no list work: the records are all dead now.
        assert_eq!(w.stats().dead_records, 50_000);
        assert_eq!(w.next_deadline(), None, "nothing pending");
        // Passes compact with what is left of their move budget (16 384 by default).
        let mut passes = 0;
        while w.stats().dead_records > u64::from(SLACK) {
            w.advance(0, |_| panic!("nothing pending"));
            passes += 1;
            assert!(passes < 10, "compaction stalls");
        }
        w.audit().expect("bookkeeping");
        let before = w.stats().allocated_bytes;
        // Blocks are reused: refilling does not grow the record pool.
        for i in 0..40_000 {
            w.insert(1000 + i, i).expect("insert");
        }
        assert!(w.stats().allocated_bytes <= before + 4096, "blocks reused");
    }

    #[test]
    fn dead_only_slots_are_swept_without_firing() {
        let mut w = wheel();
        let h = w.insert(5, 1).expect("insert");
        let keep = w.insert(9, 2).expect("insert");
        assert!(w.cancel(h));
        assert_eq!(w.stats().dead_records, 1);
        // The slot of the cancelled timer may make the shard wake early; it fires nothing.
        assert!(w.next_deadline().is_some_and(|t| t <= 9));
        let mut got = Vec::new();
        w.advance(9, |e| got.push(e.item));
        assert_eq!(got, vec![2]);
        assert_eq!(w.stats().dead_records, 0);
        assert!(!w.cancel(keep), "fired");
    }

    #[test]
    fn dead_records_count_against_the_move_budget() {
        let mut w: TimerWheel<u64> = TimerWheel::new(WheelConfig {
            max_cascade_per_pass: 10,
            dead_record_slack: 1 << 20,
            ..WheelConfig::default()
        })
        .expect("config");
        let hs: Vec<TimerHandle> = (0..100).map(|i| w.insert(7, i).expect("insert")).collect();
        w.insert(7, 1000).expect("insert");
        for h in hs {
            assert!(w.cancel(h));
        }
        // 100 dead records ahead of one live timer in the same tick: 10 discards per pass, the
        // tenth pass discards the last 10 and fires.
        let mut got = Vec::new();
        let mut passes = 0;
        loop {
            passes += 1;
            let out = w.advance(7, |e| got.push(e.item));
            if !out.budget_hit {
                break;
            }
        }
        assert_eq!(got, vec![1000]);
        assert_eq!(passes, 10);
        assert_eq!(w.stats().budget_hits, 9);
    }

    #[test]
    fn retired_slot_never_matches_an_old_handle() {
        let mut w = wheel();
        let h = w.insert(10, 1).expect("insert");
        w.slab.set_generation(h.index, u32::MAX);
        let h = TimerHandle {
            index: h.index,
            generation: u32::MAX,
        };
        assert!(w.is_pending(h));
        assert!(w.cancel(h));
        assert_eq!(w.stats().retired_slots, 1);
        let h2 = w.insert(10, 2).expect("insert");
        assert_ne!(h2.index, h.index, "the retired slot is not reused");
        assert!(!w.is_pending(h));
        let mut got = Vec::new();
        w.advance(10, |e| got.push(e.item));
        assert_eq!(got, vec![2]);
    }
}
