// SPDX-License-Identifier: GPL-2.0
//! A space's turn: when it began (its sessions are protected for SESSION_TIMEOUT from
//! there), the most sessions it held at once (what a gang grant gives back), its gang
//! reservations, its kept queue place between two requests of one turn, and when it last
//! lost its sessions to an eviction.

use super::Scheduler;

/// A space's turn: what the scheduler remembers of a space between its requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct Turn {
    pub(super) space: u64,
    /// When its current turn began: when it got a session while it held none, moved on
    /// (to at most `timeout_ns` / 2 past `first_ns`) each time a wait of the turn ends with
    /// a session granted other than from its gang reservations (see
    /// [`Scheduler::took_slot`]). Its sessions are protected from eviction for
    /// `timeout_ns` from here.
    pub(super) began_ns: u64,
    /// When it got its first session of the turn.
    pub(super) first_ns: u64,
    /// Most sessions it held at once (what it needs again after an eviction).
    pub(super) peak: usize,
    /// Slots reserved for the space itself (a gang grant), beyond its waiter's own.
    pub(super) gang: usize,
    /// When the gang reservations go back to the queue if unused.
    pub(super) gang_until_ns: u64,
    /// How long they last unused: `keep_ns`, or `spare_ns` for the rest of a victim.
    pub(super) gang_keep_ns: u64,
    /// Its kept queue place (ticket id, wait start) between two requests of one turn.
    pub(super) place: Option<(u64, u64)>,
    /// When the kept place lapses.
    pub(super) place_until_ns: u64,
    /// When every session it held was evicted, while no command of it waited: its next
    /// wait, if it begins within `timeout_ns` of that, counts from there.
    pub(super) evicted_ns: Option<u64>,
}

impl Scheduler {
    pub(super) fn turn(&self, space: u64) -> Option<&Turn> {
        self.turns.iter().find(|t| t.space == space)
    }

    pub(super) fn turn_mut(&mut self, space: u64) -> Option<&mut Turn> {
        self.turns.iter_mut().find(|t| t.space == space)
    }

    /// The turn of `space`, created (beginning at `now`) if it has none; `None` only if
    /// there is no memory for it (then the space is scheduled per request, as before).
    pub(super) fn turn_or_new(&mut self, space: u64, now: u64) -> Option<&mut Turn> {
        if self.turn(space).is_none() {
            self.turns
                .try_push(Turn {
                    space,
                    began_ns: now,
                    first_ns: now,
                    peak: 0,
                    gang: 0,
                    gang_until_ns: 0,
                    gang_keep_ns: 0,
                    place: None,
                    place_until_ns: 0,
                    evicted_ns: None,
                })
                .ok()?;
        }
        self.turn_mut(space)
    }

    /// Space `space` got a session at `now` and holds `held` now: a turn begins if it held
    /// none before; its peak grows.
    pub fn session_added(&mut self, space: u64, now: u64, held: usize) {
        if let Some(t) = self.turn_or_new(space, now) {
            if held <= 1 {
                t.began_ns = now;
                t.first_ns = now;
            }
            t.peak = t.peak.max(held);
        }
    }

    /// When the current turn of `space` began, if known.
    pub fn turn_began(&self, space: u64) -> Option<u64> {
        self.turn(space).map(|t| t.began_ns)
    }

    /// Most sessions `space` held at once.
    pub fn peak(&self, space: u64) -> usize {
        self.turn(space).map_or(0, |t| t.peak)
    }

    /// Slots reserved for `space` as a gang.
    pub fn gang(&self, space: u64) -> usize {
        self.turn(space).map_or(0, |t| t.gang)
    }

    /// Reserves one freed slot for `space` (a gang grant) until `now + keep_ns`. Returns
    /// false if there is no memory to record it (then hand the slot to the queue).
    pub fn add_gang(&mut self, space: u64, now: u64) -> bool {
        self.add_gang_for(space, now, self.keep_ns)
    }

    /// Reserves one freed slot for `space` beyond what it held at once (the rest of a
    /// victim space its waiter did not need) until `now + spare_ns`: a space that grows
    /// comes back for it at once, one that does not gives it back to the queue soon.
    /// Returns false if there is no memory to record it.
    pub fn add_spare(&mut self, space: u64, now: u64) -> bool {
        self.add_gang_for(space, now, self.spare_ns)
    }

    fn add_gang_for(&mut self, space: u64, now: u64, keep: u64) -> bool {
        let until = now.saturating_add(keep);
        match self.turn_or_new(space, now) {
            Some(t) => {
                if t.gang == 0 || t.gang_until_ns < until {
                    t.gang_until_ns = until;
                }
                t.gang_keep_ns = if t.gang == 0 {
                    keep
                } else {
                    t.gang_keep_ns.max(keep)
                };
                t.gang = t.gang.saturating_add(1);
                self.wake_space(space);
                true
            }
            None => false,
        }
    }

    /// Lapses kept places and gang reservations unused at `now`; returns how many gang
    /// slots go back to the queue (hand each to [`Scheduler::slot_freed`]).
    pub fn expire(&mut self, now: u64) -> usize {
        let mut freed = 0usize;
        for t in self.turns.iter_mut() {
            if t.gang > 0 && now >= t.gang_until_ns {
                freed = freed.saturating_add(t.gang);
                t.gang = 0;
            }
            if t.place.is_some() && now >= t.place_until_ns {
                t.place = None;
            }
        }
        freed
    }

    /// The ticket id of the earliest command of `space` that waits now; `None` if none
    /// does (a kept queue place does not count: its space is between two requests).
    pub fn waiting_place(&self, space: u64) -> Option<u64> {
        self.waiters
            .iter()
            .filter(|w| w.space == space)
            .map(|w| w.id)
            .min()
    }

    /// Where `space` stands in the queue at `now`: the ticket id of its earliest waiter, or
    /// of its kept place; `None` if it does not wait.
    pub fn position(&self, space: u64, now: u64) -> Option<u64> {
        let waiting = self.waiting_place(space);
        let kept = self
            .turn(space)
            .filter(|t| now < t.place_until_ns)
            .and_then(|t| t.place)
            .map(|p| p.0);
        match (waiting, kept) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every session of `space` was evicted at `now`. Unless a command of it waits already
    /// (it keeps that ticket and clock), its next wait, if it begins within `timeout_ns`,
    /// counts from `now`: its client lost its set now, and finds out only at its next use
    /// of a session. It still queues at the tail when it asks, behind those who asked
    /// before. On the debug kernel the client found out up to a second later (32 clients'
    /// Python on two slow CPUs), and its gap paid that on top of its wait.
    pub fn evicted(&mut self, space: u64, now: u64) {
        if self.waiting_place(space).is_some() {
            return;
        }
        if let Some(t) = self.turn_or_new(space, now) {
            // Its turn is over: a place kept from it goes too.
            t.place = None;
            t.evicted_ns = Some(now);
        }
    }

    /// Waiter `id` (if any) of `space` took a session slot: its reservation is used up, or
    /// else one of its space's gang reservations. Returns whether the slot came from the
    /// queue (the command waited, or a gang reservation was used).
    /// A wait that ends this way, other than with a gang reservation, moves the start of the
    /// space's turn to `now` (by at most `timeout_ns` / 2 past its first session): a space
    /// that had to wait for the rest of its set is protected from when it has it, not from
    /// when it began to gather it.
    pub fn took_slot(&mut self, id: Option<u64>, space: u64, now: u64) -> bool {
        let timeout = self.timeout_ns;
        let waited = id.is_some_and(|id| self.contains(id));
        let mut gang = true;
        let mut queued = waited;
        if let Some(w) = id.and_then(|id| self.waiter_mut(id)) {
            gang = !core::mem::replace(&mut w.reserved, false);
        }
        if let Some(t) = self.turn_mut(space) {
            let from_gang = gang && t.gang > 0;
            if from_gang {
                queued = true;
                t.gang -= 1;
                // The rest lapses its lifetime after its last use, not after the grant: a
                // space that gathers five sessions, finding each evicted one by one, on a
                // slow kernel takes longer than that for all five.
                t.gang_until_ns = t.gang_until_ns.max(now.saturating_add(t.gang_keep_ns));
            }
            // A slot reserved for the space at its turn (a gang grant) was its own already:
            // taking it is gathering, not waiting, and moves nothing (at 256 x 3 each of 12
            // generations paid its gathering on top of T).
            if waited && !from_gang {
                t.began_ns = t
                    .began_ns
                    .max(now.min(t.first_ns.saturating_add(timeout / 2)));
            }
        }
        queued
    }
}
