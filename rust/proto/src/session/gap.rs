// SPDX-License-Identifier: GPL-2.0
//! TPM_RC_CONTEXT_GAP: the oldest saved session holds the TPM's context counter back.
//! One repair renews it (load, save again: a new sequence number, copied into the blob's own
//! allocation) or, when it cannot be renewed, evicts it. A renewal whose save the TPM does
//! not run leaves the session loaded, where it holds no gap back.

use super::super::constants::*;
use super::super::error::RmError;
use super::super::event::Event;
use super::super::rm::tpm_io::{Io, Reply, Saved};
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::registry::SessionState;
use super::{blob_seq, End, Grant, Sessions, Why};

/// Most context-gap repairs (each renews or evicts one session) for one failed command or
/// save. More than one is needed only if a session outside tpmrs is the oldest.
pub(crate) const MAX_GAP_REPAIRS: usize = 4;

impl Sessions {
    /// One context-gap repair: renews the oldest saved session we track (load, save), or
    /// evicts it if we cannot (its blob is the client's, or the TPM has no room to load it).
    /// Ok(false) if there is nothing to repair.
    ///
    /// # Errors
    /// [`RmError::Transport`] (the session is forgotten: our blob may be spent),
    /// [`RmError::NotSent`] (the load never reached the TPM: the session is as it was).
    pub(crate) fn repair_gap(&mut self, io: &mut Io, tpm: &mut dyn Tpm) -> Result<bool, RmError> {
        let Some(h) = self.registry.oldest_saved() else {
            return Ok(false);
        };
        let owner = self.registry.get(h).and_then(|e| e.owner).unwrap_or(0);
        let r = self.renew_or_evict(io, tpm, h);
        if matches!(r, Err(RmError::NotSent(_))) {
            // Nothing happened.
            return r;
        }
        bump(&mut io.stats.gap_repairs);
        // Renewed: still ours, saved by us again or left loaded (every other way forgot it).
        let renewed = r.is_ok()
            && self.registry.get(h).is_some_and(|e| {
                matches!(e.state, SessionState::SavedByRm(_) | SessionState::Loaded)
            });
        self.events.record(Event::GapRepair {
            handle: h,
            owner,
            renewed,
        });
        r
    }

    /// The repair of [`Self::repair_gap`] on the oldest saved session `h`.
    fn renew_or_evict(&mut self, io: &mut Io, tpm: &mut dyn Tpm, h: u32) -> Result<bool, RmError> {
        let loaded = match self.registry.get(h).map(|e| &e.state) {
            Some(SessionState::SavedByRm(blob)) => io.context_load(tpm, blob),
            // The client holds the blob: it cannot be renewed.
            _ => {
                return self
                    .evict(io, tpm, h, Grant::Queue, Why::Gap)
                    .map(|()| true)
            }
        };
        match loaded {
            Ok(Reply::Done(p)) if p == h => {}
            Ok(Reply::Done(p)) => {
                // Restored under another handle: should never happen. Drop both.
                let _ = io.flush_or_queue(tpm, &mut self.pending, p);
                return self
                    .evict(io, tpm, h, Grant::Queue, Why::Gap)
                    .map(|()| true);
            }
            Ok(Reply::Rc(rc)) if is_handle_rc(rc) => {
                self.end_session(io, tpm, h, End::Gone, Grant::Queue)?;
                return Ok(true);
            }
            // No room to load it (or a bad blob): flushing needs no room.
            Ok(Reply::Rc(_)) => {
                return self
                    .evict(io, tpm, h, Grant::Queue, Why::Gap)
                    .map(|()| true)
            }
            // Never sent: nothing happened, the session is as it was.
            Err(e @ RmError::NotSent(_)) => return Err(e),
            Err(e) => {
                // Perhaps loaded, perhaps not: our blob may be spent. Forget it.
                let _ = self.evict(io, tpm, h, Grant::Queue, Why::Gap);
                return Err(e);
            }
        }
        match io.save(tpm, h) {
            Ok(Saved::Done) => {
                if let Some(e) = self.registry.get_mut(h) {
                    if let SessionState::SavedByRm(blob) = &mut e.state {
                        if renew_in_place(blob, io.last_blob()) {
                            e.saved_seq = blob_seq(blob);
                            return Ok(true);
                        }
                    }
                }
                self.evict(io, tpm, h, Grant::Queue, Why::Gap)
                    .map(|()| true)
            }
            // Not run on any try: it stays loaded, where it holds no gap back, and its
            // next use saves it.
            Ok(Saved::NotRun) => {
                if let Some(e) = self.registry.get_mut(h) {
                    e.state = SessionState::Loaded;
                    e.saved_seq = None;
                }
                Ok(true)
            }
            Ok(Saved::Gap | Saved::Rc(_)) => self
                .evict(io, tpm, h, Grant::Queue, Why::Gap)
                .map(|()| true),
            Err(e) => {
                let _ = self.evict(io, tpm, h, Grant::Queue, Why::Gap);
                Err(e)
            }
        }
    }
}

/// Copies the renewed context `new` over `blob`, in its own allocation: the session may be
/// another space's, and a new allocation would be charged to the memory cgroup of the
/// client whose command ran into the gap. False (nothing copied) if the lengths differ or
/// the TPM's answer holds no context: then it cannot be renewed.
fn renew_in_place(blob: &mut [u8], new: Result<&[u8], RmError>) -> bool {
    match new {
        Ok(new) if new.len() == blob.len() => {
            blob.copy_from_slice(new);
            true
        }
        _ => false,
    }
}
