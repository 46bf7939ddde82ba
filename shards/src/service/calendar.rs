//! Calendar events for components: the `[calendar]` section, the per-shard driver that turns the
//! shard's wall clock into [`Crossed`] events, and the row that persists what was last fired so a
//! server that was down over a reset delivers the missed event once at start.
//!
//! The boundary arithmetic (time zones, DST, counting) is `lattice_runtime::time::calendar`; this
//! file only wires it (docs/TIME.md, "Shard wiring"): at start, the persisted last-fired times and
//! a catch-up poll; then one timer at the next boundary, a poll when it fires, and the next timer.
//! Persistence is write-behind: the row is marked after the events were delivered, so a crash
//! between delivery and the journal's acknowledgement delivers them again at the next start (at
//! least once).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lattice_runtime::time::{
    Boundary, Calendar, CalendarConfig, CalendarError, CalendarEvents, Crossed, LastFired,
};
use lattice_storage::{Migration, StorageError, TableSpec, Value};

/// The table of last-fired times, one row per shard.
pub const TABLE: &str = "lattice_calendar";

/// `[calendar]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSection {
    /// IANA time zone of game days.
    pub time_zone: String,
    /// Local hour a game day starts.
    pub reset_hour: u8,
    /// First day of a game week.
    pub first_weekday: String,
}

impl CalendarSection {
    /// The calendar, or an error naming the bad value.
    pub fn calendar(&self) -> Result<Calendar, CalendarError> {
        Calendar::new(&CalendarConfig {
            time_zone: self.time_zone.clone(),
            reset_hour: self.reset_hour,
            first_weekday: CalendarConfig::parse_weekday(&self.first_weekday)?,
        })
    }
}

/// The table spec (key: shard).
pub fn table_spec() -> Result<TableSpec, StorageError> {
    TableSpec::new(
        TABLE,
        &["shard"],
        &["day_ms", "week_ms", "month_ms", "year_ms"],
    )
}

/// The migration creating it.
pub fn migration(version: u32) -> Migration {
    Migration::portable(
        version,
        "calendar last-fired times",
        &[
            "CREATE TABLE IF NOT EXISTS lattice_calendar (shard INT NOT NULL PRIMARY KEY, \
           day_ms BIGINT NOT NULL, week_ms BIGINT NOT NULL, month_ms BIGINT NOT NULL, \
           year_ms BIGINT NOT NULL)",
        ],
    )
}

/// Last-fired times from a stored row (0 = never).
pub fn from_row(values: &[Value]) -> LastFired {
    let mut l = LastFired::default();
    for (kind, v) in Boundary::ALL.iter().zip(values) {
        if let Some(t) = v
            .as_i64()
            .filter(|ms| *ms > 0)
            .and_then(DateTime::<Utc>::from_timestamp_millis)
        {
            l.set(*kind, t);
        }
    }
    l
}

/// The row storing `l`.
pub fn to_row(l: &LastFired) -> Vec<Value> {
    Boundary::ALL
        .iter()
        .map(|k| Value::Int(l.get(*k).map_or(0, |t| t.timestamp_millis())))
        .collect()
}

/// One shard's calendar state.
pub struct CalendarDriver {
    events: CalendarEvents,
}

impl CalendarDriver {
    /// Starts from persisted last-fired times (kinds never fired owe nothing).
    pub fn new(cal: Calendar, last: LastFired, now: SystemTime) -> Result<Self, CalendarError> {
        Ok(CalendarDriver {
            events: CalendarEvents::new(cal, last, DateTime::<Utc>::from(now))?,
        })
    }

    /// The calendar.
    pub fn calendar(&self) -> &Calendar {
        self.events.calendar()
    }

    /// Boundaries passed since the last poll, each kind once with its count, smallest kind first.
    pub fn poll(&mut self, now: SystemTime) -> Result<Vec<Crossed>, CalendarError> {
        self.events.poll(DateTime::<Utc>::from(now))
    }

    /// How long until the next boundary (at least 1 ms, so a timer at an exact boundary fires
    /// after it).
    pub fn delay_to_next(&self, now: SystemTime) -> Result<Duration, CalendarError> {
        let now_utc = DateTime::<Utc>::from(now);
        let at = self.events.next_wakeup(now_utc)?;
        let ms = (at - now_utc).num_milliseconds().max(0) as u64 + 1;
        Ok(Duration::from_millis(ms))
    }

    /// What to persist.
    pub fn last_fired(&self) -> &LastFired {
        self.events.last_fired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn section() -> CalendarSection {
        CalendarSection {
            time_zone: "Asia/Shanghai".into(),
            reset_hour: 5,
            first_weekday: "mon".into(),
        }
    }

    #[test]
    fn bad_sections_are_typed_errors() {
        let mut s = section();
        s.time_zone = "Mars/Olympus".into();
        assert!(matches!(
            s.calendar(),
            Err(CalendarError::UnknownTimeZone(_))
        ));
        let mut s = section();
        s.reset_hour = 24;
        assert!(matches!(
            s.calendar(),
            Err(CalendarError::InvalidResetHour(24))
        ));
        let mut s = section();
        s.first_weekday = "someday".into();
        assert!(matches!(
            s.calendar(),
            Err(CalendarError::UnknownWeekday(_))
        ));
    }

    #[test]
    fn rows_round_trip() {
        let mut l = LastFired::default();
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 21, 0, 0).unwrap();
        l.set(Boundary::Day, t);
        l.set(Boundary::Month, t);
        let row = to_row(&l);
        assert_eq!(row[1], Value::Int(0));
        assert_eq!(from_row(&row), l);
    }

    #[test]
    fn simulated_days_fire_once_each_and_downtime_catches_up_once() {
        let cal = section().calendar().unwrap();
        // Sunday 2026-03-01 12:00 in Shanghai (04:00 UTC).
        let start: SystemTime = Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap().into();
        let mut d = CalendarDriver::new(cal.clone(), LastFired::default(), start).unwrap();
        assert!(
            d.poll(start).unwrap().is_empty(),
            "a first start owes nothing"
        );
        // Next reset: Monday 05:00 Shanghai = Sunday 21:00 UTC, 17 h later.
        let wait = d.delay_to_next(start).unwrap();
        assert_eq!(wait, Duration::from_millis(17 * 3_600_000 + 1));
        let t1 = start + wait;
        let ev = d.poll(t1).unwrap();
        let kinds: Vec<(Boundary, u64)> = ev.iter().map(|c| (c.boundary, c.count)).collect();
        assert_eq!(
            kinds,
            [(Boundary::Day, 1), (Boundary::Week, 1)],
            "Monday: day and week"
        );
        assert!(d.poll(t1).unwrap().is_empty(), "fires once");
        // Down for 40 days: the restart gets each kind once with its count.
        let saved = *d.last_fired();
        let later = t1 + Duration::from_secs(40 * 86_400);
        let mut back = CalendarDriver::new(cal, from_row(&to_row(&saved)), later).unwrap();
        let ev = back.poll(later).unwrap();
        let kinds: Vec<(Boundary, u64)> = ev.iter().map(|c| (c.boundary, c.count)).collect();
        assert_eq!(
            kinds,
            [
                (Boundary::Day, 40),
                (Boundary::Week, 5),
                (Boundary::Month, 1)
            ]
        );
        assert!(back.poll(later).unwrap().is_empty());
    }
}
