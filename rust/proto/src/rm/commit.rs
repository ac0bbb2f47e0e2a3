// SPDX-License-Identifier: GPL-2.0
//! Stage 5, commit: after the command, on every path, the sessions it used are saved and the
//! objects it loaded are saved again if their state changed, then flushed; with
//! `Config::resident`, they stay loaded instead (objects whose blob stays valid, and
//! sessions), and residents are evicted until the reserve is restored (`resident.rs`).
//!
//! The TPM has run the command (or it never got that far): nothing here changes its answer.
//! What cannot be committed is settled or queued (flushes), left loaded (a session or object
//! whose save fails on the TPM's side), or ended with a tombstone (a session that cannot
//! be saved is flushed, and its owner told at its next use, like an eviction).

use super::super::constants::is_handle_rc;
use super::super::error::RmError;
use super::resident::{evict_lru_object, evict_lru_session, keep_session, ResidentObject};
use super::save::{save_after_gap, save_session};
use super::tpm_io::Saved;
use super::txn::{List, Loaded, LoadedObject, Txn, MAX_TXN_SESSIONS};
use super::wait::Outcome;

impl Txn<'_> {
    /// Stage 5: saves the sessions used and flushes the objects loaded (or keeps them
    /// resident), then gives `answer` unchanged: a failure of the commit is settled, queued
    /// or left loaded (see the module documentation), never put in the place of what the
    /// TPM answered. Never leaves anything of ours in the TPM that we do not track.
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
            if !loaded || (self.resident && keep_session(self.st, self.res.tick, h)) {
                continue;
            }
            if !save_session(self.io, self.st, self.tpm, h) {
                gap.add(h);
            }
        }
        // Context gap: renew (or evict) the oldest saved sessions, with fewer of ours
        // loaded now, and try again.
        for h in gap.iter() {
            save_after_gap(self.io, self.st, self.tpm, h);
        }
        let objects = self.loaded.objects;
        for o in objects.iter() {
            self.put_back_object(o);
        }
        self.loaded = Loaded::new();
        if self.resident {
            self.restore_reserve();
        }
    }

    /// Evicts residents, least recently used first, until they fit within the TPM's loaded
    /// slots less the reserves again.
    fn restore_reserve(&mut self) {
        let (objects, sessions) = self.res.budgets(&self.config);
        while self.res.objects().len() > objects {
            if !evict_lru_object(self.io, self.st, self.tpm, self.res) {
                break;
            }
        }
        while self.st.registry.loaded_count() > sessions {
            if !evict_lru_session(self.io, self.st, self.tpm) {
                break;
            }
        }
    }

    /// Puts object `o` back: resident (with `Config::resident`, an object whose blob stays
    /// valid), or saved again if its state changed, then flushed. A save that fails on the
    /// TPM's side (a warning on every try, another error, the transport) keeps it loaded,
    /// as it is, rather than lose its state (see `ObjectEntry::loaded`); one that says it is
    /// gone forgets it; no memory for its blob drops it.
    fn put_back_object(&mut self, o: LoadedObject) {
        if !o.alive {
            return;
        }
        let space = self.space.id();
        let clean = !o.resave
            && self
                .space
                .object(o.vhandle)
                .is_some_and(|obj| obj.blob.is_some() && !obj.sequence && obj.loaded.is_none());
        if self.resident
            && clean
            && self.res.put(ResidentObject {
                space,
                vhandle: o.vhandle,
                phandle: o.phandle,
                lru: self.res.tick,
            })
        {
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
