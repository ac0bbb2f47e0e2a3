// SPDX-License-Identifier: GPL-2.0
//! Stage 1, admit: everything decided before anything of the command is sent. Framing and
//! the command table, the answers owed for evicted sessions (tombstones), ownership of every
//! handle and session the command names, the per-space limits, and the FIFO gate and the
//! budget for new session slots. An admitted command has its sessions rewritten to their
//! TPM handles in the work buffer.

use core::ops::ControlFlow;

use super::super::capability::{write_handles_response, CapabilityRequest};
use super::super::codec::get_u32;
use super::super::command::{Command, CommandHeader, FramingError};
use super::super::constants::*;
use super::super::context::parse_context;
use super::super::error::RmError;
use super::super::platform::Vec;
use super::super::space::Space;
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::kind::loaded_session;
use super::wait::Outcome;
use super::{pos, synth, synth_rm, Rm};

/// Where an admitted command goes next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The general pipeline: load, transmit, map the response, commit.
    Pipeline,
    /// TPM2_FlushContext, whose handle is a parameter: see [`Rm::flush_context`].
    FlushContext,
}

/// A command that passed admission.
pub(super) struct Admitted {
    pub(super) command: Command,
    pub(super) route: Route,
}

impl Rm {
    /// Stage 1: admits `cmd` for `space`, or answers it (`Break`) without sending anything.
    ///
    /// # Errors
    /// [`RmError::NotInitialized`], [`RmError::BufferTooSmall`], [`RmError::TooBig`],
    /// [`RmError::InvalidCommand`] (malformed, or a transient handle not in the space),
    /// [`RmError::OutOfMemory`].
    pub(super) fn admit(
        &mut self,
        space: &Space,
        tpm: &mut dyn Tpm,
        ticket: Option<u64>,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome, Admitted>, RmError> {
        if self.cc.is_empty() {
            return Err(RmError::NotInitialized);
        }
        if rsp.len() < TPM_BUFSIZE {
            return Err(RmError::BufferTooSmall);
        }
        if cmd.len() > TPM_BUFSIZE {
            return Err(RmError::TooBig);
        }
        let header = CommandHeader::parse(cmd).map_err(|_| RmError::InvalidCommand)?;
        let Some(attrs) = self.cc.lookup(header.cc) else {
            return answer(synth_rm(rsp, &mut self.io.stats, TPM_RC_COMMAND_CODE));
        };
        let command = match Command::parse(cmd, attrs) {
            Ok(c) => c,
            // As /dev/tpmrm0, which leaves the tag to the TPM: the TPM's own answer.
            Err(FramingError::BadTag) => {
                return answer(synth(rsp, &mut self.io.stats, TPM_RC_BAD_TAG))
            }
            Err(_) => return Err(RmError::InvalidCommand),
        };
        let owner = space.id();
        // Sessions this space lost to an eviction: its first reference to one is answered.
        if let Some(n) = self.owed_answer(owner, &command, cmd, rsp) {
            return answer(n);
        }
        // Queued flushes first: they may free slots the FIFO gate below hands out.
        self.st.retry_pending(&mut self.io, tpm);

        // Ownership of every handle and session named.
        for (i, &h) in command.handles().iter().enumerate() {
            if is_transient_handle(h) && space.object(h).is_none() {
                return Err(RmError::InvalidCommand);
            }
            if is_session_handle(h) && self.st.registry.resolve(h, owner).is_none() {
                return answer(synth_rm(
                    rsp,
                    &mut self.io.stats,
                    rc_handle_at_handle(pos(i)),
                ));
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            if is_session_handle(s.handle) && self.st.registry.resolve(s.handle, owner).is_none() {
                return answer(synth_rm(
                    rsp,
                    &mut self.io.stats,
                    rc_handle_at_session(pos(i)),
                ));
            }
        }

        // Per-space limits, before the TPM creates anything (an answer after the fact would
        // come after the TPM rolled the nonces of the command's sessions), and before the
        // FIFO gate and the budget: a space at its limit is refused at once, not after
        // waiting SESSION_TIMEOUT and evicting another space (issue 20, item 5).
        if attrs.r_handle() {
            let new_session = header.cc == TPM_CC_START_AUTH_SESSION
                || loaded_session(&command, cmd)
                    .is_some_and(|h| self.st.registry.resolve(h, owner).is_none());
            let is_session_load =
                header.cc == TPM_CC_START_AUTH_SESSION || loaded_session(&command, cmd).is_some();
            if new_session && self.st.registry.count_owned(owner) >= self.config.max_sessions {
                return answer(synth_rm(rsp, &mut self.io.stats, TPM_RC_SESSION_MEMORY));
            }
            if !is_session_load && space.objects().len() >= self.config.max_objects {
                return answer(synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY));
            }
        }

        // FIFO: a new session slot only for the head of the queue or a reservation holder.
        if header.cc == TPM_CC_START_AUTH_SESSION
            && !self.st.sched.may_take_slot(ticket, owner)
            && !self.st.sched.gave_up(ticket)
        {
            return Ok(ControlFlow::Break(Outcome::Exhausted { rc: None }));
        }

        // Headroom: tpmrs never holds more than its budget of the TPM's session slots. At
        // the budget a new session waits like one the TPM refused, and a waiter that gave
        // up gets the answer the TPM would give when full.
        if header.cc == TPM_CC_START_AUTH_SESSION && self.at_session_budget() {
            if self.st.sched.gave_up(ticket) {
                return answer(synth(rsp, &mut self.io.stats, TPM_RC_SESSION_HANDLES));
            }
            return Ok(ControlFlow::Break(Outcome::Exhausted {
                rc: Some(TPM_RC_SESSION_HANDLES),
            }));
        }

        // Sessions are forwarded in the form the client used (either form names one).
        self.work.clear();
        self.work.try_extend_from_slice(cmd)?;

        let route = match header.cc {
            TPM_CC_FLUSH_CONTEXT => Route::FlushContext,
            TPM_CC_GET_CAPABILITY => {
                let Ok(req) = CapabilityRequest::parse(cmd, command.params_offset()) else {
                    return Ok(ControlFlow::Continue(Admitted {
                        command,
                        route: Route::Pipeline,
                    }));
                };
                let ht = handle_type(req.property);
                let rewritten = req.capability == TPM_CAP_HANDLES
                    && matches!(
                        ht,
                        TPM_HT_TRANSIENT | TPM_HT_LOADED_SESSION | TPM_HT_SAVED_SESSION
                    );
                if rewritten && header.tag != TPM_ST_NO_SESSIONS {
                    // The list is the space's, not the TPM's: a response HMAC or audit
                    // digest over it cannot be right. Refused before anything is sent, so
                    // the session stays as it was.
                    return answer(synth_rm(rsp, &mut self.io.stats, TPM_RC_AUTH_CONTEXT));
                }
                if rewritten && ht == TPM_HT_TRANSIENT {
                    return answer(self.list_transient(space, req, rsp));
                }
                Route::Pipeline
            }
            TPM_CC_CONTEXT_LOAD => {
                // A session blob a client saved may be loaded by a space of the same uid, or
                // by root (abandoned, or handed over by another open file, whose session it
                // then becomes). Another space's session may not be, nor one we are flushing;
                // but the answer must not tell which numbers others hold. Only the exact,
                // latest blob of a session loads (its integrity HMAC covers sequence, handle
                // and contents; a session's sequence number is replay-protected), and only a
                // client-saved session has one outside tpmrs: refused here if the blob is
                // that one (its holder knows the number); anything else goes to the TPM,
                // which refuses it as it refuses a blob of a number no one holds. What the
                // TPM loads all the same is not handed over (`Txn::refuse_loaded`).
                if let Some(h) = loaded_session(&command, cmd) {
                    let params = cmd.get(command.params_offset()..).unwrap_or(&[]);
                    let context = parse_context(params)
                        .ok()
                        .and_then(|c| params.get(..c.len))
                        .unwrap_or(&[]);
                    if self.st.registry.get(h).is_some_and(|e| {
                        e.owner != Some(owner)
                            && !e.shared_with(space.uid())
                            && e.is_client_blob(context)
                    }) {
                        return answer(synth_rm(
                            rsp,
                            &mut self.io.stats,
                            rc_handle_at_parameter(1),
                        ));
                    }
                }
                Route::Pipeline
            }
            _ => Route::Pipeline,
        };
        Ok(ControlFlow::Continue(Admitted { command, route }))
    }

    /// GetCapability(TPM_CAP_HANDLES) of transient handles: the space's own, synthesized.
    fn list_transient(
        &mut self,
        space: &Space,
        req: CapabilityRequest,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let objs = space.objects();
        let mut handles: Vec<u32> = Vec::try_with_capacity(objs.len())?;
        for o in objs {
            handles.try_push(o.vhandle)?;
        }
        bump(&mut self.io.stats.synthesized_responses);
        write_handles_response(rsp, &handles, req.property, req.property_count)
            .map_err(|_| RmError::BufferTooSmall)
    }
}

impl Rm {
    /// Answers `cmd` of `space` at once if it needs nothing of the TPM: its first reference
    /// to a session the space lost to an eviction, answered TPM_RC_EXPIRED in the RM layer
    /// (see `owed_answer`). `None`: the command needs a turn at the TPM
    /// ([`super::super::turns`]) and goes through [`Rm::step`], malformed commands
    /// included.
    ///
    /// A client that gathers its sessions again after an eviction finds them gone one
    /// command at a time. Sent through the TPM queue, each of those waited for a round of
    /// every busy space's turn (0.5 s with 20 signers on the debug kernel), and its next
    /// StartAuthSession came after its kept queue place had lapsed: it queued again at the
    /// tail, up to three times per turn for a five-session client.
    ///
    /// # Errors
    /// [`RmError::BufferTooSmall`] if `rsp` cannot hold the answer.
    pub fn answer_at_once(
        &mut self,
        space: &Space,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Option<Result<usize, RmError>> {
        if self.cc.is_empty() || rsp.len() < TPM_BUFSIZE || cmd.len() > TPM_BUFSIZE {
            return None;
        }
        let header = CommandHeader::parse(cmd).ok()?;
        let command = Command::parse(cmd, self.cc.lookup(header.cc)?).ok()?;
        let n = self.owed_answer(space.id(), &command, cmd, rsp)?;
        bump(&mut self.io.stats.client_commands);
        Some(n)
    }

    /// Calls `f` for each space that lost a session to an eviction since the last call, and
    /// so is owed an answer [`Rm::answer_at_once`] gives. The glue asks that only for the
    /// files it named: asking takes the resource manager's lock, which the TPM work holds,
    /// and every command waiting for it made the fresh-open probe of a 32 x 3 run wait
    /// 184 ms against 41 ms.
    pub fn take_owed(&mut self, f: &mut dyn FnMut(u64)) {
        self.st.take_owed(f);
    }

    /// Whether space `space_id` is still owed an answer for a session it lost.
    pub fn is_owed(&self, space_id: u64) -> bool {
        self.st.has_tombstones(space_id)
    }

    /// The answer owed to space `owner` for `command`, if it names a session the space lost
    /// to an eviction (a tombstone, used up by the answer): TPM_RC_EXPIRED in the RM layer
    /// at the handle's or session's position, or success for a FlushContext of it.
    fn owed_answer(
        &mut self,
        owner: u64,
        command: &Command,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Option<Result<usize, RmError>> {
        for (i, &h) in command.handles().iter().enumerate() {
            if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                let rc = rc_at_handle(TPM_RC_EXPIRED, pos(i));
                return Some(synth_rm(rsp, &mut self.io.stats, rc));
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            if is_session_handle(s.handle) && self.st.take_tombstone(owner, s.handle) {
                let rc = rc_at_session(TPM_RC_EXPIRED, pos(i));
                return Some(synth_rm(rsp, &mut self.io.stats, rc));
            }
        }
        if command.cc() == TPM_CC_FLUSH_CONTEXT {
            if let Some(h) = get_u32(cmd, command.params_offset()) {
                if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                    return Some(synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS));
                }
            }
        }
        None
    }
}

impl Rm {
    /// Whether tpmrs holds its whole session budget (see [`Rm::session_budget`]): every
    /// session it tracks, and those whose flush is still pending.
    pub(super) fn at_session_budget(&self) -> bool {
        let Some(budget) = self.session_budget() else {
            return false;
        };
        let pending = self
            .st
            .pending
            .handles()
            .filter(|h| is_session_handle(*h))
            .count();
        self.st.registry.len().saturating_add(pending) >= budget
    }
}

/// An answer of `n` bytes written in the RM layer: the command goes no further.
fn answer<T>(n: Result<usize, RmError>) -> Result<ControlFlow<Outcome, T>, RmError> {
    n.map(|n| ControlFlow::Break(Outcome::Response(n)))
}
