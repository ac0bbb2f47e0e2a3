// SPDX-License-Identifier: GPL-2.0
//! Stage 4, map the response: what a successful command changed. Sessions the TPM ended
//! (continueSession = 0), objects it flushed itself, a session the client saved, the
//! handles a GetCapability lists, and new objects and sessions, which become the space's
//! (objects saved and given a virtual handle, sessions registered).

use super::super::capability::filter_handles_response;
use super::super::codec::put_u32;
use super::super::command::Command;
use super::super::constants::*;
use super::super::context::{context_save_blob, parse_context};
use super::super::error::RmError;
use super::super::platform::Vec;
use super::super::session::registry::{same_session, SessionEntry, SessionState};
use super::super::session::{blob_seq, End, Grant};
use super::super::space::InsertError;
use super::super::stats::bump;
use super::tpm_io::{response_code, Reply};
use super::txn::Txn;
use super::{synth, synth_rm};

/// Whether `cc` changes the state of the sequence object it uses.
pub(super) fn updates_sequence(cc: u32) -> bool {
    matches!(
        cc,
        TPM_CC_SEQUENCE_UPDATE | TPM_CC_SEQUENCE_COMPLETE | TPM_CC_EVENT_SEQUENCE_COMPLETE
    )
}

/// Whether `cc` creates a sequence object.
fn starts_sequence(cc: u32) -> bool {
    matches!(cc, TPM_CC_HASH_SEQUENCE_START | TPM_CC_HMAC_START)
}

/// The session handle saved in the context a TPM2_ContextLoad command loads, if it is one.
pub(super) fn loaded_session(command: &Command, cmd: &[u8]) -> Option<u32> {
    if command.cc() != TPM_CC_CONTEXT_LOAD {
        return None;
    }
    let ctx = parse_context(cmd.get(command.params_offset()..)?).ok()?;
    is_session_handle(ctx.saved_handle).then_some(ctx.saved_handle)
}

impl Txn<'_> {
    /// Stage 4: maps the response of `n` bytes in `rsp` to the command `command` (as sent:
    /// `work`). Returns the length of the response for the client.
    ///
    /// # Errors
    /// [`RmError::BadResponse`], [`RmError::OutOfMemory`], [`RmError::Transport`].
    pub(super) fn map_response(
        &mut self,
        command: &Command,
        work: &[u8],
        rsp: &mut [u8],
        n: usize,
    ) -> Result<usize, RmError> {
        if response_code(rsp) != TPM_RC_SUCCESS {
            return Ok(n);
        }
        let cc = command.cc();
        let attrs = command.attrs;
        if attrs.flushed() {
            if let Some(&h) = command.handles().first() {
                if is_transient_handle(h) {
                    self.loaded.mark_flushed(h);
                    self.space.remove_object(h);
                }
            }
        }
        for s in command.sessions() {
            if is_session_handle(s.handle)
                && s.attributes & TPMA_SESSION_CONTINUESESSION == 0
                && self.st.registry.get(s.handle).is_some()
            {
                // The TPM ended it.
                self.st
                    .end_session(self.io, self.tpm, s.handle, End::Gone, Grant::Queue)?;
            }
        }
        if cc == TPM_CC_CONTEXT_SAVE {
            if let Some(&h) = command.handles().first() {
                if let Some(e) = self.st.registry.get_mut(h) {
                    e.state = SessionState::SavedByClient;
                    e.saved_seq = rsp
                        .get(..n)
                        .and_then(|r| context_save_blob(r).ok())
                        .and_then(blob_seq);
                }
            }
        }
        if cc == TPM_CC_GET_CAPABILITY {
            let owner = self.space.id();
            let registry = &self.st.registry;
            return filter_handles_response(rsp, n, |h| {
                if is_transient_handle(h) {
                    None
                } else if is_session_handle(h) {
                    registry.client_number(h, owner)
                } else {
                    Some(h)
                }
            })
            .map_err(|_| RmError::BadResponse);
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
                return self.adopt_object(cc, h, client_blob, rsp, n);
            }
            if is_session_handle(h) {
                return self.adopt_session(cc, h, rsp, n);
            }
        }
        Ok(n)
    }

    /// A successful command returned the transient object `phandle`: save it as a new object
    /// of the space and patch its virtual handle into the response. `client_blob` is the
    /// context the client loaded (TPM2_ContextLoad), which can be kept as it is.
    fn adopt_object(
        &mut self,
        cc: u32,
        phandle: u32,
        client_blob: Option<&[u8]>,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        self.st.handed_out(phandle);
        let pending = &mut self.st.pending;
        if self.space.objects().len() >= self.config.max_objects {
            self.io.flush_or_queue(self.tpm, pending, phandle)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY);
        }
        let (blob, sequence) = match client_blob {
            Some(b) => {
                let mut v = match Vec::try_with_capacity(b.len()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, pending, phandle)?;
                        return Err(e.into());
                    }
                };
                if v.try_extend_from_slice(b).is_err() {
                    self.io.flush_or_queue(self.tpm, pending, phandle)?;
                    return Err(RmError::OutOfMemory);
                }
                let seq =
                    parse_context(b).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE);
                (v, seq)
            }
            None => {
                let saved = match self.io.context_save(self.tpm, phandle) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = pending.try_push(phandle);
                        return Err(e);
                    }
                };
                if let Reply::Rc(rc) = saved {
                    self.io.flush_or_queue(self.tpm, pending, phandle)?;
                    return synth(rsp, &mut self.io.stats, rc);
                }
                let v = match self.io.saved_blob() {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, pending, phandle)?;
                        return Err(e);
                    }
                };
                let seq = starts_sequence(cc)
                    || parse_context(&v).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE);
                (v, seq)
            }
        };
        self.io.flush_or_queue(self.tpm, pending, phandle)?;
        match self
            .space
            .insert_object(blob, sequence, self.config.max_objects)
        {
            Ok(vhandle) => {
                put_u32(rsp, TPM_HEADER_SIZE, vhandle).map_err(|_| RmError::BadResponse)?;
                Ok(len)
            }
            Err(InsertError::Full) => synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY),
            Err(InsertError::OutOfMemory) => Err(RmError::OutOfMemory),
        }
    }

    /// A successful command (StartAuthSession, ContextLoad) returned the session `handle`:
    /// register it as this space's. A ContextLoad of an abandoned session is a continuation:
    /// the session becomes this space's, protected from eviction for a new SESSION_TIMEOUT.
    fn adopt_session(
        &mut self,
        cc: u32,
        handle: u32,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        let owner = self.space.id();
        self.st.handed_out(handle);
        let others = self
            .st
            .registry
            .entries()
            .iter()
            .filter(|e| e.owner == Some(owner) && !same_session(e.handle, handle))
            .count();
        if others >= self.config.max_sessions {
            self.st
                .end_session(self.io, self.tpm, handle, End::Flush, Grant::Queue)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_SESSION_MEMORY);
        }
        let reload = cc == TPM_CC_CONTEXT_LOAD;
        let previous = self.st.registry.get(handle);
        let (id, created_ns, owned_since_ns, continued, number) = match previous {
            Some(e) if reload && e.owner == Some(owner) => {
                (e.id, e.created_ns, e.owned_since_ns, false, Some(e.vhandle))
            }
            Some(e) if reload && e.is_abandoned() => (e.id, e.created_ns, self.now, true, None),
            _ => (self.st.new_session_id(), self.now, self.now, false, None),
        };
        let vhandle = number.unwrap_or_else(|| self.st.number_for(owner, handle));
        let mut entry = SessionEntry::new(handle, id, owner, self.now);
        entry.vhandle = vhandle;
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
        self.loaded.sessions.add(handle);
        if vhandle != handle {
            put_u32(rsp, TPM_HEADER_SIZE, vhandle).map_err(|_| RmError::BadResponse)?;
        }
        Ok(len)
    }
}
