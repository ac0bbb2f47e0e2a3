// SPDX-License-Identifier: GPL-2.0
//! TPM2_FlushContext, whose flushHandle is a parameter: an object of the space is forgotten
//! without any TPM traffic (unless it is loaded between commands, as `ObjectEntry::loaded`
//! describes: then it is flushed), a session of the space is flushed in the TPM and its
//! slot handed on.

use super::super::codec::get_u32;
use super::super::command::Command;
use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::Grant;
use super::super::space::Space;
use super::super::tpm::Tpm;
use super::tpm_io::{response_code, transmit};
use super::{synth, synth_rm, Rm};

impl Rm {
    /// The FlushContext route, after admission (`work` holds the mapped command).
    ///
    /// # Errors
    /// [`RmError::InvalidCommand`] for a transient handle not in the space (as tpmrm0),
    /// [`RmError::Transport`], [`RmError::BadResponse`].
    pub(super) fn flush_context(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let Some(h) = get_u32(&self.work, command.params_offset()) else {
            return transmit(&mut self.io.stats, tpm, &self.work, rsp);
        };
        if is_transient_handle(h) {
            let Some(obj) = space.remove_object(h) else {
                return Err(RmError::InvalidCommand);
            };
            if let Some(p) = obj.loaded {
                // The object is the space's no more: a flush that does not go through is
                // settled or queued.
                let _ = self.io.flush_or_queue(tpm, &mut self.st.pending, p);
            }
            return synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS);
        }
        if !is_session_handle(h) {
            return transmit(&mut self.io.stats, tpm, &self.work, rsp);
        }
        // Either form names the session (the TPM accepts both); the client's is sent. The
        // space's own sessions, and abandoned ones, which any space may load and so flush
        // (`tpm2 flushcontext -s` flushes every saved session it is shown).
        let registry = &self.st.registry;
        let Some(h) = registry.resolve(h, space.id()).or_else(|| {
            registry
                .get(h)
                .filter(|e| e.is_abandoned())
                .map(|e| e.handle)
        }) else {
            return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
        };
        let n = transmit(&mut self.io.stats, tpm, &self.work, rsp)?;
        let rc = response_code(rsp);
        // Flushed, or gone from the TPM already (strict accounting's lazy backup): a handle
        // error about flushHandle itself (parameter 1), not about a session of the
        // authorization area.
        if rc == TPM_RC_SUCCESS || rc == rc_handle_at_parameter(1) {
            self.st.registry.remove(h);
            self.st.grant(Grant::Queue);
        }
        Ok(n)
    }
}
