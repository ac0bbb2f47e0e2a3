// SPDX-License-Identifier: GPL-2.0
//! How a session of ours ends: flushed (by us, for a waiter, at close), gone (the TPM ended
//! it), or abandoned (its client saved it and closed its file).

use super::super::error::RmError;
use super::super::event::{Event, EvictReason};
use super::super::rm::tpm_io::{Flushed, Io};
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::registry::same_session;
use super::tombstone::Tombstone;
use super::{Grant, Sessions};

/// Why a session is evicted (for its trace event).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// For a waiter of this space (0: a waiter without a space).
    Waiter(u64),
    /// To repair a context gap.
    Gap,
    /// Its owner's command succeeded, but its context could not be saved after it.
    Unsaved,
    /// The TPM loaded it for a space that may not have it (see `Txn::refuse_loaded`).
    Refused,
}

/// How a session of ours ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The TPM ended it already (continueSession = 0, a handle error on save).
    Gone,
    /// Flush it.
    Flush,
}

impl Sessions {
    /// Ends session `h` of ours: forgets it, flushes it if needed and hands the slot to
    /// `grant`. A flush that fails on the transport is queued (the slot is granted when it
    /// is retried) and its error returned.
    pub(crate) fn end_session(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        h: u32,
        end: End,
        grant: Grant,
    ) -> Result<(), RmError> {
        let entry = self.registry.remove(h);
        let mut r = Ok(());
        if end == End::Flush {
            // Done, or another TPM error: a real TPM fails the flush of a session we hold
            // only when it is gone already (a handle error, or a reset). Otherwise it is
            // still there: the slot is granted when the queued flush goes through.
            let (verdict, sent) = io.flush_settled(tpm, h);
            match verdict {
                Flushed::Done => r = sent,
                Flushed::NotExecuted => {
                    self.queue_session_flush(h, entry);
                    return sent;
                }
                Flushed::Unknown => {
                    self.pending.add(verdict, h);
                    return sent;
                }
            }
        }
        self.grant(grant);
        r
    }

    /// Evicts session `h` (for the reason `why`): its owner (if any) gets a tombstone, the
    /// slot goes to `grant`.
    pub(crate) fn evict(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        h: u32,
        grant: Grant,
        why: Why,
    ) -> Result<(), RmError> {
        let known = self
            .registry
            .get(h)
            .and_then(|e| Some((e.owner?, e.handle)));
        let (waiter, reason) = match why {
            Why::Waiter(space) => (space, EvictReason::Waiter),
            Why::Gap => (0, EvictReason::ContextGap),
            Why::Unsaved => (0, EvictReason::Unsaved),
            Why::Refused => (0, EvictReason::RefusedLoad),
        };
        self.events.record(Event::Evict {
            handle: h,
            victim: known.map_or(0, |k| k.0),
            waiter,
            reason,
        });
        if let Some((owner, v)) = known {
            self.evicted.bump(owner);
            // At most one per space and number, so they stay bounded. Without memory for
            // it, the owner gets the plain unknown-handle answer.
            let dup = self
                .tombstones
                .iter()
                .any(|t| t.owner == owner && same_session(t.handle, v));
            if !dup
                && self
                    .tombstones
                    .try_push(Tombstone { owner, handle: v })
                    .is_ok()
            {
                self.note_owed(owner);
            }
        }
        bump(&mut io.stats.evictions);
        self.end_session(io, tpm, h, End::Flush, grant)
    }

    /// Evicts every session of space `victim` for waiter `waiter` of space `space`, at
    /// `now`: the first slot is the waiter's (unless it holds a reservation already), the
    /// next ones -- up to what `space` held at once before, beyond what it holds and has
    /// reserved now -- are reserved for `space` (a gang grant), the rest go to the queue.
    /// Returns the first transport error (those flushes are queued).
    pub(crate) fn evict_space(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        victim: u64,
        waiter: u64,
        space: Option<u64>,
        now: u64,
    ) -> Result<(), RmError> {
        let mut r = Ok(());
        while let Some(h) = self.registry.find_owned(victim) {
            let grant = self.next_grant(waiter, space, now);
            let e = self.evict(io, tpm, h, grant, Why::Waiter(space.unwrap_or(0)));
            if r.is_ok() {
                r = e;
            }
        }
        self.sched.evicted(victim, now);
        r
    }

    /// Where a slot freed for waiter `waiter` of `space` goes: to the waiter if it holds no
    /// reservation, else to its space while the space needs more (see [`Self::gang_need`]),
    /// else to the queue -- unless no waiter ahead needs it and the space asks for more
    /// again in the same turn (it took back its kept queue place): then it is still the
    /// space's, but only for a retry interval ([`Grant::Spare`]).
    ///
    /// The waiter heads the queue, and a space that grows past what it held at once (the
    /// hog that asks for 60 sessions one by one) comes back for the rest of its victim at
    /// once. Handed to the queue instead, that rest went to the spaces just evicted for
    /// it, which the hog evicted again a SESSION_TIMEOUT later, for one slot each time:
    /// it took 5 s to gather its sessions while the others starved (gaps of 6.7 s in the
    /// simulation, 7.7 s in the guest, against 2.6-3.1 s now). On a first wait of the turn
    /// the rest goes to the queue at once: at the go of 32 clients x 3, every space holds
    /// two and waits for a third, and kept for the evictor for nothing the rest cost the
    /// mixed workload more evictions (1,200 against 990 in a 60 s simulation) and evenness
    /// (Jain 0.98 against 0.99).
    pub(crate) fn next_grant(&self, waiter: u64, space: Option<u64>, now: u64) -> Grant {
        if !self.sched.is_reserved(waiter) {
            return Grant::Waiter(waiter);
        }
        match space {
            Some(s) if self.gang_need(waiter, s) > 0 => Grant::Gang(s, now),
            Some(_) if self.needed_ahead(waiter) || !self.sched.is_again(waiter) => Grant::Queue,
            Some(s) => Grant::Spare(s, now),
            _ => Grant::Queue,
        }
    }

    /// Whether a waiter ahead of `waiter` in the queue still needs a slot for its space
    /// (the one [`Self::slot_freed`] would give a slot to).
    fn needed_ahead(&self, waiter: u64) -> bool {
        self.sched
            .first_waiter(|id, space, reserved| !reserved || self.gang_need(id, space) > 0)
            .is_some_and(|(id, _, _)| id < waiter)
    }

    /// How many more slots `space` (waiter `waiter`) needs to have again as many sessions
    /// as it held at once: its peak, minus what it holds, its gang reservations and its
    /// waiter's reservation.
    pub(crate) fn gang_need(&self, waiter: u64, space: u64) -> usize {
        self.sched
            .peak(space)
            .saturating_sub(self.registry.count_owned(space))
            .saturating_sub(self.sched.gang(space))
            .saturating_sub(usize::from(self.sched.is_reserved(waiter)))
    }

    /// Abandons session `h` (saved by its client, whose file is being closed).
    pub(crate) fn abandon(&mut self, h: u32) {
        self.abandon_tick = self.abandon_tick.wrapping_add(1);
        let tick = self.abandon_tick;
        if let Some(e) = self.registry.get_mut(h) {
            e.owner = None;
            e.abandoned_at = tick;
        }
    }

    /// Flushes abandoned sessions while there are more than `max`: each time the oldest of
    /// the uid that holds the most (see [`super::registry::SessionRegistry::trim_victim`]),
    /// so that one user abandoning many sessions pushes out its own, not another user's.
    pub(crate) fn trim_abandoned(&mut self, io: &mut Io, tpm: &mut dyn Tpm, max: usize) {
        while self.registry.abandoned_count() > max {
            let Some(h) = self.registry.trim_victim() else {
                break;
            };
            // A transport failure queues the flush; the entry is gone from the list either way.
            let _ = self.end_session(io, tpm, h, End::Flush, Grant::Queue);
        }
    }

    /// Ends every session of space `owner` at its close: abandons those its client saved
    /// itself (if `keep`), flushes the others, then trims the abandoned list to
    /// `max_abandoned`.
    pub(crate) fn close_space(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        owner: u64,
        max_abandoned: usize,
    ) {
        let keep = max_abandoned > 0;
        self.drop_tombstones(owner);
        while let Some(h) = self.registry.find_owned(owner) {
            let client_saved = self.registry.get(h).is_some_and(|e| {
                matches!(e.state, super::registry::SessionState::SavedByClient(_))
            });
            if client_saved && keep {
                self.abandon(h);
            } else {
                // A TPM error means it is gone already; a transport error queues the flush.
                let _ = self.end_session(io, tpm, h, End::Flush, Grant::Queue);
            }
        }
        self.trim_abandoned(io, tpm, max_abandoned);
    }
}
