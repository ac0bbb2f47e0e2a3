// SPDX-License-Identifier: GPL-2.0
//! TPM2_FlushContext, whose flushHandle is a parameter: an object of the space is forgotten
//! without any TPM traffic (unless it is loaded between commands, as `ObjectEntry::loaded`
//! describes, or resident: then it is flushed), a session of the space (or one another
//! file's client saved that the space may load, see `SessionEntry::shared_with`) is flushed
//! in the TPM and its slot handed on. A flush of a session that fails on the transport is
//! settled as tpmrs' own flushes are.

use super::super::codec::get_u32;
use super::super::command::Command;
use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::Grant;
use super::super::space::Space;
use super::super::tpm::Tpm;
use super::tpm_io::{response_code, transmit, Flushed};
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
            // Loaded between commands (its save failed, or it is resident): the object is
            // the space's no more, and a flush that does not go through is settled or queued.
            for p in obj.loaded.into_iter().chain(self.res.take(space.id(), h)) {
                let _ = self.io.flush_or_queue(tpm, &mut self.st.pending, p);
            }
            return synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS);
        }
        if !is_session_handle(h) {
            return transmit(&mut self.io.stats, tpm, &self.work, rsp);
        }
        // Either form names the session (the TPM accepts both); the client's is sent. The
        // space's own sessions, and those another file's client saved that the space may
        // load and so flush (abandoned or not, of the same uid, or any for root:
        // `tpm2 flushcontext -s` flushes every saved session it is shown).
        let registry = &self.st.registry;
        let Some(h) = registry.resolve(h, space.id()).or_else(|| {
            registry
                .get(h)
                .filter(|e| e.shared_with(space.uid()))
                .map(|e| e.handle)
        }) else {
            return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
        };
        let n = match transmit(&mut self.io.stats, tpm, &self.work, rsp) {
            Ok(n) => n,
            // Never sent: nothing happened.
            Err(e @ RmError::NotSent(_)) => return Err(e),
            // The flush may have run: settled as our own flushes are, while the chip is held.
            Err(e) if e.is_transport() => return self.settle_client_flush(tpm, h, e, rsp),
            Err(e) => return Err(e),
        };
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

    /// The client's FlushContext of its session `h` failed on the transport (`err`) after
    /// it may have reached the TPM. As for a flush of ours ([`Io::settle_flush`]): the TPM
    /// is asked at once whether the session is there, and if it is, flushed again. Gone:
    /// the registry forgets it, its slot goes to the queue and the client is answered
    /// success (what the TPM did; the response was lost). Still there after a warning:
    /// nothing changed, the client gets `err`. The TPM cannot be asked: the session is
    /// forgotten and its flush looked for later, never sent again (see `session/flush.rs`),
    /// and the client gets `err`.
    ///
    /// [`Io::settle_flush`]: super::tpm_io::Io::settle_flush
    fn settle_client_flush(
        &mut self,
        tpm: &mut dyn Tpm,
        h: u32,
        err: RmError,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        match self.io.settle_flush(tpm, h) {
            Flushed::Done => {
                self.st.registry.remove(h);
                self.st.grant(Grant::Queue);
                synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS)
            }
            Flushed::NotExecuted => Err(err),
            verdict @ Flushed::Unknown => {
                self.st.registry.remove(h);
                self.st.pending.add(verdict, h);
                Err(err)
            }
        }
    }
}
