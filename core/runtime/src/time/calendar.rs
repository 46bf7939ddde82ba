//! Calendar events: new day / week / month / year in a configured IANA time zone.
//!
//! A *game day* starts at the configured reset hour in local time (games often reset at 05:00);
//! weeks start on the configured first weekday, months on the 1st, years on 1 January, each at
//! the reset hour. Every local date has exactly one boundary instant:
//!
//! - reset hour inside a DST gap (the local time never happens): the boundary is the first
//!   instant after the gap (e.g. 02:00 in New York on the spring-forward day → 03:00 EDT);
//! - reset hour inside a DST overlap (the local time happens twice): the first occurrence.
//!
//! So a 23- or 25-hour day fires exactly once. Boundaries are counted by local calendar
//! arithmetic (dates, not 24-hour steps), which is what makes catch-up after downtime exact.
//!
//! Pure computation: no clock, no I/O. The shard asks [`CalendarEvents::next_wakeup`], puts a
//! timer on its wheel for that instant, and calls [`CalendarEvents::poll`] when it fires.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// Kinds of calendar boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Boundary {
    /// A new game day (local date at the reset hour).
    Day,
    /// A new week (first weekday at the reset hour).
    Week,
    /// A new month (the 1st at the reset hour).
    Month,
    /// A new year (1 January at the reset hour).
    Year,
}

impl Boundary {
    /// All kinds, in the order events are reported (smallest first).
    pub const ALL: [Boundary; 4] = [
        Boundary::Day,
        Boundary::Week,
        Boundary::Month,
        Boundary::Year,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Boundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Boundary::Day => "day",
            Boundary::Week => "week",
            Boundary::Month => "month",
            Boundary::Year => "year",
        })
    }
}

/// Errors of calendar configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not an IANA zone name known to the bundled database.
    #[error("unknown IANA time zone {0:?}")]
    UnknownTimeZone(String),
    /// Reset hour must be 0..=23.
    #[error("reset hour {0} is not in 0..=23")]
    InvalidResetHour(u8),
    /// Not a weekday name ("mon", "Monday", …).
    #[error("unknown weekday {0:?}")]
    UnknownWeekday(String),
    /// The date is outside the range the calendar can represent.
    #[error("date out of range")]
    OutOfRange,
}

/// Calendar settings (one source of truth; the config loader fills it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarConfig {
    /// IANA zone name, e.g. `"Europe/Berlin"`.
    pub time_zone: String,
    /// Local hour at which a game day starts, 0..=23.
    pub reset_hour: u8,
    /// First day of the week.
    pub first_weekday: Weekday,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_string(),
            reset_hour: 5,
            first_weekday: Weekday::Mon,
        }
    }
}

impl CalendarConfig {
    /// Parses a weekday name such as `"mon"` or `"Sunday"`.
    pub fn parse_weekday(s: &str) -> Result<Weekday, CalendarError> {
        Weekday::from_str(s).map_err(|_| CalendarError::UnknownWeekday(s.to_string()))
    }
}

/// The last time each boundary kind fired (persisted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastFired {
    times: [Option<DateTime<Utc>>; 4],
}

impl LastFired {
    /// When `kind` last fired, if ever.
    pub fn get(&self, kind: Boundary) -> Option<DateTime<Utc>> {
        self.times[kind.index()]
    }

    /// Records that `kind` fired at `at`.
    pub fn set(&mut self, kind: Boundary, at: DateTime<Utc>) {
        self.times[kind.index()] = Some(at);
    }

    /// Every kind marked as fired at the start of its period containing `now` (a first start:
    /// nothing is owed).
    pub fn current(cal: &Calendar, now: DateTime<Utc>) -> Result<LastFired, CalendarError> {
        let mut l = LastFired::default();
        for k in Boundary::ALL {
            l.set(k, cal.period_start(k, now)?);
        }
        Ok(l)
    }
}

/// One boundary kind that was crossed since it last fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossed {
    /// Which kind.
    pub boundary: Boundary,
    /// Boundaries of this kind passed since it last fired: 1 in normal running, N after N
    /// missed days (weeks, …) of downtime.
    pub count: u64,
    /// The most recent boundary instant passed; persist it as the new last-fired time.
    pub latest: DateTime<Utc>,
}

/// Boundary arithmetic for one configuration. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
    reset_hour: u8,
    first_weekday: Weekday,
}

impl Calendar {
    /// Validates `cfg`: unknown zone → [`CalendarError::UnknownTimeZone`], hour > 23 →
    /// [`CalendarError::InvalidResetHour`].
    pub fn new(cfg: &CalendarConfig) -> Result<Calendar, CalendarError> {
        let tz = Tz::from_str(&cfg.time_zone)
            .map_err(|_| CalendarError::UnknownTimeZone(cfg.time_zone.clone()))?;
        if cfg.reset_hour > 23 {
            return Err(CalendarError::InvalidResetHour(cfg.reset_hour));
        }
        Ok(Calendar {
            tz,
            reset_hour: cfg.reset_hour,
            first_weekday: cfg.first_weekday,
        })
    }

    /// The configured zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The instant the game day of local date `date` starts (see the module docs for DST).
    pub fn day_start(&self, date: NaiveDate) -> Result<DateTime<Utc>, CalendarError> {
        let naive = date
            .and_hms_opt(u32::from(self.reset_hour), 0, 0)
            .ok_or(CalendarError::OutOfRange)?;
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
            LocalResult::None => {
                // In a gap: the first whole minute that exists is the end of the gap (zone
                // transitions fall on whole minutes). Bounded: gaps are at most a day.
                for m in 1..=(48 * 60) {
                    let t = naive + chrono::Duration::minutes(m);
                    match self.tz.from_local_datetime(&t) {
                        LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => {
                            return Ok(x.with_timezone(&Utc))
                        }
                        LocalResult::None => {}
                    }
                }
                Err(CalendarError::OutOfRange)
            }
        }
    }

    /// The game date containing instant `t`.
    pub fn game_date(&self, t: DateTime<Utc>) -> Result<NaiveDate, CalendarError> {
        let local = t.with_timezone(&self.tz).date_naive();
        if self.day_start(local)? <= t {
            Ok(local)
        } else {
            local.pred_opt().ok_or(CalendarError::OutOfRange)
        }
    }

    /// First local date of the period of `kind` that contains game date `d`.
    fn period_first_date(&self, kind: Boundary, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        let r = match kind {
            Boundary::Day => Some(d),
            Boundary::Week => {
                let back = d.weekday().days_since(self.first_weekday);
                d.checked_sub_days(Days::new(u64::from(back)))
            }
            Boundary::Month => d.with_day(1),
            Boundary::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1),
        };
        r.ok_or(CalendarError::OutOfRange)
    }

    /// A number that grows by one per period of `kind` (consecutive periods differ by 1).
    fn period_index(&self, kind: Boundary, d: NaiveDate) -> Result<i64, CalendarError> {
        Ok(match kind {
            Boundary::Day => i64::from(d.num_days_from_ce()),
            Boundary::Week => {
                let first = self.period_first_date(kind, d)?;
                i64::from(first.num_days_from_ce()).div_euclid(7)
            }
            Boundary::Month => i64::from(d.year()) * 12 + i64::from(d.month0()),
            Boundary::Year => i64::from(d.year()),
        })
    }

    /// Start of the period of `kind` containing `t` (the latest boundary at or before `t`).
    pub fn period_start(
        &self,
        kind: Boundary,
        t: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, CalendarError> {
        let d = self.game_date(t)?;
        self.day_start(self.period_first_date(kind, d)?)
    }

    /// The first boundary of `kind` strictly after `t`.
    pub fn next_boundary(
        &self,
        kind: Boundary,
        t: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, CalendarError> {
        let first = self.period_first_date(kind, self.game_date(t)?)?;
        let next = match kind {
            Boundary::Day => first.checked_add_days(Days::new(1)),
            Boundary::Week => first.checked_add_days(Days::new(7)),
            Boundary::Month => first.checked_add_months(Months::new(1)),
            Boundary::Year => first.checked_add_months(Months::new(12)),
        }
        .ok_or(CalendarError::OutOfRange)?;
        self.day_start(next)
    }

    /// Number of boundaries of `kind` in `(from, to]`; 0 when `to <= from`.
    pub fn count_between(
        &self,
        kind: Boundary,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, CalendarError> {
        if to <= from {
            return Ok(0);
        }
        let a = self.period_index(kind, self.game_date(from)?)?;
        let b = self.period_index(kind, self.game_date(to)?)?;
        Ok(u64::try_from(b - a).unwrap_or(0))
    }

    /// Boundaries crossed since each kind last fired, smallest kind first. A kind that never
    /// fired (`None`) is not reported (treat a first start as owing nothing; see
    /// [`LastFired::current`]). A `last` after `now` (clock stepped back) reports nothing.
    pub fn catch_up(
        &self,
        last: &LastFired,
        now: DateTime<Utc>,
    ) -> Result<Vec<Crossed>, CalendarError> {
        let mut out = Vec::new();
        for kind in Boundary::ALL {
            let Some(prev) = last.get(kind) else {
                continue;
            };
            let count = self.count_between(kind, prev, now)?;
            if count > 0 {
                out.push(Crossed {
                    boundary: kind,
                    count,
                    latest: self.period_start(kind, now)?,
                });
            }
        }
        Ok(out)
    }

    /// The next instant after `t` at which any boundary falls (several kinds may share it).
    pub fn next_any(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, CalendarError> {
        // A day boundary accompanies every other kind, so the next day boundary is the answer.
        self.next_boundary(Boundary::Day, t)
    }
}

/// Tracks the last-fired times for a shard and turns wake-ups into events.
#[derive(Debug, Clone)]
pub struct CalendarEvents {
    cal: Calendar,
    last: LastFired,
}

impl CalendarEvents {
    /// Starts from persisted last-fired times. Kinds with no record are set to the current
    /// period start (a fresh install owes nothing).
    pub fn new(
        cal: Calendar,
        mut last: LastFired,
        now: DateTime<Utc>,
    ) -> Result<Self, CalendarError> {
        for k in Boundary::ALL {
            if last.get(k).is_none() {
                last.set(k, cal.period_start(k, now)?);
            }
        }
        Ok(Self { cal, last })
    }

    /// The boundaries crossed since the last poll (each kind once, with its count) and records
    /// them as fired. Call at start-up (catch-up) and whenever the calendar timer fires; an
    /// early wake-up returns an empty list.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Result<Vec<Crossed>, CalendarError> {
        let out = self.cal.catch_up(&self.last, now)?;
        for c in &out {
            self.last.set(c.boundary, c.latest);
        }
        Ok(out)
    }

    /// When to wake up next: the next boundary of any kind after `now`.
    pub fn next_wakeup(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, CalendarError> {
        self.cal.next_any(now)
    }

    /// Last-fired times to persist.
    pub fn last_fired(&self) -> &LastFired {
        &self.last
    }

    /// The calendar in use.
    pub fn calendar(&self) -> &Calendar {
        &self.cal
    }
}
