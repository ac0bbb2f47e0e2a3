// SPDX-License-Identifier: GPL-2.0
//! Stage 4, map the response: what a successful command changed. Sessions the TPM ended
//! (continueSession = 0), objects it flushed itself, a session the client saved, the
//! handles a GetCapability lists, and new objects and sessions, which become the space's
//! (objects saved and given a virtual handle, sessions registered).

use super::super::capability::{
    filter_handles_response, next_property, set_property, set_property_count,
    write_handles_response, CapabilityRequest, MAX_CAP_HANDLES,
};
use super::super::codec::put_u32;
use super::super::command::Command;
use super::super::constants::*;
use super::super::context::{context_save_blob, parse_context};
use super::super::error::RmError;
use super::super::platform::Charged;
use super::super::session::registry::{same_session, SessionEntry, SessionState};
use super::super::session::{blob_seq, End, Grant, Why};
use super::super::space::InsertError;
use super::super::stats::bump;
use super::synth_rm;
use super::tpm_io::{response_code, transmit, Saved};
use super::txn::{LoadedObject, Txn};
use super::wait::Outcome;

/// A copy of `blob`, charged to the client (the blob is an object of its space, or the
/// context its client saved of one of its sessions).
fn copy_blob(blob: &[u8]) -> Result<Charged<u8>, RmError> {
    let mut v = Charged::try_with_capacity(blob.len())?;
    v.try_extend_from_slice(blob)?;
    Ok(v)
}

/// Whether `blob` is the context of a sequence object.
fn is_sequence_blob(blob: &[u8]) -> bool {
    parse_context(blob).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE)
}

/// Whether `cc` creates a sequence object.
fn starts_sequence(cc: u32) -> bool {
    matches!(cc, TPM_CC_HASH_SEQUENCE_START | TPM_CC_HMAC_START)
}

impl Txn<'_> {
    /// Stage 4: maps the response of `n` bytes in `rsp` to the command `command` (as sent:
    /// `work`). Returns the response for the client.
    ///
    /// # Errors
    /// [`RmError::BadResponse`], [`RmError::OutOfMemory`], [`RmError::Transport`].
    pub(super) fn map_response(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
        n: usize,
    ) -> Result<Outcome, RmError> {
        if response_code(rsp) != TPM_RC_SUCCESS {
            return Ok(Outcome::Response(n));
        }
        let cc = command.cc();
        let attrs = command.attrs;
        if attrs.flushed() {
            if let Some(&h) = command.handles().get(flushed_handle(cc)) {
                if is_transient_handle(h) {
                    self.loaded.mark_flushed(h);
                    self.space.remove_object(h);
                }
            }
        }
        for s in command.sessions() {
            if !is_session_handle(s.handle) || s.attributes & TPMA_SESSION_CONTINUESESSION != 0 {
                continue;
            }
            if let Some(h) = self.st.registry.get(s.handle).map(|e| e.handle) {
                // The TPM ended it.
                self.st
                    .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)?;
            }
        }
        if cc == TPM_CC_CONTEXT_SAVE {
            if let Some(&h) = command.handles().first() {
                if let Some(e) = self.st.registry.get_mut(h) {
                    let saved = rsp.get(..n).and_then(|r| context_save_blob(r).ok());
                    e.saved_seq = saved.and_then(blob_seq);
                    // A copy, charged to the client: the only blob that can load the
                    // session again (see the admission of TPM2_ContextLoad).
                    e.state = SessionState::SavedByClient(saved.and_then(|b| copy_blob(b).ok()));
                    // The client holds its context now: nothing of ours to save it into.
                    e.spare = None;
                    e.resident = false;
                }
            }
        }
        if cc == TPM_CC_GET_CAPABILITY {
            return self
                .filter_handle_list(command, work, rsp, n)
                .map(Outcome::Response);
        }
        if attrs.r_handle() {
            let h =
                super::super::codec::get_u32(rsp, TPM_HEADER_SIZE).ok_or(RmError::BadResponse)?;
            if is_transient_handle(h) {
                let client_blob = if cc == TPM_CC_CONTEXT_LOAD {
                    let p = work.get(command.params_offset()..).unwrap_or(&[]);
                    parse_context(p).ok().and_then(|i| p.get(..i.len))
                } else {
                    None
                };
                return self
                    .adopt_object(cc, h, client_blob, rsp, n)
                    .map(Outcome::Response);
            }
            if is_session_handle(h) {
                return self.adopt_session(cc, h, rsp, n).map(Outcome::Response);
            }
        }
        Ok(Outcome::Response(n))
    }

    /// A successful command returned the transient object `phandle`: save it as a new object
    /// of the space and patch its virtual handle into the response. `client_blob` is the
    /// context the client loaded (TPM2_ContextLoad), which can be kept as it is. With
    /// `Config::resident`, an object that is not a sequence stays loaded after the save
    /// (the commit makes it resident).
    ///
    /// The TPM has run the command: its answer stands whatever happens to the save. A save
    /// that fails on the TPM's side (warnings on every try, another error, the transport)
    /// keeps the object loaded without a blob ([`ObjectEntry::loaded`]), to be saved after
    /// its next use or flushed at close; answered with a warning instead, the client would
    /// run the command again with the nonces it already used (TPM_RC_AUTH_FAIL). A flush
    /// that does not go through is settled or queued.
    ///
    /// [`ObjectEntry::loaded`]: super::super::space::ObjectEntry::loaded
    fn adopt_object(
        &mut self,
        cc: u32,
        phandle: u32,
        client_blob: Option<&[u8]>,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        self.note_handed_out(phandle);
        if self.space.objects().len() >= self.config.max_objects {
            let _ = self
                .io
                .flush_or_queue(self.tpm, &mut self.st.pending, phandle);
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY);
        }
        let (blob, sequence) = match client_blob {
            Some(b) => (Some(copy_blob(b)), is_sequence_blob(b)),
            None => match self.io.save(self.tpm, phandle) {
                Ok(Saved::Done) => {
                    let b = self.io.last_blob();
                    let seq = starts_sequence(cc) || b.is_ok_and(is_sequence_blob);
                    (Some(b.and_then(copy_blob)), seq)
                }
                // Not saved: still loaded (a save flushes nothing).
                Ok(_) | Err(_) => (None, starts_sequence(cc)),
            },
        };
        // Resident (`resident.rs`): it stays loaded, put in the table by the commit.
        let keep = self.resident && !sequence;
        let (blob, loaded) = match blob {
            Some(Ok(b)) => {
                if !keep {
                    // A flush that fails is settled or queued: the object is saved.
                    let _ = self
                        .io
                        .flush_or_queue(self.tpm, &mut self.st.pending, phandle);
                }
                (Some(b), None)
            }
            // No memory for the blob: the client's memory cgroup refused it, nothing is kept.
            Some(Err(e)) => {
                let _ = self
                    .io
                    .flush_or_queue(self.tpm, &mut self.st.pending, phandle);
                return Err(e);
            }
            None => (None, Some(phandle)),
        };
        let kept = keep && loaded.is_none();
        let inserted = self
            .space
            .insert_object(blob, loaded, sequence, self.config.max_objects);
        if inserted.is_err() && (loaded.is_some() || kept) {
            let _ = self
                .io
                .flush_or_queue(self.tpm, &mut self.st.pending, phandle);
        }
        match inserted {
            Ok(vhandle) => {
                let o = LoadedObject {
                    vhandle,
                    phandle,
                    resave: false,
                    alive: true,
                    resident: false,
                };
                if kept && !self.loaded.objects.add(o) {
                    let _ = self
                        .io
                        .flush_or_queue(self.tpm, &mut self.st.pending, phandle);
                }
                put_u32(rsp, TPM_HEADER_SIZE, vhandle).map_err(|_| RmError::BadResponse)?;
                Ok(len)
            }
            Err(InsertError::Full) => synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY),
            Err(InsertError::OutOfMemory) => Err(RmError::OutOfMemory),
        }
    }

    /// A successful command (StartAuthSession, ContextLoad) returned the session `handle`:
    /// register it as this space's. A ContextLoad of a session blob its client saved --
    /// abandoned at a close, or handed over by another open file of the same uid (or any,
    /// for root) -- makes the session this space's, protected from eviction for a new
    /// SESSION_TIMEOUT (admission checked the space's limit before sending). A session the
    /// space may not load is not handed over ([`Txn::refuse_loaded`]).
    ///
    /// A new session under a number the space still holds dead (a tombstone): the numbers
    /// were held before the command was sent (`preoccupy`), so only a waiter that gave up
    /// with more of them than tpmrs holds at once, or a TPM that does not hand out its
    /// lowest free number, gets here. The command is
    /// never sent again (the TPM rolled the nonces of the sessions it carries): the number
    /// is handed over, the space's old reference forgotten (it names the new session now),
    /// and counted (`Stats::dead_numbers_handed_over`).
    fn adopt_session(
        &mut self,
        cc: u32,
        handle: u32,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        let owner = self.space.id();
        let reload = cc == TPM_CC_CONTEXT_LOAD;
        // A session whose flush we queued: the TPM had not run it.
        let flushing = reload && self.st.pending.handles().any(|p| same_session(p, handle));
        self.st.handed_out(handle);
        if reload && (flushing || !self.may_load(handle)) {
            return self.refuse_loaded(handle, rsp);
        }
        // Its owner is told: this number is the loaded (or new) session now.
        if self.st.take_tombstone(owner, handle) && !reload {
            bump(&mut self.io.stats.dead_numbers_handed_over);
        }
        let previous = self.st.registry.get(handle);
        if previous.is_some_and(|e| e.is_resident()) {
            // The TPM never hands out a loaded session's number: this resident session was
            // lost behind tpmrs' back (`lost.rs`); its entry is replaced below.
            bump(&mut self.io.stats.resident_lost);
        }
        let previous_owner = previous.and_then(|e| e.owner);
        let (id, created_ns, owned_since_ns, continued) = match previous {
            Some(e) if reload && e.owner == Some(owner) => {
                (e.id, e.created_ns, e.owned_since_ns, false)
            }
            Some(e) if reload && e.is_live() => (e.id, e.created_ns, self.now, e.is_abandoned()),
            _ => (self.st.new_session_id(), self.now, self.now, false),
        };
        let mut entry = SessionEntry::new(handle, id, owner, self.space.uid(), self.now);
        entry.created_ns = created_ns;
        entry.owned_since_ns = owned_since_ns;
        if self.st.registry.insert(entry).is_err() {
            self.st
                .end_session(self.io, self.tpm, handle, End::Flush, Grant::Queue)?;
            return Err(RmError::OutOfMemory);
        }
        if continued {
            bump(&mut self.io.stats.continuation_hits);
        }
        if !matches!(previous_owner, Some(o) if o == owner) {
            let held = self.st.registry.count_owned(owner);
            self.st.sched.session_added(owner, self.now, held);
        }
        self.loaded.sessions.add(handle);
        Ok(len)
    }

    /// Whether the space may load session `handle` (as far as the registry knows it): its
    /// own, one it does not know, or one another file's client saved that it may take
    /// ([`SessionEntry::shared_with`]); not another space's in use, nor one we flush.
    fn may_load(&self, handle: u32) -> bool {
        self.st
            .registry
            .get(handle)
            .is_none_or(|e| e.owner == Some(self.space.id()) || e.shared_with(self.space.uid()))
    }

    /// The TPM loaded session `handle` for a space that may not have it. Admission sends
    /// such a load only if the blob is not the session's current client-saved one, and a
    /// real TPM loads nothing else, so this takes a TPM that checks less, a client-saved
    /// blob we could not keep a copy of (an allocation failure), or one whose flush we had
    /// queued. It is not handed over: an owned session is evicted (its owner's blob was
    /// used up by this load, so its owner is told TPM_RC_EXPIRED at its next use of the
    /// number, as for any eviction), any other is flushed, and the loader gets the answer
    /// admission gives for the exact blob (its holder knows the number).
    fn refuse_loaded(&mut self, handle: u32, rsp: &mut [u8]) -> Result<usize, RmError> {
        let owned = self
            .st
            .registry
            .get(handle)
            .is_some_and(|e| e.owner.is_some());
        if owned {
            self.st
                .evict(self.io, self.tpm, handle, Grant::Queue, Why::Refused)?;
        } else {
            self.st
                .end_session(self.io, self.tpm, handle, End::Flush, Grant::Queue)?;
        }
        synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1))
    }

    /// A GetCapability response: a list of transient handles or sessions keeps only the
    /// space's own (admission refused it with sessions, and answered transient lists
    /// itself). A session list filtered down to nothing while the TPM has more is asked again
    /// from where the TPM stopped, in the type the client asked for (the TPM lists saved
    /// sessions in the HMAC form, 0x02..., so `last + 1` would ask for loaded ones) and for
    /// a full page; the client gets at most the count it asked for, with moreData set if
    /// more of its own may follow. Never count 0 with moreData set (a client paging from the
    /// last handle listed could not go on), and never the TPM's unfiltered list: after
    /// [`MAX_LIST_ROUNDS`] rounds that kept nothing, an empty list with moreData clear.
    fn filter_handle_list(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
        mut n: usize,
    ) -> Result<usize, RmError> {
        let at = command.params_offset();
        let sessions = CapabilityRequest::parse(work, at).ok().filter(|r| {
            r.capability == TPM_CAP_HANDLES
                && matches!(
                    handle_type(r.property),
                    TPM_HT_LOADED_SESSION | TPM_HT_SAVED_SESSION
                )
        });
        let limit = sessions.map_or(u32::MAX, |r| r.property_count.min(MAX_CAP_HANDLES));
        let mut asked = sessions.map_or(0, |r| r.property);
        for round in 1..=MAX_LIST_ROUNDS {
            let f = filter_handles_response(rsp, n, limit, |h| self.listed(h))
                .map_err(|_| RmError::BadResponse)?;
            let Some(req) = sessions else {
                return Ok(f.len);
            };
            if f.kept > 0 || f.truncated || !f.more_data {
                return Ok(f.len);
            }
            // From the index after the last one listed; none listed (a count of 0 asked
            // for): from the same place, for a page.
            let next = match f.last {
                Some(l) => next_property(req.property, l),
                None => Some(asked),
            };
            let Some(next) = next.filter(|_| round < MAX_LIST_ROUNDS) else {
                break;
            };
            asked = next;
            set_property(work, at, next).map_err(|_| RmError::BadResponse)?;
            set_property_count(work, at, MAX_CAP_HANDLES).map_err(|_| RmError::BadResponse)?;
            n = transmit(&mut self.io.stats, self.tpm, work, rsp)?;
            if response_code(rsp) != TPM_RC_SUCCESS {
                return Ok(n);
            }
        }
        // Nothing of the space's in what the TPM listed, and no end in sight.
        let req = sessions.ok_or(RmError::BadResponse)?;
        bump(&mut self.io.stats.synthesized_responses);
        write_handles_response(rsp, &[], req.property, req.property_count)
            .map_err(|_| RmError::BadResponse)
    }

    /// How a handle the TPM lists appears in the space's list: transient handles never (the
    /// space's own are virtual), sessions if the space owns them or may load them (another
    /// file's client saved them, see [`SessionEntry::shared_with`]), anything else as it is.
    fn listed(&self, h: u32) -> Option<u32> {
        if is_transient_handle(h) {
            return None;
        }
        if !is_session_handle(h) {
            return Some(h);
        }
        let registry = &self.st.registry;
        let listed = registry.resolve(h, self.space.id()).is_some()
            || registry
                .get(h)
                .is_some_and(|e| e.shared_with(self.space.uid()));
        listed.then_some(h)
    }
}

/// The handle-area position of the object a command with the `flushed` attribute flushes:
/// the sequence of TPM2_EventSequenceComplete is its second handle (after pcrHandle).
fn flushed_handle(cc: u32) -> usize {
    usize::from(cc == TPM_CC_EVENT_SEQUENCE_COMPLETE)
}

/// Most GetCapability round trips for one filtered handle list: with full pages
/// ([`MAX_CAP_HANDLES`]) after the first, far more sessions than a TPM holds.
const MAX_LIST_ROUNDS: usize = 16;
