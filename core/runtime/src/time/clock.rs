//! Per-shard clock: a calibrated cycle counter read once per loop pass.
//!
//! [`Clock::refresh`] reads the source (the CPU's time-stamp counter through `quanta`, calibrated
//! against the OS monotonic clock; the OS clock where no usable counter exists) and caches the
//! result; [`Clock::now`] then costs a field load. A reading that is earlier than the last one
//! (counters of different cores disagree, a VM migrates) is clamped to the last value and counted.
//!
//! Wall time is derived, not read: the wall clock is sampled at creation (and by
//! [`Clock::resync_wall`]) and the monotonic time since then is added, so wall time moves
//! smoothly with the timers. Calendar code uses [`Clock::wall_now`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::wheel::Tick;

pub use lattice_wire::MonoTime;

/// Length of one wheel tick. Lattice uses 1 ms ([`TickLen::MILLISECOND`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLen {
    nanos: u64,
}

impl TickLen {
    /// One millisecond.
    pub const MILLISECOND: TickLen = TickLen { nanos: 1_000_000 };

    /// A tick of `d`; `None` for zero or more than `u64::MAX` ns.
    pub fn new(d: Duration) -> Option<TickLen> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        (nanos > 0).then_some(TickLen { nanos })
    }

    /// Nanoseconds per tick.
    pub fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// The tick containing `t` (rounds down).
    pub fn tick_of(self, t: MonoTime) -> Tick {
        t.0 / self.nanos
    }

    /// Number of ticks covering `d`, rounded up, so a timer never fires early.
    pub fn ticks_ceil(self, d: Duration) -> u64 {
        let n = d.as_nanos();
        let t = n.div_ceil(u128::from(self.nanos));
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Start of tick `t` as monotonic time.
    pub fn start_of(self, t: Tick) -> MonoTime {
        MonoTime(t.saturating_mul(self.nanos))
    }
}

/// Where readings come from.
#[derive(Debug, Clone)]
enum Source {
    Counter { clock: quanta::Clock, origin: u64 },
    Manual(Arc<AtomicU64>),
}

/// Drives a manual clock (tests, simulations, replay). Cloneable; all clones move one clock.
#[derive(Debug, Clone)]
pub struct ManualTime {
    nanos: Arc<AtomicU64>,
}

impl ManualTime {
    /// Sets the source reading to `t` (may go backwards, to exercise the guard).
    pub fn set(&self, t: MonoTime) {
        self.nanos.store(t.0, Ordering::Relaxed);
    }

    /// Moves the source forward by `d`.
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let cur = self.nanos.load(Ordering::Relaxed);
        self.nanos.store(cur.saturating_add(add), Ordering::Relaxed);
    }

    /// Current source reading.
    pub fn get(&self) -> MonoTime {
        MonoTime(self.nanos.load(Ordering::Relaxed))
    }
}

/// Clock counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockStats {
    /// Calls to [`Clock::refresh`].
    pub refreshes: u64,
    /// Readings that went backwards and were clamped.
    pub backwards_clamped: u64,
    /// Largest backwards step seen, in nanoseconds.
    pub max_backwards_ns: u64,
    /// Calls to [`Clock::resync_wall`].
    pub wall_resyncs: u64,
    /// Resyncs that found the OS wall clock behind the derived wall time (stepped back, or the
    /// counter runs fast); calendar catch-up then reports nothing until it passes again.
    pub wall_steps_back: u64,
}

/// A shard's clock. See the module docs.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
    now: MonoTime,
    /// Wall time (ns since the Unix epoch) at monotonic time `wall_anchor_mono`.
    wall_anchor_unix_ns: i128,
    wall_anchor_mono: MonoTime,
    stats: ClockStats,
}

impl Clock {
    /// A clock on the CPU cycle counter (calibrated once per process by `quanta`, which takes
    /// a few milliseconds on first use), falling back to the OS monotonic clock.
    pub fn new() -> Clock {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Clock {
            source: Source::Counter { clock, origin },
            now: MonoTime(0),
            wall_anchor_unix_ns: unix_nanos(SystemTime::now()),
            wall_anchor_mono: MonoTime(0),
            stats: ClockStats::default(),
        }
    }

    /// A clock driven by hand, starting at monotonic 0 and at wall time `wall_start`.
    pub fn manual(wall_start: SystemTime) -> (Clock, ManualTime) {
        let nanos = Arc::new(AtomicU64::new(0));
        let clock = Clock {
            source: Source::Manual(nanos.clone()),
            now: MonoTime(0),
            wall_anchor_unix_ns: unix_nanos(wall_start),
            wall_anchor_mono: MonoTime(0),
            stats: ClockStats::default(),
        };
        (clock, ManualTime { nanos })
    }

    #[inline]
    fn read(&self) -> MonoTime {
        match &self.source {
            Source::Counter { clock, origin } => {
                let raw = clock.raw();
                if raw < *origin {
                    // Reported as a backwards step by the guard.
                    return MonoTime(0);
                }
                MonoTime(clock.delta_as_nanos(*origin, raw))
            }
            Source::Manual(n) => MonoTime(n.load(Ordering::Relaxed)),
        }
    }

    /// Reads the source once and caches it; call once per loop pass. A reading before the
    /// cached one is clamped (time stands still) and counted in
    /// [`ClockStats::backwards_clamped`]. Cost: one counter read and a multiply (≈ 10–20 ns).
    #[inline]
    pub fn refresh(&mut self) -> MonoTime {
        let t = self.read();
        self.stats.refreshes += 1;
        if t < self.now {
            self.stats.backwards_clamped += 1;
            self.stats.max_backwards_ns = self.stats.max_backwards_ns.max(self.now.0 - t.0);
        } else {
            self.now = t;
        }
        self.now
    }

    /// The cached time of the last [`Self::refresh`]. Never decreases.
    #[inline]
    pub fn now(&self) -> MonoTime {
        self.now
    }

    /// The cached time as a wheel tick.
    #[inline]
    pub fn now_tick(&self, tick: TickLen) -> Tick {
        tick.tick_of(self.now)
    }

    /// First tick at or after `now + delay`: the deadline to give the wheel so the timer never
    /// fires before `delay` has passed.
    pub fn deadline_after(&self, delay: Duration, tick: TickLen) -> Tick {
        let at = self.now.saturating_add(delay);
        at.0.div_ceil(tick.as_nanos())
    }

    /// Time from the cached now until the start of `deadline` (zero if past): a park timeout.
    pub fn until_tick(&self, deadline: Tick, tick: TickLen) -> Duration {
        tick.start_of(deadline).saturating_since(self.now)
    }

    /// Re-reads the OS wall clock and re-anchors wall time to the cached monotonic now (call it
    /// now and then, e.g. each minute, so NTP corrections reach calendar events).
    pub fn resync_wall(&mut self) {
        self.refresh();
        let wall = unix_nanos(SystemTime::now());
        let derived = self.wall_anchor_unix_ns
            + (i128::from(self.now.0) - i128::from(self.wall_anchor_mono.0));
        if wall < derived {
            self.stats.wall_steps_back += 1;
        }
        self.wall_anchor_unix_ns = wall;
        self.wall_anchor_mono = self.now;
        self.stats.wall_resyncs += 1;
    }

    /// Sets the wall time that corresponds to the cached now (manual clocks, tests).
    pub fn set_wall(&mut self, wall: SystemTime) {
        self.wall_anchor_unix_ns = unix_nanos(wall);
        self.wall_anchor_mono = self.now;
    }

    /// Wall time at monotonic time `t`.
    pub fn wall_at(&self, t: MonoTime) -> SystemTime {
        let delta = i128::from(t.0) - i128::from(self.wall_anchor_mono.0);
        from_unix_nanos(self.wall_anchor_unix_ns + delta)
    }

    /// Wall time at the cached now.
    pub fn wall_now(&self) -> SystemTime {
        self.wall_at(self.now)
    }

    /// Monotonic time at which the wall clock reads `wall` (saturates at the clock's origin).
    pub fn mono_at_wall(&self, wall: SystemTime) -> MonoTime {
        let delta = unix_nanos(wall) - self.wall_anchor_unix_ns;
        let t = i128::from(self.wall_anchor_mono.0) + delta;
        MonoTime(t.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> ClockStats {
        self.stats
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn from_unix_nanos(n: i128) -> SystemTime {
    let mag = n.unsigned_abs();
    let d = Duration::new(
        u64::try_from(mag / 1_000_000_000).unwrap_or(u64::MAX),
        (mag % 1_000_000_000) as u32,
    );
    if n >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backwards_reading_is_clamped_and_counted() {
        let (mut c, m) = Clock::manual(UNIX_EPOCH);
        m.set(MonoTime(1_000));
        assert_eq!(c.refresh(), MonoTime(1_000));
        m.set(MonoTime(400));
        assert_eq!(c.refresh(), MonoTime(1_000), "clamped");
        let s = c.stats();
        assert_eq!(s.backwards_clamped, 1);
        assert_eq!(s.max_backwards_ns, 600);
        m.set(MonoTime(2_000));
        assert_eq!(c.refresh(), MonoTime(2_000));
        assert_eq!(c.stats().refreshes, 3);
    }

    #[test]
    fn now_is_cached_until_refresh() {
        let (mut c, m) = Clock::manual(UNIX_EPOCH);
        m.advance(Duration::from_millis(5));
        assert_eq!(c.now(), MonoTime(0));
        c.refresh();
        assert_eq!(c.now_tick(TickLen::MILLISECOND), 5);
    }

    #[test]
    fn deadlines_round_up_and_park_timeout() {
        let (mut c, m) = Clock::manual(UNIX_EPOCH);
        m.set(MonoTime(1_500_000)); // 1.5 ms
        c.refresh();
        let ms = TickLen::MILLISECOND;
        assert_eq!(c.deadline_after(Duration::from_millis(2), ms), 4);
        assert_eq!(c.deadline_after(Duration::ZERO, ms), 2);
        assert_eq!(c.until_tick(4, ms), Duration::from_micros(2_500));
        assert_eq!(c.until_tick(1, ms), Duration::ZERO);
        assert_eq!(ms.ticks_ceil(Duration::from_micros(1001)), 2);
        assert!(TickLen::new(Duration::ZERO).is_none());
    }

    #[test]
    fn wall_time_follows_monotonic_time() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (mut c, m) = Clock::manual(start);
        m.advance(Duration::from_secs(90));
        c.refresh();
        assert_eq!(c.wall_now(), start + Duration::from_secs(90));
        let target = start + Duration::from_secs(3600);
        assert_eq!(c.mono_at_wall(target), MonoTime(3_600_000_000_000));
        assert_eq!(c.wall_at(MonoTime(0)), start);
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        c.set_wall(before_epoch);
        assert_eq!(c.wall_now(), before_epoch);
    }

    #[test]
    fn resync_counts_wall_clock_behind_derived_time() {
        // Derived wall time in 2100; the OS clock is behind it, so the resync is a step back.
        let future = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        let (mut c, _m) = Clock::manual(future);
        c.resync_wall();
        assert_eq!(c.stats().wall_steps_back, 1);
        assert_eq!(c.stats().wall_resyncs, 1);
        assert!(c.wall_now() < future);
    }

    #[test]
    fn counter_clock_is_monotonic() {
        let mut c = Clock::new();
        let mut last = c.refresh();
        for _ in 0..10_000 {
            let t = c.refresh();
            assert!(t >= last);
            last = t;
        }
        let wall = c.wall_now();
        let sys = SystemTime::now();
        let diff = match sys.duration_since(wall) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_secs(5), "wall time off by {diff:?}");
    }
}
