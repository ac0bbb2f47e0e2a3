// SPDX-License-Identifier: GPL-2.0
//! How a session of ours ends: flushed (by us, for a waiter, at close), gone (the TPM ended
//! it), or abandoned (its client saved it and closed its file).

use super::super::error::RmError;
use super::super::rm::tpm_io::{flush_done, Io};
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::registry::same_session;
use super::tombstone::Tombstone;
use super::{Grant, Sessions};

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
        if end == End::Flush {
            // Done, or another TPM error: a real TPM fails the flush of a session we hold
            // only when it is gone already (a handle error, or a reset). Otherwise it is
            // still there: the slot is granted when the queued flush goes through.
            let r = io.flush(tpm, h);
            if !flush_done(&r) {
                self.queue_session_flush(h, entry);
                return r.map(|_| ());
            }
        }
        self.grant(grant);
        Ok(())
    }

    /// Evicts session `h`: its owner (if any) gets a tombstone, the slot goes to `grant`.
    pub(crate) fn evict(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        h: u32,
        grant: Grant,
    ) -> Result<(), RmError> {
        let known = self
            .registry
            .get(h)
            .and_then(|e| Some((e.owner?, e.handle)));
        if let Some((owner, v)) = known {
            // At most one per space and number, so they stay bounded. Without memory for
            // it, the owner gets the plain unknown-handle answer.
            let dup = self
                .tombstones
                .iter()
                .any(|t| t.owner == owner && same_session(t.handle, v));
            if !dup {
                let _ = self.tombstones.try_push(Tombstone { owner, handle: v });
            }
        }
        bump(&mut io.stats.evictions);
        self.end_session(io, tpm, h, End::Flush, grant)
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

    /// Flushes the oldest abandoned sessions while there are more than `max`.
    pub(crate) fn trim_abandoned(&mut self, io: &mut Io, tpm: &mut dyn Tpm, max: usize) {
        while self.registry.abandoned_count() > max {
            let Some(h) = self.registry.oldest_abandoned() else {
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
            let client_saved = self
                .registry
                .get(h)
                .is_some_and(|e| matches!(e.state, super::registry::SessionState::SavedByClient));
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
