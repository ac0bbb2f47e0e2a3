// SPDX-License-Identifier: GPL-2.0
//! Stage 5, commit: after the command, on every path, the sessions it used are saved and the
//! objects it loaded are saved again if their state changed, then flushed.
//!
//! The TPM has run the command (or it never got that far): nothing here changes its answer.
//! What cannot be committed is settled or queued (flushes), left loaded (a session or object
//! whose save fails on the TPM's side), or ended with a tombstone (a session that cannot
//! be saved is flushed, and its owner told at its next use, like an eviction).

use super::super::constants::is_handle_rc;
use super::super::error::RmError;
use super::super::session::registry::SessionState;
use super::super::session::{blob_seq, End, Grant, Why, MAX_GAP_REPAIRS};
use super::tpm_io::Saved;
use super::txn::{List, Loaded, LoadedObject, Txn, MAX_TXN_SESSIONS};
use super::wait::Outcome;

impl Txn<'_> {
    /// Stage 5: saves the sessions used and flushes the objects loaded, then gives `answer`
    /// unchanged: a failure of the commit is settled, queued or left loaded (see the module
    /// documentation), never put in the place of what the TPM answered. Never leaves
    /// anything of ours in the TPM that we do not track.
    ///
    /// # Errors
    /// `answer`'s error.
    pub(super) fn commit(mut self, answer: Result<Outcome, RmError>) -> Result<Outcome, RmError> {
        self.save_and_flush();
        answer
    }

    fn save_and_flush(&mut self) {
        // Numbers held for a StartAuthSession: their slots go to other spaces' waiters
        // unless it took a session (then they were free before it, and whoever they were
        // given to keeps them).
        let mut held = self.loaded.held;
        let owner = self.space.id();
        held.release(self.io, self.st, self.tpm, (!self.started).then_some(owner));
        let mut gap: List<u32, MAX_TXN_SESSIONS> = List::new();
        let used = self.loaded.sessions;
        for h in used.iter() {
            let loaded = self.st.registry.get(h).is_some_and(|e| e.state.is_loaded());
            if loaded && !self.save_session(h) {
                gap.add(h);
            }
        }
        // Context gap: renew (or evict) the oldest saved sessions, with fewer of ours
        // loaded now, and try again.
        for h in gap.iter() {
            self.save_after_gap(h);
        }
        let objects = self.loaded.objects;
        for o in objects.iter() {
            self.put_back_object(o);
        }
        self.loaded = Loaded::new();
    }

    /// Saves session `h` (loaded for this command) and records its blob. False if the save
    /// failed with TPM_RC_CONTEXT_GAP (the session is still loaded). A save the TPM does not
    /// run (TPM_RC_RETRY, ..., or never sent) on every try leaves the session as it was:
    /// loaded, and saved after its next use. Any other failure ends it: gone from the TPM
    /// (a handle error), or flushed with a tombstone in its owner's name.
    fn save_session(&mut self, h: u32) -> bool {
        let io = &mut *self.io;
        let unsaved = match io.save(self.tpm, h) {
            Ok(Saved::NotRun) => return true,
            Ok(Saved::Gap) => return false,
            Ok(Saved::Done) => match (io.saved_blob(), self.st.registry.get_mut(h)) {
                (Ok(blob), Some(entry)) => {
                    entry.saved_seq = blob_seq(&blob);
                    entry.state = SessionState::SavedByRm(blob);
                    return true;
                }
                // No memory for its blob (the client's memory cgroup refused it).
                _ => true,
            },
            // Gone from the TPM (lazy backup of strict accounting): forget it.
            Ok(Saved::Rc(rc)) if is_handle_rc(rc) => false,
            // Another error, or the transport failed after the save may have run.
            Ok(Saved::Rc(_)) | Err(_) => true,
        };
        // A flush that does not go through is settled or queued.
        let _ = if unsaved {
            self.st
                .evict(self.io, self.tpm, h, Grant::Queue, Why::Unsaved)
        } else {
            self.st
                .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)
        };
        true
    }

    /// Saves session `h` whose save met TPM_RC_CONTEXT_GAP: repairs the gap and tries
    /// again, up to [`MAX_GAP_REPAIRS`] times; a session that still cannot be saved is
    /// evicted (flushed, with a tombstone in its owner's name). A repair that never reached
    /// the TPM changed nothing: the session stays loaded, saved after its next use.
    fn save_after_gap(&mut self, h: u32) {
        for _ in 0..MAX_GAP_REPAIRS {
            match self.st.repair_gap(self.io, self.tpm) {
                Ok(true) => {}
                Err(RmError::NotSent(_)) => return,
                Ok(false) | Err(_) => break,
            }
            if self.save_session(h) {
                return;
            }
        }
        // A flush that does not go through is settled or queued.
        let _ = self.st.evict(self.io, self.tpm, h, Grant::Queue, Why::Gap);
    }

    /// Saves object `o` again if its state changed, then flushes it. A save that fails on
    /// the TPM's side (a warning on every try, another error, the transport) keeps it
    /// loaded, as it is, rather than lose its state (see `ObjectEntry::loaded`); one that
    /// says it is gone forgets it; no memory for its blob drops it.
    fn put_back_object(&mut self, o: LoadedObject) {
        if !o.alive {
            return;
        }
        if o.resave && self.space.object(o.vhandle).is_some() {
            let keep = match self.io.save(self.tpm, o.phandle) {
                Ok(Saved::Done) => match self.io.saved_blob() {
                    Ok(b) => {
                        if let Some(obj) = self.space.object_mut(o.vhandle) {
                            obj.blob = Some(b);
                        }
                        false
                    }
                    Err(_) => {
                        // A stale blob of a sequence would silently give wrong results.
                        self.space.remove_object(o.vhandle);
                        false
                    }
                },
                Ok(Saved::Rc(rc)) if is_handle_rc(rc) => {
                    self.space.remove_object(o.vhandle);
                    return;
                }
                Ok(Saved::NotRun | Saved::Gap | Saved::Rc(_)) | Err(_) => true,
            };
            if keep {
                if let Some(obj) = self.space.object_mut(o.vhandle) {
                    obj.loaded = Some(o.phandle);
                    return;
                }
            }
        }
        // A flush that does not go through is settled or queued.
        let _ = self
            .io
            .flush_or_queue(self.tpm, &mut self.st.pending, o.phandle);
    }
}
