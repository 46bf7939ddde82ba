//! Simulated-clock tests: a manual [`Clock`], a [`TimerWheel`] and [`CalendarEvents`] wired the
//! way a shard wires them, driven through DST transitions (Europe/Berlin, America/New_York,
//! America/Sao_Paulo) and a year end (Asia/Tokyo), plus catch-up after downtime.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, TimeZone, Utc, Weekday};

use super::{
    Boundary, Calendar, CalendarConfig, CalendarEvents, Clock, Crossed, LastFired, TickLen,
    TimerWheel, WheelConfig,
};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(y, mo, d, h, mi, 0) {
        chrono::LocalResult::Single(t) => t,
        other => panic!("bad test date {other:?}"),
    }
}

fn cal(tz: &str, reset_hour: u8, first_weekday: Weekday) -> Calendar {
    Calendar::new(&CalendarConfig {
        time_zone: tz.to_string(),
        reset_hour,
        first_weekday,
    })
    .expect("valid calendar config")
}

/// Runs a shard-like loop from `start` to `end`: the wheel holds one calendar timer, the clock
/// jumps to each wheel deadline. Returns (wall time at firing, event).
fn simulate(
    cal: Calendar,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Crossed)> {
    let tick = TickLen::MILLISECOND;
    let (mut clock, manual) = Clock::manual(SystemTime::from(start));
    let mut wheel: TimerWheel<()> = TimerWheel::new(WheelConfig::default()).expect("wheel");
    let mut events = CalendarEvents::new(cal, LastFired::default(), start).expect("events");
    let schedule = |clock: &Clock, events: &CalendarEvents, wheel: &mut TimerWheel<()>| {
        let now = DateTime::<Utc>::from(clock.wall_now());
        let at = events.next_wakeup(now).expect("next wakeup");
        let mono = clock.mono_at_wall(SystemTime::from(at));
        wheel
            .insert(mono.as_nanos().div_ceil(tick.as_nanos()), ())
            .expect("insert");
    };
    schedule(&clock, &events, &mut wheel);
    let mut out = Vec::new();
    let mut wakeups = 0;
    while let Some(t) = wheel.next_deadline() {
        wakeups += 1;
        assert!(wakeups < 100_000, "simulation does not converge");
        manual.set(tick.start_of(t));
        clock.refresh();
        let now = DateTime::<Utc>::from(clock.wall_now());
        if now > end {
            break;
        }
        let mut fired = false;
        wheel.advance(clock.now_tick(tick), |_| fired = true);
        if fired {
            for c in events.poll(now).expect("poll") {
                out.push((now, c));
            }
            schedule(&clock, &events, &mut wheel);
        }
    }
    out
}

fn of_kind(ev: &[(DateTime<Utc>, Crossed)], kind: Boundary) -> Vec<DateTime<Utc>> {
    ev.iter()
        .filter(|(_, c)| c.boundary == kind)
        .map(|(at, c)| {
            assert_eq!(c.count, 1, "one boundary per firing in normal running");
            assert_eq!(*at, c.latest, "fires exactly at the boundary");
            *at
        })
        .collect()
}

#[test]
fn berlin_spring_forward_23h_day_fires_once() {
    // 2026-03-29 02:00 CET → 03:00 CEST; reset hour 02:00 falls into the gap.
    let ev = simulate(
        cal("Europe/Berlin", 2, Weekday::Mon),
        utc(2026, 3, 26, 12, 0),
        utc(2026, 4, 1, 12, 0),
    );
    let days = of_kind(&ev, Boundary::Day);
    assert_eq!(
        days,
        vec![
            utc(2026, 3, 27, 1, 0), // 02:00 CET
            utc(2026, 3, 28, 1, 0),
            utc(2026, 3, 29, 1, 0), // gap: 03:00 CEST, the first instant after it
            utc(2026, 3, 30, 0, 0), // 02:00 CEST
            utc(2026, 3, 31, 0, 0),
            utc(2026, 4, 1, 0, 0),
        ]
    );
    assert_eq!(
        days[3] - days[2],
        chrono::Duration::hours(23),
        "game day of the transition is 23 h"
    );
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2026, 3, 30, 0, 0)]);
    assert_eq!(of_kind(&ev, Boundary::Month), vec![utc(2026, 4, 1, 0, 0)]);
    assert!(of_kind(&ev, Boundary::Year).is_empty());
}

#[test]
fn berlin_fall_back_25h_day_fires_once() {
    // 2026-10-25 03:00 CEST → 02:00 CET; reset 02:00 happens twice: the first one counts.
    let ev = simulate(
        cal("Europe/Berlin", 2, Weekday::Mon),
        utc(2026, 10, 23, 12, 0),
        utc(2026, 10, 27, 12, 0),
    );
    let days = of_kind(&ev, Boundary::Day);
    assert_eq!(
        days,
        vec![
            utc(2026, 10, 24, 0, 0), // 02:00 CEST
            utc(2026, 10, 25, 0, 0), // first 02:00 (CEST)
            utc(2026, 10, 26, 1, 0), // 02:00 CET
            utc(2026, 10, 27, 1, 0),
        ]
    );
    assert_eq!(days[2] - days[1], chrono::Duration::hours(25));
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2026, 10, 26, 1, 0)]);
}

#[test]
fn new_york_both_transitions() {
    // Spring: 2026-03-08 02:00 EST → 03:00 EDT, reset 02:00 in the gap.
    let c = cal("America/New_York", 2, Weekday::Sun);
    let ev = simulate(c.clone(), utc(2026, 3, 6, 12, 0), utc(2026, 3, 10, 12, 0));
    assert_eq!(
        of_kind(&ev, Boundary::Day),
        vec![
            utc(2026, 3, 7, 7, 0), // 02:00 EST
            utc(2026, 3, 8, 7, 0), // gap → 03:00 EDT
            utc(2026, 3, 9, 6, 0), // 02:00 EDT (23 h later)
            utc(2026, 3, 10, 6, 0),
        ]
    );
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2026, 3, 8, 7, 0)]);
    // Fall: 2026-11-01 02:00 EDT → 01:00 EST, reset 01:00 ambiguous.
    let c = cal("America/New_York", 1, Weekday::Sun);
    let ev = simulate(c, utc(2026, 10, 30, 12, 0), utc(2026, 11, 3, 12, 0));
    let days = of_kind(&ev, Boundary::Day);
    assert_eq!(
        days,
        vec![
            utc(2026, 10, 31, 5, 0), // 01:00 EDT
            utc(2026, 11, 1, 5, 0),  // first 01:00 (EDT); the second at 06:00 UTC does not fire
            utc(2026, 11, 2, 6, 0),  // 01:00 EST (25 h later)
            utc(2026, 11, 3, 6, 0),
        ]
    );
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2026, 11, 1, 5, 0)]);
    assert_eq!(of_kind(&ev, Boundary::Month), vec![utc(2026, 11, 1, 5, 0)]);
}

#[test]
fn sao_paulo_midnight_gap_with_reset_at_midnight() {
    // 2018-11-04 00:00 → 01:00 (DST started at midnight); reset hour 0 does not exist that day.
    let ev = simulate(
        cal("America/Sao_Paulo", 0, Weekday::Mon),
        utc(2018, 11, 2, 12, 0),
        utc(2018, 11, 6, 12, 0),
    );
    assert_eq!(
        of_kind(&ev, Boundary::Day),
        vec![
            utc(2018, 11, 3, 3, 0), // 00:00 -03
            utc(2018, 11, 4, 3, 0), // gap → 01:00 -02
            utc(2018, 11, 5, 2, 0), // 00:00 -02
            utc(2018, 11, 6, 2, 0),
        ]
    );
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2018, 11, 5, 2, 0)]);
}

#[test]
fn tokyo_year_end_fires_day_month_year_together() {
    let ev = simulate(
        cal("Asia/Tokyo", 5, Weekday::Sun),
        utc(2026, 12, 29, 0, 0),
        utc(2027, 1, 6, 0, 0),
    );
    let new_year = utc(2026, 12, 31, 20, 0); // 2027-01-01 05:00 JST
    let at_new_year: Vec<Boundary> = ev
        .iter()
        .filter(|(at, _)| *at == new_year)
        .map(|(_, c)| c.boundary)
        .collect();
    assert_eq!(
        at_new_year,
        vec![Boundary::Day, Boundary::Month, Boundary::Year],
        "reported smallest kind first"
    );
    assert_eq!(of_kind(&ev, Boundary::Year), vec![new_year]);
    assert_eq!(of_kind(&ev, Boundary::Month), vec![new_year]);
    // 2027-01-03 is a Sunday.
    assert_eq!(of_kind(&ev, Boundary::Week), vec![utc(2027, 1, 2, 20, 0)]);
    assert_eq!(of_kind(&ev, Boundary::Day).len(), 8); // Dec 30 … Jan 6
}

#[test]
fn catch_up_after_downtime_reports_counts() {
    let c = cal("Europe/Berlin", 5, Weekday::Mon);
    let mut last = LastFired::default();
    last.set(Boundary::Day, utc(2026, 3, 20, 4, 0)); // Fri 05:00 CET
    last.set(Boundary::Week, utc(2026, 3, 16, 4, 0)); // Mon 05:00 CET
    last.set(Boundary::Month, utc(2026, 3, 1, 4, 0));
    last.set(Boundary::Year, utc(2026, 1, 1, 4, 0));
    let now = utc(2026, 4, 2, 12, 0);
    let mut ev = CalendarEvents::new(c, last, now).expect("events");
    let got = ev.poll(now).expect("poll");
    let summary: Vec<(Boundary, u64, DateTime<Utc>)> = got
        .iter()
        .map(|x| (x.boundary, x.count, x.latest))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Boundary::Day, 13, utc(2026, 4, 2, 3, 0)), // 05:00 CEST
            (Boundary::Week, 2, utc(2026, 3, 30, 3, 0)),
            (Boundary::Month, 1, utc(2026, 4, 1, 3, 0)),
        ]
    );
    assert!(ev.poll(now).expect("poll").is_empty(), "fires once");
    assert_eq!(
        ev.last_fired().get(Boundary::Day),
        Some(utc(2026, 4, 2, 3, 0))
    );
    // A clock stepped back before the last firing owes nothing.
    assert!(ev.poll(utc(2026, 3, 1, 0, 0)).expect("poll").is_empty());
}

#[test]
fn catch_up_across_year_end_and_restart_in_simulation() {
    // Run, "crash" for 40 days, restart from the persisted last-fired times.
    let c = cal("America/New_York", 5, Weekday::Mon);
    let ev = simulate(c.clone(), utc(2026, 12, 10, 0, 0), utc(2026, 12, 12, 0, 0));
    let mut last = LastFired::current(&c, utc(2026, 12, 10, 0, 0)).expect("last");
    for (_, x) in &ev {
        last.set(x.boundary, x.latest);
    }
    let restart = utc(2027, 1, 21, 15, 0);
    let mut events = CalendarEvents::new(c, last, restart).expect("events");
    let got: Vec<(Boundary, u64)> = events
        .poll(restart)
        .expect("poll")
        .iter()
        .map(|x| (x.boundary, x.count))
        .collect();
    // Last day fired: 2026-12-11 05:00 EST; now game date 2027-01-21 → 41 days.
    // Weeks: Mon 2026-12-07 → Mon 2027-01-18 → 6. Months: Dec → Jan → 1. Years: 1.
    assert_eq!(
        got,
        vec![
            (Boundary::Day, 41),
            (Boundary::Week, 6),
            (Boundary::Month, 1),
            (Boundary::Year, 1),
        ]
    );
}

/// Walks every day boundary for two years and checks the arithmetic is consistent.
fn check_boundaries_consistent(tz: &str, reset_hour: u8) {
    let c = cal(tz, reset_hour, Weekday::Wed);
    let mut t = utc(2025, 12, 30, 0, 0);
    let end = utc(2027, 12, 31, 0, 0);
    let mut prev_date: Option<NaiveDate> = None;
    let one_s = chrono::Duration::seconds(1);
    while t < end {
        let b = c.next_boundary(Boundary::Day, t).expect("next");
        assert!(b > t);
        let d = c.game_date(b).expect("date");
        if let Some(p) = prev_date {
            assert_eq!(p.succ_opt(), Some(d), "{tz}: every local date exactly once");
        }
        prev_date = Some(d);
        assert_eq!(c.day_start(d).expect("start"), b);
        assert_eq!(c.count_between(Boundary::Day, b - one_s, b).expect("n"), 1);
        assert_eq!(c.count_between(Boundary::Day, t, b - one_s).expect("n"), 0);
        let len = c.next_boundary(Boundary::Day, b).expect("next") - b;
        assert!(
            len >= chrono::Duration::hours(22) && len <= chrono::Duration::hours(26),
            "{tz}: day of {len}"
        );
        for k in [Boundary::Week, Boundary::Month, Boundary::Year] {
            let s = c.period_start(k, b).expect("start");
            assert!(s <= b);
            assert!(c.next_boundary(k, b).expect("next") > b);
            let n = c.count_between(k, b - one_s, b).expect("n");
            assert_eq!(n == 1, s == b, "{tz}: {k} boundary at {b}");
        }
        t = b;
    }
}

#[test]
fn boundary_arithmetic_consistent_over_two_years() {
    for (tz, h) in [
        ("Europe/Berlin", 2),
        ("America/New_York", 1),
        ("America/New_York", 2),
        ("Australia/Lord_Howe", 2), // 30-minute DST shift
        ("Australia/Sydney", 2),
        ("UTC", 0),
    ] {
        check_boundaries_consistent(tz, h);
    }
}

#[test]
fn config_errors_are_typed() {
    use super::CalendarError;
    let bad_tz = Calendar::new(&CalendarConfig {
        time_zone: "Mars/Olympus".into(),
        ..CalendarConfig::default()
    });
    assert_eq!(
        bad_tz,
        Err(CalendarError::UnknownTimeZone("Mars/Olympus".into()))
    );
    let bad_hour = Calendar::new(&CalendarConfig {
        reset_hour: 24,
        ..CalendarConfig::default()
    });
    assert_eq!(bad_hour, Err(CalendarError::InvalidResetHour(24)));
    assert_eq!(CalendarConfig::parse_weekday("sunday"), Ok(Weekday::Sun));
    assert!(matches!(
        CalendarConfig::parse_weekday("someday"),
        Err(CalendarError::UnknownWeekday(_))
    ));
}

#[test]
fn park_timeout_from_wheel() {
    // The shard parks until the wheel's next deadline.
    let tick = TickLen::MILLISECOND;
    let (mut clock, manual) = Clock::manual(SystemTime::UNIX_EPOCH);
    let mut wheel: TimerWheel<u32> = TimerWheel::new(WheelConfig::default()).expect("wheel");
    manual.advance(Duration::from_micros(10_300));
    clock.refresh();
    let d = clock.deadline_after(Duration::from_millis(30), tick);
    wheel.insert(d, 1).expect("insert");
    let next = wheel.next_deadline().expect("pending");
    assert!(next <= d);
    assert!(clock.until_tick(next, tick) <= Duration::from_micros(30_700));
    manual.set(tick.start_of(d));
    clock.refresh();
    let mut got = Vec::new();
    wheel.advance(clock.now_tick(tick), |e| got.push(e.item));
    assert_eq!(got, vec![1]);
}
