// SPDX-License-Identifier: GPL-2.0
//! A command's room among the resident contexts (`Config::resident`, `rm/resident.rs`): the
//! residents it names are taken out of reach of evictions while it runs, the residents it
//! does not name are evicted, least recently used first, until what it loads fits within
//! the budgets, and all of them when the TPM still answers a memory warning.

use super::super::super::command::{Command, MAX_HANDLES};
use super::super::super::constants::*;
use super::super::super::session::registry::SessionState;
use super::super::kind::{loaded_session, updates_sequence};
use super::super::resident::{evict_all_objects, evict_all_sessions, make_room, ResidentObject};
use super::{List, LoadedObject, Txn, MAX_TXN_SESSIONS};

impl Txn<'_> {
    /// Takes the residents `command` names out of the table and the registry's resident set
    /// (the command uses them: they are neither evicted for it nor for anyone until its
    /// commit), into [`Loaded`](super::Loaded), marked as loaded before the command.
    pub(super) fn pin_residents(&mut self, command: &Command) {
        let space = self.space.id();
        let cc = command.cc();
        for &h in command.handles() {
            if !is_transient_handle(h) || self.loaded.phandle_of(h).is_some() {
                continue;
            }
            let Some(phandle) = self.res.take(space, h) else {
                continue;
            };
            let o = LoadedObject {
                vhandle: h,
                phandle,
                resave: updates_sequence(cc),
                alive: true,
                resident: true,
            };
            if !self.loaded.objects.add(o) {
                // No room to track it for this command: it stays resident, and loads anew.
                let _ = self.res.put(ResidentObject {
                    space,
                    vhandle: h,
                    phandle,
                    lru: self.res.tick,
                });
            }
        }
        for h in named_sessions(command) {
            let Some(e) = self.st.registry.get_mut(h) else {
                continue;
            };
            if e.is_resident()
                && e.owner == Some(space)
                && self.loaded.sessions.add(e.handle)
                && self.loaded.resident_sessions.add(e.handle)
            {
                e.resident = false;
            }
        }
    }

    /// Before the loads of `command` (`work`, as it will be sent): evicts the residents it
    /// does not name until what it needs (the objects and sessions it names that are not
    /// loaded, and one more for an object or session it creates) fits within the budgets
    /// ([`make_room`]).
    pub(super) fn make_room_for(&mut self, command: &Command, work: &[u8]) {
        let cc = command.cc();
        let new_session =
            cc == TPM_CC_START_AUTH_SESSION || loaded_session(command, work).is_some();
        let mut objects = usize::from(command.attrs.r_handle() && !new_session);
        let mut seen: List<u32, MAX_HANDLES> = List::new();
        for &h in command.handles() {
            if !is_transient_handle(h) || seen.contains(h) || self.loaded.phandle_of(h).is_some() {
                continue;
            }
            seen.add(h);
            if self.space.object(h).is_some_and(|o| o.loaded.is_none()) {
                objects = objects.saturating_add(1);
            }
        }
        let mut sessions = usize::from(new_session);
        let mut seen: List<u32, MAX_TXN_SESSIONS> = List::new();
        for h in named_sessions(command) {
            if let Some(e) = self.st.registry.get(h) {
                if !seen.contains(e.handle) && matches!(e.state, SessionState::SavedByRm(_)) {
                    seen.add(e.handle);
                    sessions = sessions.saturating_add(1);
                }
            }
        }
        // Loaded for this command already (out of the table), or left loaded by a failed
        // save: they hold slots too.
        let in_use = self
            .loaded
            .objects
            .iter()
            .count()
            .saturating_add(self.space.loaded_handles().count());
        make_room(
            self.io,
            self.st,
            self.tpm,
            self.res,
            &self.config,
            in_use,
            objects,
            sessions,
        );
    }

    /// The client's command (or a load) got the memory warning `rc`: every resident of that
    /// kind (both for TPM_RC_MEMORY) is evicted. False if there was none, and so nothing to
    /// try again.
    pub(super) fn make_way(&mut self, rc: u32) -> bool {
        let mut n = 0usize;
        if rc != TPM_RC_SESSION_MEMORY {
            n = n.saturating_add(evict_all_objects(self.io, self.st, self.tpm, self.res));
        }
        if rc != TPM_RC_OBJECT_MEMORY {
            n = n.saturating_add(evict_all_sessions(self.io, self.st, self.tpm));
        }
        n > 0
    }
}

/// The sessions `command` names, in its handle area and its authorization area, in the
/// client's form.
fn named_sessions(command: &Command) -> impl Iterator<Item = u32> + '_ {
    command
        .handles()
        .iter()
        .copied()
        .chain(command.sessions().iter().map(|s| s.handle))
        .filter(|h| is_session_handle(*h))
}
