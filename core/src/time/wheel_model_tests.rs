//! Property test: the wheel against a `BTreeMap` reference model.
//!
//! The model keeps `(deadline, insertion sequence) → timer` and fires, on each advance, every
//! entry with deadline ≤ now in key order, up to the budget. Random insert / periodic insert /
//! cancel (including stale handles) / reschedule / advance sequences must fire exactly the same
//! timers, in the same order, in the same advance call, with the same deadline.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::wheel::{TimerHandle, TimerWheel, WheelConfig, WHEEL_BITS};

#[derive(Debug, Clone)]
enum Op {
    Insert { delta: u64 },
    InsertPeriodic { delta: u64, period: u64 },
    Cancel { pick: usize },
    Reschedule { pick: usize, delta: u64 },
    Advance { delta: u64, budget: u32 },
}

/// Deltas that land in every level, at slot edges, and beyond the horizon.
fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..70,
        3 => 0u64..5_000,
        2 => 0u64..400_000,
        1 => 0u64..(1 << 31),
        1 => (0u32..=7).prop_map(|l| (1u64 << (6 * l)).saturating_sub(1)),
        1 => (0u32..=6).prop_map(|l| 1u64 << (6 * l)),
        1 => (1u64 << WHEEL_BITS) - 2..(1u64 << (WHEEL_BITS + 2)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => delta().prop_map(|delta| Op::Insert { delta }),
        1 => (delta(), 1u64..5_000).prop_map(|(delta, period)| Op::InsertPeriodic { delta, period }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), delta()).prop_map(|(pick, delta)| Op::Reschedule { pick, delta }),
        4 => (delta(), prop_oneof![1u32..4, Just(1000u32), Just(0u32)])
            .prop_map(|(delta, budget)| Op::Advance { delta, budget }),
    ]
}

/// (advance call number, id, deadline, skipped)
type Firing = (usize, u64, u64, u64);

#[derive(Default)]
struct Model {
    map: BTreeMap<(u64, u64), (u64, u64)>,
    key_of: HashMap<u64, (u64, u64)>,
    elapsed: u64,
    seq: u64,
    budget_hit_now: Option<u64>,
    deferred: u64,
}

impl Model {
    fn insert(&mut self, id: u64, deadline: u64, period: u64) {
        let key = (deadline.max(self.elapsed), self.seq);
        self.seq += 1;
        self.map.insert(key, (id, period));
        self.key_of.insert(id, key);
    }

    fn cancel(&mut self, id: u64) -> Option<u64> {
        let key = self.key_of.remove(&id)?;
        self.map.remove(&key).map(|(id, _)| id)
    }

    fn reschedule(&mut self, id: u64, deadline: u64) -> bool {
        let Some(key) = self.key_of.remove(&id) else {
            return false;
        };
        let Some((_, period)) = self.map.remove(&key) else {
            return false;
        };
        self.insert(id, deadline, period);
        true
    }

    fn advance(&mut self, call: usize, now: u64, budget: u32, out: &mut Vec<Firing>) {
        let now = now.max(self.elapsed);
        let limit = self.budget_hit_now;
        let mut fired = 0u32;
        let mut hit = false;
        loop {
            let Some((&key, _)) = self.map.iter().next() else {
                self.elapsed = now;
                break;
            };
            if key.0 > now {
                self.elapsed = now;
                break;
            }
            if fired >= budget {
                self.elapsed = key.0;
                hit = true;
                break;
            }
            self.elapsed = key.0;
            let Some((id, period)) = self.map.remove(&key) else {
                break;
            };
            self.key_of.remove(&id);
            if limit.is_some_and(|l| key.0 <= l) {
                self.deferred += 1;
            }
            let mut skipped = 0;
            if period > 0 {
                let mut next = key.0 + period;
                if next <= now {
                    let k = (now - next) / period + 1;
                    skipped = k;
                    next += k * period;
                }
                self.insert(id, next, period);
            }
            out.push((call, id, key.0, skipped));
            fired += 1;
        }
        self.budget_hit_now = hit.then_some(now);
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = WheelConfig {
        max_fire_per_pass: 1000,
        ..WheelConfig::default()
    };
    let mut wheel: TimerWheel<u64> =
        TimerWheel::new(cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model::default();
    let mut handles: Vec<(u64, TimerHandle)> = Vec::new();
    let mut next_id = 0u64;
    let mut got: Vec<Firing> = Vec::new();
    let mut want: Vec<Firing> = Vec::new();
    let mut calls = 0usize;
    for op in ops {
        match op {
            Op::Insert { delta } => {
                let d = wheel.elapsed() + delta;
                let h = wheel
                    .insert(d, next_id)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.insert(next_id, d, 0);
                handles.push((next_id, h));
                next_id += 1;
            }
            Op::InsertPeriodic { delta, period } => {
                let d = wheel.elapsed() + delta;
                let h = wheel
                    .insert_periodic(d, period, next_id)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.insert(next_id, d, period);
                handles.push((next_id, h));
                next_id += 1;
            }
            Op::Cancel { pick } => {
                if handles.is_empty() {
                    continue;
                }
                let (id, h) = handles[pick % handles.len()];
                prop_assert_eq!(wheel.cancel(h), model.cancel(id), "cancel of {}", id);
            }
            Op::Reschedule { pick, delta } => {
                if handles.is_empty() {
                    continue;
                }
                let (id, h) = handles[pick % handles.len()];
                let d = wheel.elapsed() + delta;
                let ok = wheel
                    .reschedule(h, d)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(ok, model.reschedule(id, d), "reschedule of {}", id);
            }
            Op::Advance { delta, budget } => {
                let now = wheel.elapsed() + delta;
                wheel.advance_bounded(now, budget, |e| {
                    got.push((calls, e.item, e.deadline, e.skipped));
                });
                model.advance(calls, now, budget, &mut want);
                calls += 1;
                prop_assert_eq!(&got, &want);
            }
        }
        prop_assert_eq!(wheel.elapsed(), model.elapsed);
        prop_assert_eq!(wheel.len(), model.map.len());
        let first = model.map.keys().next().map(|k| k.0);
        match (wheel.next_deadline(), first) {
            (None, None) => {}
            (Some(w), Some(m)) => prop_assert!(w <= m, "next_deadline {} after {}", w, m),
            (w, m) => prop_assert!(false, "next_deadline {:?} vs model {:?}", w, m),
        }
    }
    // Drain everything left.
    wheel.advance_bounded(u64::MAX, u32::MAX, |e| {
        got.push((calls, e.item, e.deadline, e.skipped))
    });
    // Periodic timers never drain; the model must agree on the one pass.
    model.advance(calls, super::wheel::MAX_TICK, u32::MAX, &mut want);
    prop_assert_eq!(&got, &want);
    prop_assert_eq!(wheel.stats().deferred_fired, model.deferred);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn wheel_matches_btreemap_model(ops in prop::collection::vec(op(), 1..250)) {
        run(ops)?;
    }
}

#[test]
fn model_agrees_on_dense_same_tick_order() {
    // Many timers on a few ticks, reached through every level, with a small budget.
    let mut ops = Vec::new();
    for i in 0..300u64 {
        ops.push(Op::Insert {
            delta: [5, 64, 4096, 262_144][(i % 4) as usize] + (i % 3),
        });
        if i % 50 == 0 {
            ops.push(Op::Advance {
                delta: 1000,
                budget: 7,
            });
        }
    }
    for _ in 0..100 {
        ops.push(Op::Advance {
            delta: 5000,
            budget: 11,
        });
    }
    if let Err(e) = run(ops) {
        panic!("{e}");
    }
}
