// SPDX-License-Identifier: GPL-2.0
//! Resident contexts the TPM lost behind tpmrs' back: a TPM Reset or power loss that did not
//! go through the suspend path (`Rm::suspend`), swtpm restarted, a FlushContext through
//! /dev/tpm0, or, for sessions, through /dev/tpmrm0.
//!
//! tpmrs learns of it at the context's next use, from the TPM's answer to the client's
//! command: TPM_RC_REFERENCE_H0 + n or TPM_RC_REFERENCE_S0 + n (what the reference
//! implementation answers for a handle that is not loaded), or a format-one TPM_RC_HANDLE
//! at that position (which a TPM also gives for a handle of the wrong kind), and then the
//! TPM no longer lists the handle (one TPM2_GetCapability, two for a session: asked either
//! way, since a context wrongly forgotten would stay in the TPM for good). Those answers
//! come before the TPM looks at the authorization area: the command ran nothing, and may be
//! sent again. The TPM also hands out a resident context's number to tpmrs only if it lost
//! it: an object listed under a handle the TPM gives a new object of ours is forgotten
//! (`Txn::note_handed_out`), a session's entry is replaced (`adopt_session`). The context is
//! forgotten without a flush (its number may be someone else's by the next command); an
//! object is loaded again from its blob and the command sent again; a session cannot be
//! (only the TPM held its state): its space is told at once, as for a session whose saved
//! context no longer loads (the RM-layer TPM_RC_HANDLE at its position).
//!
//! What cannot be detected: a number freed behind tpmrs' back and handed to someone else
//! before the context's next use (a /dev/tpm0 user that flushes a resident object and loads
//! its own, a /dev/tpmrm0 user that flushes a resident session and starts its own, which the
//! TPM gives the freed number): tpmrs then sends the client's command to the other holder's
//! object or session. The kernel's own users flush what they load before they let the chip
//! go, and /dev/tpmrm0 virtualizes object handles, so for objects only raw /dev/tpm0 users
//! (root or the `tss` group) can do this; for sessions any /dev/tpmrm0 user can, which
//! `make install-close-tpmrm` prevents (`Documentation/tpmrs.rst`, "Resident contexts").

use super::super::command::Command;
use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::{End, Grant};
use super::super::stats::bump;
use super::txn::{Found, Txn};
use super::wait::Outcome;
use super::{pos, synth_rm};

/// Where an answer says a handle is wrong: the handle area or the authorization area
/// (0-based).
#[derive(Clone, Copy)]
enum At {
    Handle(usize),
    Session(usize),
}

/// The position a TPM_RC_REFERENCE_* warning or a format-one TPM_RC_HANDLE of handle or
/// session `n` names.
fn position(rc: u32) -> Option<At> {
    let index = |base: u32| usize::try_from(rc.checked_sub(base)?).ok();
    if (TPM_RC_REFERENCE_H0..=TPM_RC_REFERENCE_H6).contains(&rc) {
        return Some(At::Handle(index(TPM_RC_REFERENCE_H0)?));
    }
    if (TPM_RC_REFERENCE_S0..=TPM_RC_REFERENCE_S6).contains(&rc) {
        return Some(At::Session(index(TPM_RC_REFERENCE_S0)?));
    }
    let fmt1_handle =
        rc < 0x1000 && rc & RC_FMT1 != 0 && rc & TPM_RC_P == 0 && rc & 0x3F == TPM_RC_HANDLE & 0x3F;
    if !fmt1_handle {
        return None;
    }
    let n = usize::try_from((rc >> TPM_RC_N_SHIFT) & 0x7).ok()?;
    let i = n.checked_sub(1)?;
    Some(if rc & TPM_RC_S != 0 {
        At::Session(i)
    } else {
        At::Handle(i)
    })
}

impl Txn<'_> {
    /// Whether the answer `rc` to `command` (sent as `work`) says a context that was
    /// resident before the command is gone from the TPM, and if so deals with it (see the
    /// module documentation).
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::BadResponse`] from the reload of an object.
    pub(super) fn lost(
        &mut self,
        command: &Command,
        rc: u32,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<Found, RmError> {
        let Some(at) = position(rc) else {
            return Ok(Found::Nothing);
        };
        let named = match at {
            At::Handle(i) => command.handles().get(i).copied(),
            At::Session(i) => command.sessions().get(i).map(|s| s.handle),
        };
        let Some(h) = named else {
            return Ok(Found::Nothing);
        };
        match at {
            At::Handle(i) if is_transient_handle(h) => {
                let Some(o) = self
                    .loaded
                    .objects
                    .iter()
                    .find(|o| o.vhandle == h && o.resident)
                else {
                    return Ok(Found::Nothing);
                };
                if !self.gone(o.phandle) {
                    return Ok(Found::Nothing);
                }
                bump(&mut self.io.stats.resident_lost);
                // Forgotten, never flushed: the TPM says it does not hold it.
                self.loaded.objects.remove(o);
                Ok(match self.load_object(i, h, command.cc(), work, rsp)? {
                    core::ops::ControlFlow::Continue(()) => Found::Reloaded,
                    core::ops::ControlFlow::Break(o) => Found::Answer(o),
                })
            }
            At::Handle(i) | At::Session(i) if is_session_handle(h) => {
                let Some(s) = self.st.registry.get(h).map(|e| e.handle) else {
                    return Ok(Found::Nothing);
                };
                if !self.loaded.resident_sessions.contains(s) || !self.gone(s) {
                    return Ok(Found::Nothing);
                }
                bump(&mut self.io.stats.resident_lost);
                self.loaded.resident_sessions.remove(s);
                self.loaded.sessions.remove(s);
                self.st
                    .end_session(self.io, self.tpm, s, End::Gone, Grant::Queue)?;
                let rc = match at {
                    At::Handle(..) => rc_handle_at_handle(pos(i)),
                    At::Session(..) => rc_handle_at_session(pos(i)),
                };
                let n = synth_rm(rsp, &mut self.io.stats, rc)?;
                Ok(Found::Answer(Outcome::Response(n)))
            }
            _ => Ok(Found::Nothing),
        }
    }

    /// Whether the TPM no longer lists `handle` (false if it cannot be asked).
    fn gone(&mut self, handle: u32) -> bool {
        matches!(self.io.handle_present(self.tpm, handle), Ok(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_handle_answers() {
        assert!(matches!(position(0x910), Some(At::Handle(0))));
        assert!(matches!(position(0x916), Some(At::Handle(6))));
        assert!(position(0x917).is_none());
        assert!(matches!(position(0x918), Some(At::Session(0))));
        assert!(matches!(position(0x91E), Some(At::Session(6))));
        assert!(matches!(position(0x18B), Some(At::Handle(0))));
        assert!(matches!(position(0x28B), Some(At::Handle(1))));
        assert!(matches!(position(0x98B), Some(At::Session(0))));
        // A parameter, no position, another code, another layer: none.
        assert!(position(0x1CB).is_none());
        assert!(position(0x08B).is_none());
        assert!(position(0x18C).is_none());
        assert!(position(0x000B_018B).is_none());
        assert!(position(0x902).is_none());
    }
}
