//! Component timers on the shard's wheel: which component a fired runtime timer belongs to.
//!
//! The runtime's wheel fires a `u64` token; this table maps it to (service, component, the
//! component's own token). Tokens carry a slot and its generation, so a stale token (a timer
//! cancelled and its slot reused) finds nothing. Cost: O(1) set, fire and cancel; 32 bytes per
//! pending timer.

use std::time::Duration;

use lattice_runtime::time::{TimerError, TimerHandle};
use lattice_runtime::ShardCx;

use super::ctx::TimerId;

#[derive(Debug)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    service: u16,
    comp: u16,
    token: u64,
    periodic: bool,
    handle: TimerHandle,
}

/// The timers components set on one shard.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// A fired timer, resolved to its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    pub service: u16,
    pub comp: u16,
    pub token: u64,
}

impl TimerTable {
    pub fn set<M: Send + 'static>(
        &mut self,
        cx: &ShardCx<M>,
        d: Duration,
        periodic: bool,
        service: u16,
        comp: u16,
        token: u64,
    ) -> Result<TimerId, TimerError> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let id = (u64::from(self.slots[slot as usize].generation) << 32) | u64::from(slot);
        let handle = if periodic {
            cx.timer_every(d, id)
        } else {
            cx.timer_after(d, id)
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                self.free.push(slot);
                return Err(e);
            }
        };
        self.slots[slot as usize].entry = Some(Entry {
            service,
            comp,
            token,
            periodic,
            handle,
        });
        Ok(TimerId(id))
    }

    /// The runtime fired `id`: the component to call, if the timer is still ours.
    pub fn fired(&mut self, id: u64) -> Option<Fired> {
        let (slot, generation) = (id as u32, (id >> 32) as u32);
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        let e = s.entry?;
        if !e.periodic {
            self.release(slot);
        }
        Some(Fired {
            service: e.service,
            comp: e.comp,
            token: e.token,
        })
    }

    pub fn cancel<M: Send + 'static>(&mut self, cx: &ShardCx<M>, id: TimerId) -> bool {
        let (slot, generation) = (id.0 as u32, (id.0 >> 32) as u32);
        let Some(s) = self.slots.get(slot as usize) else {
            return false;
        };
        let Some(e) = s.entry.filter(|_| s.generation == generation) else {
            return false;
        };
        cx.cancel_timer(e.handle);
        self.release(slot);
        true
    }

    /// Timers pending.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.entry = None;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        debug_assert!(self.free.len() <= self.slots.len());
    }
}
