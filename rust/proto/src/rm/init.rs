// SPDX-License-Identifier: GPL-2.0
//! What the resource manager reads from the TPM before the first command: the command table
//! (TPM_CAP_COMMANDS: handle counts and attributes of every command) and
//! TPM_PT_ACTIVE_SESSIONS_MAX (with `Config::session_headroom`, the session budget).

use super::super::capability::build_request;
use super::super::cc_table::{CcTable, CcTableError};
use super::super::codec::Reader;
use super::super::constants::{TPM_CAP_TPM_PROPERTIES, TPM_PT_ACTIVE_SESSIONS_MAX, TPM_RC_SUCCESS};
use super::super::error::RmError;
use super::super::tpm::Tpm;
use super::Rm;

/// Most GetCapability(TPM_CAP_COMMANDS) round trips `init` makes.
const MAX_CAP_COMMANDS_ROUNDS: usize = 64;

/// The value of TPM property `property` in a successful one-property
/// GetCapability(TPM_CAP_TPM_PROPERTIES) response `rsp`; `None` for anything else.
fn parse_property(rsp: &[u8], property: u32) -> Option<u32> {
    let mut r = Reader::new(rsp);
    let (_tag, size, rc) = (r.u16().ok()?, r.u32().ok()?, r.u32().ok()?);
    if usize::try_from(size).ok()? != rsp.len() || rc != TPM_RC_SUCCESS {
        return None;
    }
    let (_more, cap, count) = (r.u8().ok()?, r.u32().ok()?, r.u32().ok()?);
    if cap != TPM_CAP_TPM_PROPERTIES || count < 1 || r.u32().ok()? != property {
        return None;
    }
    r.u32().ok()
}

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
        match self.read_active_sessions_max(tpm) {
            Ok(max) => self.active_sessions_max = max,
            Err(e) => {
                // A failed init leaves the resource manager unusable.
                self.cc.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    fn read_active_sessions_max(&mut self, tpm: &mut dyn Tpm) -> Result<Option<usize>, RmError> {
        let n = build_request(
            &mut self.io.cmd,
            TPM_CAP_TPM_PROPERTIES,
            TPM_PT_ACTIVE_SESSIONS_MAX,
            1,
        )
        .map_err(|_| RmError::OutOfMemory)?;
        match self.io.run(tpm, n) {
            Ok(_) => {}
            Err(e) if e.is_transport() => return Err(e),
            // A malformed answer: as if the TPM did not say.
            Err(_) => return Ok(None),
        }
        Ok(parse_property(self.io.last(), TPM_PT_ACTIVE_SESSIONS_MAX)
            .and_then(|v| usize::try_from(v).ok()))
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
