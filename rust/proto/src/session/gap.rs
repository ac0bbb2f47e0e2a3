// SPDX-License-Identifier: GPL-2.0
//! TPM_RC_CONTEXT_GAP: the oldest saved session holds the TPM's context counter back.
//! One repair renews it (load, save again: a new sequence number) or, when it cannot be
//! renewed, evicts it.

use super::super::constants::*;
use super::super::error::RmError;
use super::super::rm::tpm_io::{Io, Reply};
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::registry::SessionState;
use super::{blob_seq, End, Grant, Sessions};

impl Sessions {
    /// One context-gap repair: renews the oldest saved session we track (load, save), or
    /// evicts it if we cannot (its blob is the client's, or the TPM has no room to load it).
    /// Ok(false) if there is nothing to repair.
    ///
    /// # Errors
    /// [`RmError::Transport`] (the session is forgotten: our blob may be spent).
    pub(crate) fn repair_gap(&mut self, io: &mut Io, tpm: &mut dyn Tpm) -> Result<bool, RmError> {
        let Some(h) = self.registry.oldest_saved() else {
            return Ok(false);
        };
        bump(&mut io.stats.gap_repairs);
        let loaded = match self.registry.get(h).map(|e| &e.state) {
            Some(SessionState::SavedByRm(blob)) => io.context_load(tpm, blob),
            // The client holds the blob: it cannot be renewed.
            _ => return self.evict(io, tpm, h, Grant::Queue).map(|()| true),
        };
        match loaded {
            Ok(Reply::Done(p)) if p == h => {}
            Ok(Reply::Done(p)) => {
                // Restored under another handle: should never happen. Drop both.
                let _ = io.flush_or_queue(tpm, &mut self.pending, p);
                return self.evict(io, tpm, h, Grant::Queue).map(|()| true);
            }
            Ok(Reply::Rc(rc)) if is_handle_rc(rc) => {
                self.end_session(io, tpm, h, End::Gone, Grant::Queue)?;
                return Ok(true);
            }
            // No room to load it (or a bad blob): flushing needs no room.
            Ok(Reply::Rc(_)) => return self.evict(io, tpm, h, Grant::Queue).map(|()| true),
            Err(e) => {
                // Perhaps loaded, perhaps not: our blob may be spent. Forget it.
                let _ = self.evict(io, tpm, h, Grant::Queue);
                return Err(e);
            }
        }
        match io.context_save(tpm, h) {
            Ok(Reply::Done(())) => {
                if let Ok(blob) = io.saved_blob() {
                    if let Some(e) = self.registry.get_mut(h) {
                        e.saved_seq = blob_seq(&blob);
                        e.state = SessionState::SavedByRm(blob);
                        return Ok(true);
                    }
                }
                self.evict(io, tpm, h, Grant::Queue).map(|()| true)
            }
            Ok(Reply::Rc(_)) => self.evict(io, tpm, h, Grant::Queue).map(|()| true),
            Err(e) => {
                let _ = self.evict(io, tpm, h, Grant::Queue);
                Err(e)
            }
        }
    }
}
