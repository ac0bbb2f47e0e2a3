// SPDX-License-Identifier: GPL-2.0
//! Stage 5, commit: after the command, on every path, the sessions it used are saved and the
//! objects it loaded are saved again if their state changed, then flushed.

use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::registry::SessionState;
use super::super::session::{blob_seq, End, Grant, MAX_GAP_REPAIRS};
use super::tpm_io::Reply;
use super::txn::{save_with_retries, List, Loaded, LoadedObject, Txn, MAX_TXN_SESSIONS};
use super::wait::Outcome;

impl Txn<'_> {
    /// Stage 5: saves the sessions used and flushes the objects loaded, then gives `answer`
    /// (or the first transport error of the commit if `answer` is Ok). Never leaves anything
    /// of ours in the TPM that we do not track.
    ///
    /// # Errors
    /// `answer`'s error, else the first transport error met while committing.
    pub(super) fn commit(mut self, answer: Result<Outcome, RmError>) -> Result<Outcome, RmError> {
        let committed = self.save_and_flush();
        let outcome = answer?;
        committed.map(|()| outcome)
    }

    fn save_and_flush(&mut self) -> Result<(), RmError> {
        let mut first_err = None;
        let mut gap: List<u32, MAX_TXN_SESSIONS> = List::new();
        let used = self.loaded.sessions;
        for h in used.iter() {
            let loaded = self.st.registry.get(h).is_some_and(|e| e.state.is_loaded());
            if !loaded {
                continue;
            }
            match self.save_session(h) {
                Ok(true) => {}
                Ok(false) => {
                    gap.add(h);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Context gap: renew (or evict) the oldest saved sessions, with fewer of ours
        // loaded now, and try again.
        for h in gap.iter() {
            if let Err(e) = self.save_after_gap(h) {
                first_err.get_or_insert(e);
            }
        }
        let objects = self.loaded.objects;
        for o in objects.iter() {
            if let Err(e) = self.put_back_object(o) {
                first_err.get_or_insert(e);
            }
        }
        self.loaded = Loaded::new();
        first_err.map_or(Ok(()), Err)
    }

    /// Saves session `h` (loaded for this command) and records its blob. Ok(false) if the
    /// save failed with TPM_RC_CONTEXT_GAP (the session is still loaded). A save the TPM
    /// does not execute (TPM_RC_RETRY, ...) on every try leaves the session as it was:
    /// loaded, and saved after its next use.
    fn save_session(&mut self, h: u32) -> Result<bool, RmError> {
        match save_with_retries(self.io, self.tpm, h) {
            Ok(Reply::Rc(rc)) if rc != TPM_RC_CONTEXT_GAP && is_not_executed_rc(rc) => Ok(true),
            Ok(Reply::Done(())) => {
                let blob = self.io.saved_blob().ok();
                match (blob, self.st.registry.get_mut(h)) {
                    (Some(blob), Some(entry)) => {
                        entry.saved_seq = blob_seq(&blob);
                        entry.state = SessionState::SavedByRm(blob);
                        Ok(true)
                    }
                    _ => self
                        .st
                        .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue)
                        .map(|()| true),
                }
            }
            Ok(Reply::Rc(TPM_RC_CONTEXT_GAP)) => Ok(false),
            // Gone from the TPM (lazy backup of strict accounting): forget it.
            Ok(Reply::Rc(rc)) if is_handle_rc(rc) => self
                .st
                .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)
                .map(|()| true),
            Ok(Reply::Rc(_)) => self
                .st
                .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue)
                .map(|()| true),
            Err(e) => {
                let entry = self.st.registry.remove(h);
                self.st.queue_session_flush(h, entry);
                Err(e)
            }
        }
    }

    /// Saves session `h` whose save met TPM_RC_CONTEXT_GAP: repairs the gap, retries, and
    /// flushes it if it still cannot be saved.
    fn save_after_gap(&mut self, h: u32) -> Result<(), RmError> {
        let mut err = None;
        for _ in 0..MAX_GAP_REPAIRS {
            match self.st.repair_gap(self.io, self.tpm) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            match self.save_session(h) {
                Ok(true) => return err.map_or(Ok(()), Err),
                Ok(false) => {}
                // Handled (queued).
                Err(e) => return Err(err.unwrap_or(e)),
            }
        }
        let flushed = self
            .st
            .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue);
        match err {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    /// Saves object `o` again if its state changed, then flushes it.
    fn put_back_object(&mut self, o: LoadedObject) -> Result<(), RmError> {
        if !o.alive {
            return Ok(());
        }
        let mut err = None;
        if o.resave && self.space.object(o.vhandle).is_some() {
            let blob = match save_with_retries(self.io, self.tpm, o.phandle) {
                Ok(Reply::Done(())) => self.io.saved_blob().ok(),
                Ok(Reply::Rc(rc)) if is_not_executed_rc(rc) => {
                    // Not executed on every try: it stays loaded, as it was, rather than
                    // lose its state (see `ObjectEntry::loaded`).
                    if let Some(obj) = self.space.object_mut(o.vhandle) {
                        obj.loaded = Some(o.phandle);
                        return Ok(());
                    }
                    None
                }
                Ok(Reply::Rc(_)) => None,
                Err(e) => {
                    err = Some(e);
                    None
                }
            };
            match (blob, self.space.object_mut(o.vhandle)) {
                (Some(b), Some(obj)) => obj.blob = b,
                // A stale blob of a sequence would silently give wrong results.
                _ => {
                    self.space.remove_object(o.vhandle);
                }
            }
        }
        let flushed = self
            .io
            .flush_or_queue(self.tpm, &mut self.st.pending, o.phandle);
        match err {
            Some(e) => Err(e),
            None => flushed,
        }
    }
}
