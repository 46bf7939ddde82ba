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
    Cancel { pick: usize, take: bool },
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
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, take)| Op::Cancel { pick, take }),
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

fn run(ops: Vec<Op>, dead_record_slack: u32) -> Result<(), TestCaseError> {
    let cfg = WheelConfig {
        max_fire_per_pass: 1000,
        dead_record_slack,
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
    let mut checked = 0usize;
    // Auditing walks every list: every op for short runs, 250 times over long ones.
    let audit_every = (ops.len() / 250).max(1);
    for (n, op) in ops.into_iter().enumerate() {
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
            Op::Cancel { pick, take } => {
                if handles.is_empty() {
                    continue;
                }
                let (id, h) = handles[pick % handles.len()];
                let want = model.cancel(id);
                if take {
                    prop_assert_eq!(wheel.remove(h), want, "remove of {}", id);
                } else {
                    prop_assert_eq!(wheel.cancel(h), want.is_some(), "cancel of {}", id);
                }
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
                prop_assert_eq!(&got[checked..], &want[checked..]);
                checked = got.len();
            }
        }
        prop_assert_eq!(wheel.elapsed(), model.elapsed);
        prop_assert_eq!(wheel.len(), model.map.len());
        if n % audit_every == 0 {
            wheel.audit().map_err(TestCaseError::fail)?;
        }
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
    fn wheel_matches_btreemap_model(
        ops in prop::collection::vec(op(), 1..250),
        slack in prop_oneof![0u32..4, Just(16_384u32)],
    ) {
        run(ops, slack)?;
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
    for slack in [0, 16_384] {
        if let Err(e) = run(ops.clone(), slack) {
            panic!("slack {slack}: {e}");
        }
    }
}

#[derive(Debug, Clone)]
enum BudgetOp {
    Insert { delta: u64 },
    Cancel { pick: usize },
    Advance { delta: u64 },
}

fn budget_op() -> impl Strategy<Value = BudgetOp> {
    prop_oneof![
        8 => delta().prop_map(|delta| BudgetOp::Insert { delta }),
        2 => any::<usize>().prop_map(|pick| BudgetOp::Cancel { pick }),
        3 => delta().prop_map(|delta| BudgetOp::Advance { delta }),
    ]
}

/// Fire and cascade budgets only delay firings, never reorder or lose them: a wheel with tiny
/// budgets fires the same (id, deadline) sequence as one with unlimited budgets.
fn run_budgets(ops: Vec<BudgetOp>, max_fire: u32, max_cascade: u32) -> Result<(), TestCaseError> {
    let free = WheelConfig {
        max_fire_per_pass: u32::MAX,
        max_cascade_per_pass: u32::MAX,
        ..WheelConfig::default()
    };
    let tight = WheelConfig {
        max_fire_per_pass: max_fire,
        max_cascade_per_pass: max_cascade,
        ..WheelConfig::default()
    };
    let fail = |e: super::wheel::TimerError| TestCaseError::fail(e.to_string());
    let mut a: TimerWheel<u64> = TimerWheel::new(free).map_err(fail)?;
    let mut b: TimerWheel<u64> = TimerWheel::new(tight).map_err(fail)?;
    let mut now = 0u64;
    // (id, deadline, handle in a, handle in b)
    let mut live: Vec<(u64, u64, TimerHandle, TimerHandle)> = Vec::new();
    let mut next_id = 0;
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            BudgetOp::Insert { delta } => {
                let d = now + delta;
                let ha = a.insert(d, next_id).map_err(fail)?;
                let hb = b.insert(d, next_id).map_err(fail)?;
                live.push((next_id, d, ha, hb));
                next_id += 1;
            }
            BudgetOp::Cancel { pick } => {
                // Only timers still pending in both (deadline in the future).
                live.retain(|x| x.1 > now);
                if live.is_empty() {
                    continue;
                }
                let (id, _, ha, hb) = live.swap_remove(pick % live.len());
                prop_assert_eq!(a.remove(ha), Some(id));
                prop_assert_eq!(b.remove(hb), Some(id));
            }
            BudgetOp::Advance { delta } => {
                now += delta;
                a.advance(now, |e| got_a.push((e.item, e.deadline)));
                b.advance(now, |e| got_b.push((e.item, e.deadline)));
                prop_assert!(got_b.len() <= got_a.len());
                prop_assert_eq!(&got_a[..got_b.len()], &got_b[..]);
            }
        }
    }
    a.advance(now, |e| got_a.push((e.item, e.deadline)));
    let mut passes = 0;
    while b
        .advance(now, |e| got_b.push((e.item, e.deadline)))
        .budget_hit
    {
        passes += 1;
        prop_assert!(passes < 1_000_000, "tight wheel never catches up");
    }
    prop_assert_eq!(&got_a, &got_b);
    prop_assert_eq!(a.len(), b.len());
    prop_assert_eq!(a.elapsed(), b.elapsed());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn budgets_delay_but_never_reorder(
        ops in prop::collection::vec(budget_op(), 1..300),
        max_fire in 1u32..5,
        max_cascade in 1u32..5,
    ) {
        run_budgets(ops, max_fire, max_cascade)?;
    }
}

#[test]
fn cascade_budget_spreads_a_big_slot_over_passes() {
    let cfg = WheelConfig {
        max_cascade_per_pass: 100,
        ..WheelConfig::default()
    };
    let mut w: TimerWheel<u64> = TimerWheel::new(cfg).expect("config");
    for i in 0..1000 {
        w.insert(10_000 + i % 7, i).expect("insert");
    }
    let mut fired = Vec::new();
    let mut passes = 0;
    loop {
        let out = w.advance(20_000, |e| fired.push(e.deadline));
        passes += 1;
        if !out.budget_hit {
            break;
        }
        // An insert during the pending cascade must still fire after earlier ones of its tick.
        if passes == 3 {
            w.insert(10_003, 5000).expect("insert");
        }
    }
    assert!(passes >= 10, "1000 moves at 100 per pass: {passes} passes");
    assert_eq!(fired.len(), 1001);
    assert!(
        fired.windows(2).all(|p| p[0] <= p[1]),
        "deadline order kept"
    );
    assert!(w.stats().cascade_budget_hits >= 9);
}

#[test]
fn model_agrees_at_scale_across_slab_chunks() {
    // Enough timers to span several 1024-entry slab chunks, with slot reuse after cancels.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ops = Vec::new();
    for i in 0..20_000u64 {
        let r = next();
        match r % 10 {
            0..=5 => ops.push(Op::Insert {
                delta: next() % [100, 10_000, 1_000_000, 1 << 37][(i % 4) as usize],
            }),
            6 => ops.push(Op::InsertPeriodic {
                delta: next() % 5_000,
                period: 1 + next() % 3_000,
            }),
            7 | 8 => ops.push(Op::Cancel {
                pick: next() as usize,
                take: r % 3 == 0,
            }),
            _ => ops.push(Op::Advance {
                delta: next() % 20_000,
                budget: [1000, 50][(i % 2) as usize],
            }),
        }
    }
    for slack in [0, 64, 16_384] {
        if let Err(e) = run(ops.clone(), slack) {
            panic!("slack {slack}: {e}");
        }
    }
}
