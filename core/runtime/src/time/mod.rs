//! Time for a shard: a cached cycle-counter clock, a hierarchical timer wheel, calendar events.
//!
//! - [`Clock`]: read once per loop pass ([`Clock::refresh`]), monotonic (backward readings are
//!   clamped and counted), with a wall-time mapping for calendar use.
//! - [`TimerWheel`]: 6 levels × 64 slots of 1 ms ticks plus an overflow list; O(1) insert,
//!   cancel (lazy: one 8-byte word, the slot's record is swept later, their number bounded) and
//!   reschedule through generation-checked [`TimerHandle`]s; exact firing tick;
//!   insertion order within a tick; periodic timers; a bounded number of firings per
//!   [`TimerWheel::advance`].
//! - [`Calendar`] / [`CalendarEvents`]: day/week/month/year boundaries in an IANA zone with a
//!   reset hour and first weekday, DST-safe, with catch-up counts after downtime.
//!
//! This module must not know about sockets, sessions, shards or the runtime: the shard loop
//! feeds it ticks and wall times and acts on what it returns. See `docs/TIME.md`.

#![deny(missing_docs)]

mod calendar;
mod clock;
mod records;
mod slab;
mod wheel;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod wheel_model_tests;

pub use calendar::{
    Boundary, Calendar, CalendarConfig, CalendarError, CalendarEvents, Crossed, LastFired,
};
pub use chrono::Weekday;
pub use clock::{Clock, ClockStats, ManualTime, MonoTime, TickLen};
pub use wheel::{
    AdvanceOutcome, Expired, Tick, TimerError, TimerHandle, TimerWheel, WheelConfig, WheelStats,
    LEVELS, MAX_TICK, SLOTS, WHEEL_BITS,
};
