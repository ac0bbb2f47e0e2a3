// SPDX-License-Identifier: GPL-2.0
//! Global session bookkeeping, shared by every space: which TPM sessions tpmrs tracks and
//! whose they are, how they end, who waits for a slot, and what a space is told when one of
//! its sessions was taken from it.
//!
//! * [`registry`]: every session created or loaded through tpmrs, its owner and state.
//! * [`scheduler`]: the FIFO wait queue, reservations and when a waiter may evict.
//! * `end`: how a session of ours ends (flushed, gone, evicted, abandoned).
//! * `flush`: FlushContexts that failed on the transport, queued and retried.
//! * `tombstone`: what an evicted session's owner is told.
//! * `gap`: repairing TPM_RC_CONTEXT_GAP by renewing the oldest saved session.
//!
//! # Rules
//!
//! * **Strict accounting.** FlushContext, continueSession = 0 and close are intercepted, so
//!   we know when one of our session slots is freed; a failed context save is the lazy
//!   backup (the session is forgotten, and flushed with a tombstone unless the TPM says it
//!   is gone; a save the TPM does not run leaves it loaded).
//! * **Continuation.** At close, a session the client saved itself (TPM2_ContextSave) is not
//!   flushed: it joins a bounded list of *abandoned* sessions (`Config::max_abandoned`; over
//!   it, the oldest of the uid that holds the most is flushed) that a space opened by the
//!   same uid (or by root) may TPM2_ContextLoad, which makes the session its own. This is
//!   what `tpm2 startauthsession -S s.ctx` followed by another process using
//!   `session:s.ctx` needs. Only the owner (or, once it loaded it, a loader) may name a
//!   session. A session its client saved, abandoned or owned by a file still open, is
//!   listed to the spaces of the same uid (and root), which may flush and load it:
//!   `tpm2 flushcontext -s` cleans up what it is shown. See
//!   [`registry::SessionEntry::shared_with`].
//! * **Global exhaustion.** When the TPM has no session slot (TPM_RC_SESSION_HANDLES or
//!   TPM_RC_SESSION_MEMORY on StartAuthSession, on a client's ContextLoad of a session or on
//!   our own load of a session), the command is undone and `Rm::execute` answers
//!   `Outcome::Exhausted`; the caller queues (see [`scheduler`] for the policy and
//!   `Rm::step` for how to drive it).
//! * **Evicted sessions.** A session flushed by force (for a waiter, to close a context gap,
//!   or because it could not be saved after its owner's command) leaves a *tombstone* in its
//!   owner's name. The owner's first reference to that
//!   handle afterwards -- in the handle area or the authorization area -- is answered, without
//!   sending anything, `TPM_RC_EXPIRED` in the resource-manager layer with the position of
//!   the handle (e.g. 0x000B01A3 for handle 1, 0x000B09A3 for session 1); a FlushContext of
//!   it is answered success. Either consumes the tombstone. This holds even if the TPM has
//!   since handed the same handle number to another space: the owner's first reference
//!   after the eviction means the evicted session, never the other space's. The number never
//!   comes back to the *same* space before it was told: see `tombstone`.
//! * **Context gap.** When a ContextSave of a session (ours or the client's, or any other
//!   command) fails with TPM_RC_CONTEXT_GAP, the oldest saved session we track is loaded and
//!   saved again (renewing its sequence number) and the command retried; a session whose
//!   blob only the client holds cannot be renewed, so it is evicted instead. Clients never see
//!   TPM_RC_CONTEXT_GAP for sessions we hold the blob of.
//!
//!   GetCapability(TPM_PT_CONTEXT_GAP_MAX) is passed through unchanged (tpm2-abrmd reports
//!   UINT32_MAX instead): the TPM's value is still the truth for blobs a client holds itself,
//!   which we do not renew but evict, and rewriting TPM_CAP_TPM_PROPERTIES would add a parser
//!   for no client we know of that acts on it.

mod end;
mod flush;
mod gap;
pub mod registry;
pub mod scheduler;
mod tombstone;

use super::context::parse_context;
use super::error::RmError;
use super::event::EventLog;
use super::platform::Vec;
use super::stats::OwnerCounts;
use registry::SessionRegistry;
use scheduler::Scheduler;
use tombstone::Tombstone;

pub(crate) use super::rm::tpm_io::FlushQueue;
pub(crate) use end::{End, Why};
pub(crate) use gap::MAX_GAP_REPAIRS;

/// Where a freed session slot goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// To the oldest waiter without a reservation (if any).
    Queue,
    /// To this waiter (it evicted for it).
    Waiter(u64),
    /// To this space as a gang reservation (at this time), beyond its waiter's slot.
    Gang(u64, u64),
    /// To this space as a short-lived reservation beyond what it held at once (at this time).
    Spare(u64, u64),
}

/// Global session bookkeeping, shared by every space.
pub(crate) struct Sessions {
    pub(crate) registry: SessionRegistry,
    /// FlushContexts of ours not known to be done.
    pub(crate) pending: FlushQueue,
    tombstones: Vec<Tombstone>,
    /// Spaces that got a tombstone since the glue last asked ([`super::Rm::take_owed`]).
    newly_owed: Vec<u64>,
    pub(crate) sched: Scheduler,
    next_session_id: u64,
    abandon_tick: u64,
    /// Sessions evicted from each open space, for the per-client view.
    pub(crate) evicted: OwnerCounts,
    /// The resource manager's clock at its last call (for gang reservations made by a freed
    /// slot, whose callers do not all know the time).
    now: u64,
    /// When a slot of ours was last freed for the queue (a client's flush, a closed space,
    /// a reservation left unused): the queue moves without evictions.
    pub(crate) last_freed_ns: u64,
    /// What happened since the glue last drained it, for its trace events.
    pub(crate) events: EventLog,
    /// The longest session context tpmrs has saved (0: none yet): the size of a resident
    /// session's spare allocation (`SessionEntry::spare`).
    pub(crate) blob_len: usize,
}

impl Sessions {
    /// Empty bookkeeping.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`].
    pub(crate) fn new() -> Result<Self, RmError> {
        Ok(Sessions {
            registry: SessionRegistry::new(),
            pending: FlushQueue::new(),
            tombstones: Vec::new(),
            newly_owed: Vec::new(),
            sched: Scheduler::new(),
            next_session_id: 1,
            abandon_tick: 0,
            evicted: OwnerCounts::new(),
            now: 0,
            last_freed_ns: 0,
            events: EventLog::new()?,
            blob_len: 0,
        })
    }

    /// A new session id (creation order).
    pub(crate) fn new_session_id(&mut self) -> u64 {
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        id
    }

    /// Hands a freed slot to `g`.
    pub(crate) fn grant(&mut self, g: Grant) {
        match g {
            Grant::Queue => self.slot_freed(),
            Grant::Waiter(id) => self.sched.reserve(id),
            Grant::Gang(space, now) => {
                if !self.sched.add_gang(space, now) {
                    self.slot_freed();
                }
            }
            Grant::Spare(space, now) => {
                if !self.sched.add_spare(space, now) {
                    self.slot_freed();
                }
            }
        }
    }

    /// Gang reservations and kept queue places unused at `now` lapse; the slots go to the
    /// queue.
    pub(crate) fn expire(&mut self, now: u64) {
        self.now = self.now.max(now);
        for _ in 0..self.sched.expire(now) {
            self.slot_freed();
        }
    }

    /// A slot of ours was freed for the queue. It goes to the first waiter in FIFO order
    /// whose space still needs one: as the waiter's reservation if it holds none, else as a
    /// gang reservation of its space (up to as many sessions as the space held at once). So
    /// the space at the head gets all it needs before the next one gets anything: slots
    /// handed out one per space would leave every space short of its set, each waiting
    /// SESSION_TIMEOUT again for the rest.
    pub(crate) fn slot_freed(&mut self) {
        self.last_freed_ns = self.now;
        let target = self
            .sched
            .first_waiter(|id, space, reserved| !reserved || self.gang_need(id, space) > 0);
        match target {
            Some((id, _, false)) => self.sched.reserve(id),
            Some((_, space, true)) if !self.sched.add_gang(space, self.now) => {
                self.sched.slot_freed()
            }
            _ => {}
        }
    }

    /// A slot of ours was freed that space `owner` cannot use now (its number is one the
    /// space holds dead): it goes as [`Self::slot_freed`] gives a slot, to the first waiter
    /// of another space that needs one. Given to `owner`, its command would run again at
    /// once and find the same number.
    pub(crate) fn slot_freed_for_others(&mut self, owner: u64) {
        self.last_freed_ns = self.now;
        let target = self.sched.first_waiter(|id, space, reserved| {
            space != owner && (!reserved || self.gang_need(id, space) > 0)
        });
        match target {
            Some((id, _, false)) => self.sched.reserve(id),
            Some((_, space, true)) => {
                // A gang without room for it: the slot stays unreserved, for the head.
                let _ = self.sched.add_gang(space, self.now);
            }
            None => {}
        }
    }

    /// Tombstones not consumed yet (a gauge).
    pub(crate) fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }
}

/// `sequence` of a TPMS_CONTEXT.
pub(crate) fn blob_seq(blob: &[u8]) -> Option<u64> {
    parse_context(blob).ok().map(|i| i.sequence)
}
