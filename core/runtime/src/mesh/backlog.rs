//! The sender side's backlog: messages that found their destination ring full, kept in order per
//! destination and bounded per destination.
//!
//! Two kinds of message use it. A *refusable* message (a client request crossing shards) is refused
//! once the backlog for its destination holds `limit` messages: the caller answers `BUSY`. A
//! *never-drop* message (a reply, a close, a component's internal message) is always queued; when it
//! passes the limit that is counted. Never-drop traffic is itself bounded by what caused it: every
//! reply answers a request admitted under the limit, every close notice a session that closed
//! (at most `net.max_connections`), so the backlog for one destination holds at most
//! `limit` + (replies to admitted requests) + (session notices) messages.

use std::collections::VecDeque;

/// Why [`Backlog::push`] did not queue a message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused<T>(pub T);

/// Per-destination FIFO queues with one bound each. Cost: O(1) push and pop; memory is the queued
/// messages plus one `VecDeque` header per destination.
#[derive(Debug)]
pub struct Backlog<T> {
    queues: Vec<VecDeque<T>>,
    len: usize,
    limit: usize,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued within the limit.
    WithinLimit,
    /// A never-drop message queued past the limit.
    OverLimit,
}

impl<T> Backlog<T> {
    /// A backlog for `destinations` destinations holding at most `limit` refusable messages each.
    pub fn new(destinations: usize, limit: usize) -> Self {
        Backlog {
            queues: (0..destinations).map(|_| VecDeque::new()).collect(),
            len: 0,
            limit,
        }
    }

    /// Messages waiting in all queues.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages waiting for `dst`.
    pub fn len_for(&self, dst: usize) -> usize {
        self.queues[dst].len()
    }

    /// True when a refusable message for `dst` would be refused now.
    pub fn full_for(&self, dst: usize) -> bool {
        self.queues[dst].len() >= self.limit
    }

    /// Queues `msg` behind what already waits for `dst`. A refusable message (`never_drop` false)
    /// is handed back when `dst`'s queue is at the limit.
    pub fn push(&mut self, dst: usize, msg: T, never_drop: bool) -> Result<Queued, Refused<T>> {
        let q = &mut self.queues[dst];
        let over = q.len() >= self.limit;
        if over && !never_drop {
            return Err(Refused(msg));
        }
        q.push_back(msg);
        self.len += 1;
        debug_assert_eq!(
            self.len,
            self.queues.iter().map(VecDeque::len).sum::<usize>()
        );
        Ok(if over {
            Queued::OverLimit
        } else {
            Queued::WithinLimit
        })
    }

    /// Moves messages for `dst`, oldest first, into `send` until it hands one back (the ring is
    /// full again) or the queue is empty. Returns how many were sent.
    pub fn drain_into(&mut self, dst: usize, mut send: impl FnMut(T) -> Result<(), T>) -> usize {
        let q = &mut self.queues[dst];
        let mut sent = 0;
        while let Some(msg) = q.pop_front() {
            match send(msg) {
                Ok(()) => sent += 1,
                Err(back) => {
                    q.push_front(back);
                    break;
                }
            }
        }
        self.len -= sent;
        sent
    }

    /// Number of destinations.
    pub fn destinations(&self) -> usize {
        self.queues.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn refusable_messages_stop_at_the_limit_never_drop_ones_do_not() {
        let mut b = Backlog::new(2, 2);
        assert_eq!(b.push(1, 'a', false), Ok(Queued::WithinLimit));
        assert_eq!(b.push(1, 'b', false), Ok(Queued::WithinLimit));
        assert!(b.full_for(1));
        assert_eq!(b.push(1, 'c', false), Err(Refused('c')));
        assert_eq!(b.push(1, 'd', true), Ok(Queued::OverLimit));
        assert_eq!(
            b.push(0, 'e', false),
            Ok(Queued::WithinLimit),
            "limits are per destination"
        );
        let mut got = Vec::new();
        assert_eq!(
            b.drain_into(1, |m| {
                got.push(m);
                Ok(())
            }),
            3
        );
        assert_eq!(got, ['a', 'b', 'd']);
        assert_eq!(b.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push { dst: usize, never_drop: bool },
        Drain { dst: usize, room: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, any::<bool>()).prop_map(|(dst, never_drop)| Step::Push { dst, never_drop }),
            (0..3usize, 0..5usize).prop_map(|(dst, room)| Step::Drain { dst, room }),
        ]
    }

    proptest! {
        /// Against a reference model: order per destination is kept, nothing is lost or duplicated,
        /// refusals happen exactly at the limit, and the length is the sum of the queues.
        #[test]
        fn matches_the_reference_model(steps in proptest::collection::vec(step(), 0..200), limit in 1usize..5) {
            let mut b = Backlog::new(3, limit);
            let mut model: Vec<VecDeque<u32>> = vec![VecDeque::new(); 3];
            let mut delivered: Vec<Vec<u32>> = vec![Vec::new(); 3];
            let mut expect_delivered: Vec<Vec<u32>> = vec![Vec::new(); 3];
            for (n, s) in steps.into_iter().enumerate() {
                let n = n as u32;
                match s {
                    Step::Push { dst, never_drop } => {
                        let refused = model[dst].len() >= limit && !never_drop;
                        let r = b.push(dst, n, never_drop);
                        prop_assert_eq!(r.is_err(), refused);
                        if !refused { model[dst].push_back(n); }
                    }
                    Step::Drain { dst, room } => {
                        let mut left = room;
                        let sent = b.drain_into(dst, |m| if left > 0 { left -= 1; delivered[dst].push(m); Ok(()) } else { Err(m) });
                        let k = room.min(model[dst].len());
                        prop_assert_eq!(sent, k);
                        for _ in 0..k { expect_delivered[dst].push(model[dst].pop_front().unwrap()); }
                    }
                }
                prop_assert_eq!(b.len(), model.iter().map(VecDeque::len).sum::<usize>());
            }
            prop_assert_eq!(delivered, expect_delivered);
        }
    }
}
