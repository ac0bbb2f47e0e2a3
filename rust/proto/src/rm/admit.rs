// SPDX-License-Identifier: GPL-2.0
//! Stage 1, admit: everything decided before anything of the command is sent. Framing and
//! the command table, the answers owed for evicted sessions (tombstones), ownership of every
//! handle and session the command names, and the FIFO gate for new session slots. An
//! admitted command has its sessions rewritten to their TPM handles in the work buffer.

use core::ops::ControlFlow;

use super::super::capability::{write_handles_response, CapabilityRequest};
use super::super::codec::{get_u32, put_u32};
use super::super::command::{Command, CommandHeader, FramingError};
use super::super::constants::*;
use super::super::error::RmError;
use super::super::platform::Vec;
use super::super::space::Space;
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::respond::loaded_session;
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
        // Queued flushes first: they may free slots the FIFO gate below hands out.
        self.st.retry_pending(&mut self.io, tpm);
        let owner = space.id();

        // Sessions this space lost to an eviction: its first reference to one is answered.
        for (i, &h) in command.handles().iter().enumerate() {
            if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                let rc = rc_at_handle(TPM_RC_EXPIRED, pos(i));
                return answer(synth_rm(rsp, &mut self.io.stats, rc));
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            if is_session_handle(s.handle) && self.st.take_tombstone(owner, s.handle) {
                let rc = rc_at_session(TPM_RC_EXPIRED, pos(i));
                return answer(synth_rm(rsp, &mut self.io.stats, rc));
            }
        }
        if header.cc == TPM_CC_FLUSH_CONTEXT {
            if let Some(h) = get_u32(cmd, command.params_offset()) {
                if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                    return answer(synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS));
                }
            }
        }

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

        // FIFO: a new session slot only for the head of the queue or a reservation holder.
        if header.cc == TPM_CC_START_AUTH_SESSION
            && !self.st.sched.may_take_slot(ticket)
            && !self.st.sched.gave_up(ticket)
        {
            return Ok(ControlFlow::Break(Outcome::Exhausted { rc: None }));
        }

        // From here on, sessions by their TPM handles (a client number may be an alias).
        self.work.clear();
        self.work.try_extend_from_slice(cmd)?;
        let registry = &self.st.registry;
        let command = command.map_session_handles(|v| registry.resolve(v, owner).unwrap_or(v));
        for (i, &h) in command.handles().iter().enumerate() {
            if is_session_handle(h) {
                put_u32(&mut self.work, Command::handle_offset(i), h)
                    .map_err(|_| RmError::InvalidCommand)?;
            }
        }
        for s in command.sessions() {
            if is_session_handle(s.handle) {
                put_u32(&mut self.work, s.offset, s.handle).map_err(|_| RmError::InvalidCommand)?;
            }
        }

        let route = match header.cc {
            TPM_CC_FLUSH_CONTEXT => Route::FlushContext,
            TPM_CC_GET_CAPABILITY => {
                if let Ok(req) = CapabilityRequest::parse(cmd, command.params_offset()) {
                    if req.capability == TPM_CAP_HANDLES
                        && handle_type(req.property) == TPM_HT_TRANSIENT
                        && header.tag == TPM_ST_NO_SESSIONS
                    {
                        return answer(self.list_transient(space, req, rsp));
                    }
                }
                Route::Pipeline
            }
            TPM_CC_CONTEXT_LOAD => {
                // Another space's session may not be loaded; an abandoned one may.
                if let Some(h) = loaded_session(&command, cmd) {
                    if self
                        .st
                        .registry
                        .get(h)
                        .is_some_and(|e| e.owner.is_some_and(|o| o != owner) || !e.is_live())
                    {
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

/// An answer of `n` bytes written in the RM layer: the command goes no further.
fn answer<T>(n: Result<usize, RmError>) -> Result<ControlFlow<Outcome, T>, RmError> {
    n.map(|n| ControlFlow::Break(Outcome::Response(n)))
}
