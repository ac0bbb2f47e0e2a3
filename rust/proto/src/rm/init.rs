// SPDX-License-Identifier: GPL-2.0
//! What the resource manager reads from the TPM before the first command: the command table
//! (TPM_CAP_COMMANDS: handle counts and attributes of every command) and
//! TPM_PT_ACTIVE_SESSIONS_MAX (with `Config::session_headroom`, the session budget); with
//! `Config::resident`, in the same command, TPM_PT_HR_TRANSIENT_MIN and TPM_PT_HR_LOADED_MIN
//! (the loaded slots resident contexts share, see `resident.rs`).

use super::super::capability::build_request;
use super::super::cc_table::{CcTable, CcTableError};
use super::super::codec::Reader;
use super::super::constants::{
    TPM_CAP_TPM_PROPERTIES, TPM_PT_ACTIVE_SESSIONS_MAX, TPM_PT_HR_LOADED_MIN,
    TPM_PT_HR_TRANSIENT_MIN, TPM_RC_SUCCESS,
};
use super::super::error::RmError;
use super::super::tpm::Tpm;
use super::Rm;

/// Most GetCapability(TPM_CAP_COMMANDS) round trips `init` makes.
const MAX_CAP_COMMANDS_ROUNDS: usize = 64;

/// The value of TPM property `property` in a successful
/// GetCapability(TPM_CAP_TPM_PROPERTIES) response `rsp`, which lists at most
/// `MAX_PROPERTIES` of them; `None` if it is not there or for anything else.
fn parse_property(rsp: &[u8], property: u32) -> Option<u32> {
    let mut r = Reader::new(rsp);
    let (_tag, size, rc) = (r.u16().ok()?, r.u32().ok()?, r.u32().ok()?);
    if usize::try_from(size).ok()? != rsp.len() || rc != TPM_RC_SUCCESS {
        return None;
    }
    let (_more, cap, count) = (r.u8().ok()?, r.u32().ok()?, r.u32().ok()?);
    if cap != TPM_CAP_TPM_PROPERTIES {
        return None;
    }
    for _ in 0..count.min(MAX_PROPERTIES) {
        let (p, v) = (r.u32().ok()?, r.u32().ok()?);
        if p == property {
            return Some(v);
        }
    }
    None
}

/// Properties asked for at once with `Config::resident`: TPM_PT_HR_TRANSIENT_MIN up to
/// TPM_PT_ACTIVE_SESSIONS_MAX.
const MAX_PROPERTIES: u32 = TPM_PT_ACTIVE_SESSIONS_MAX - TPM_PT_HR_TRANSIENT_MIN + 1;

impl Rm {
    /// Reads the TPM's command table (TPM2_GetCapability(TPM_CAP_COMMANDS), following
    /// moreData) and its TPM_PT_ACTIVE_SESSIONS_MAX (TPM_CAP_TPM_PROPERTIES), which with
    /// `Config::session_headroom` bounds the sessions tpmrs holds. A TPM that does not
    /// answer the property (an error, or another property) leaves that bound to the TPM's
    /// own TPM_RC_SESSION_HANDLES.
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::BadResponse`] (also for a TPM error on the command
    /// table), [`RmError::OutOfMemory`].
    pub fn init(&mut self, tpm: &mut dyn Tpm) -> Result<(), RmError> {
        self.cc.clear();
        let r = self.read_cc_table(tpm);
        if r.is_err() {
            self.cc.clear();
            return r;
        }
        match self.read_properties(tpm) {
            Ok(max) => self.active_sessions_max = max,
            Err(e) => {
                // A failed init leaves the resource manager unusable.
                self.cc.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads TPM_PT_ACTIVE_SESSIONS_MAX (returned) and, with `Config::resident`, the loaded
    /// slots (kept in the residents' table): one GetCapability either way. Without
    /// `resident` the command is the one it always was (one property).
    fn read_properties(&mut self, tpm: &mut dyn Tpm) -> Result<Option<usize>, RmError> {
        let (first, count) = if self.config.resident {
            (TPM_PT_HR_TRANSIENT_MIN, MAX_PROPERTIES)
        } else {
            (TPM_PT_ACTIVE_SESSIONS_MAX, 1)
        };
        let n = build_request(&mut self.io.cmd, TPM_CAP_TPM_PROPERTIES, first, count)
            .map_err(|_| RmError::OutOfMemory)?;
        match self.io.run(tpm, n) {
            Ok(_) => {}
            Err(e) if e.is_transport() => return Err(e),
            // A malformed answer: as if the TPM did not say.
            Err(_) => return Ok(None),
        }
        let get = |p| parse_property(self.io.last(), p).and_then(|v| usize::try_from(v).ok());
        if self.config.resident {
            self.res
                .set_slots(get(TPM_PT_HR_TRANSIENT_MIN), get(TPM_PT_HR_LOADED_MIN));
        }
        Ok(get(TPM_PT_ACTIVE_SESSIONS_MAX))
    }

    fn read_cc_table(&mut self, tpm: &mut dyn Tpm) -> Result<(), RmError> {
        let mut property = 0;
        for _ in 0..MAX_CAP_COMMANDS_ROUNDS {
            let n = CcTable::build_request(&mut self.io.cmd, property)
                .map_err(|_| RmError::OutOfMemory)?;
            self.io.run(tpm, n)?;
            let next = self
                .cc
                .add_from_response(self.io.last())
                .map_err(|e| match e {
                    CcTableError::OutOfMemory => RmError::OutOfMemory,
                    CcTableError::BadResponse | CcTableError::Tpm(_) => RmError::BadResponse,
                })?;
            match next {
                None if self.cc.is_empty() => return Err(RmError::BadResponse),
                None => return Ok(()),
                Some(p) if p > property => property = p,
                Some(_) => return Err(RmError::BadResponse),
            }
        }
        Err(RmError::BadResponse)
    }
}
