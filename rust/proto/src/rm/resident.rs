// SPDX-License-Identifier: GPL-2.0
//! Resident contexts (`Config::resident`, issue 21): a space's objects and sessions stay
//! loaded in the TPM after its command while the TPM has loaded slots to spare, instead of
//! being saved (sessions) and flushed (objects) after every command. They are evicted, least
//! recently used first, only when another command needs the slot (before it loads what it
//! names), when the reserve must be restored (after every command), when the space is
//! closed, or when the system suspends ([`super::Rm::suspend`]).
//!
//! **Who owns residency.** The resource manager does: a space's `Space` is the glue's, taken
//! out of its file only while that file's command runs, so another space's command could not
//! evict through it. Resident *objects* are listed here ([`Residents`]: space, virtual handle,
//! physical handle, last use); resident *sessions* are entries of the session registry, which
//! the resource manager owns already (`SessionEntry::resident`). Only objects whose saved
//! context stays valid are made resident, so that an eviction only flushes them and their
//! space keeps its blob: sequence objects (whose state changes with every use) and objects
//! without a blob (their first save failed) are saved and flushed, or left loaded, as
//! without residency. A session's context changes with every use, so its eviction saves it:
//! into `SessionEntry::spare`, an allocation made while its own space's command ran (in the
//! kernel, charged to its own client), so that an eviction for another client allocates
//! nothing in that client's name.
//!
//! **Limits.** The loaded slots are the TPM's TPM_PT_HR_TRANSIENT_MIN and
//! TPM_PT_HR_LOADED_MIN (read at init; 3 each if it does not say), less `reserve_objects` and
//! `reserve_sessions`, which stay free between commands for users outside tpmrs. A command may
//! use the whole TPM while it runs (nobody else runs a command meanwhile): before its loads,
//! residents it does not name are evicted until what it needs fits beside the rest within
//! the limit less the reserve (or nothing is left to evict), and after it, until the
//! residents fit again. If the TPM still answers TPM_RC_OBJECT_MEMORY, TPM_RC_SESSION_MEMORY
//! or TPM_RC_MEMORY (someone outside tpmrs holds slots), every resident not in use is
//! evicted and the load or the command is sent once more (a warning: the TPM ran nothing).
//!
//! A resident context the TPM lost (a TPM Reset or power loss without the suspend path, a
//! flush through /dev/tpm0) is found at its next use: `lost.rs`. What a command does with
//! the residents (pins those it names, evicts others to make room) is `txn/room.rs`.

use super::super::constants::*;
use super::super::platform::{Charged, Vec};
use super::super::session::Sessions;
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::save::{save_after_gap, save_session};
use super::tpm_io::Io;
use super::Config;

/// Loaded slots assumed when the TPM does not report its own: the least the specification
/// allows (TPM_PT_HR_TRANSIENT_MIN and TPM_PT_HR_LOADED_MIN are at least 3).
pub(crate) const DEFAULT_SLOTS: usize = 3;

/// The largest context a TPM returns (a response's parameter area): the capacity of a
/// session's spare allocation before any session context has been seen.
const MAX_CONTEXT: usize = TPM_BUFSIZE - TPM_HEADER_SIZE;

/// Most slots taken from the TPM's word: a TPM that reports more is believed up to this.
const MAX_SLOTS: usize = 64;

/// An object of a space left loaded between commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidentObject {
    /// The space it belongs to.
    pub space: u64,
    /// Its handle in that space.
    pub vhandle: u32,
    /// Its handle in the TPM.
    pub phandle: u32,
    /// When it was last used, in the resource manager's command count.
    pub lru: u64,
}

/// The resident objects of every space, and the state residency needs.
pub(crate) struct Residents {
    objects: Vec<ResidentObject>,
    /// Commands run (the clock of `lru`).
    pub(crate) tick: u64,
    /// The TPM's loaded object and session slots.
    object_slots: usize,
    session_slots: usize,
    /// Between `Rm::suspend` and `Rm::resume`: nothing is made resident.
    pub(crate) suspended: bool,
}

impl Residents {
    /// No resident object; the default slots.
    pub(crate) const fn new() -> Self {
        Residents {
            objects: Vec::new(),
            tick: 0,
            object_slots: DEFAULT_SLOTS,
            session_slots: DEFAULT_SLOTS,
            suspended: false,
        }
    }

    /// The TPM's loaded slots, as read at init (`None`: it did not say).
    pub(crate) fn set_slots(&mut self, objects: Option<usize>, sessions: Option<usize>) {
        let slots = |v: Option<usize>| v.map_or(DEFAULT_SLOTS, |v| v.clamp(1, MAX_SLOTS));
        self.object_slots = slots(objects);
        self.session_slots = slots(sessions);
    }

    /// The loaded object and session slots tpmrs keeps between commands: the TPM's less
    /// the reserves.
    pub(crate) fn budgets(&self, config: &Config) -> (usize, usize) {
        (
            self.object_slots.saturating_sub(config.reserve_objects),
            self.session_slots.saturating_sub(config.reserve_sessions),
        )
    }

    /// The TPM's loaded object and session slots.
    pub(crate) fn slots(&self) -> (usize, usize) {
        (self.object_slots, self.session_slots)
    }

    /// Resident objects now.
    pub(crate) fn objects(&self) -> &[ResidentObject] {
        &self.objects
    }

    /// Takes the resident object `vhandle` of `space` out of the table (its command uses
    /// it now); its physical handle.
    pub(crate) fn take(&mut self, space: u64, vhandle: u32) -> Option<u32> {
        let i = self
            .objects
            .iter()
            .position(|o| o.space == space && o.vhandle == vhandle)?;
        self.objects.swap_remove(i).map(|o| o.phandle)
    }

    /// Makes an object resident; false (nothing changed) if the table cannot grow.
    pub(crate) fn put(&mut self, o: ResidentObject) -> bool {
        self.objects.try_push(o).is_ok()
    }

    /// The TPM handed out `phandle` for an object of ours: a resident object listed under
    /// it was lost behind tpmrs' back (the TPM never hands out a loaded handle), and must
    /// never be used there again. True if there was one (now forgotten, not flushed).
    pub(crate) fn forget_phandle(&mut self, phandle: u32) -> bool {
        let Some(i) = self.objects.iter().position(|o| o.phandle == phandle) else {
            return false;
        };
        self.objects.swap_remove(i);
        true
    }

    /// Takes one resident object of `space` out of the table (at its close).
    pub(crate) fn take_any_of(&mut self, space: u64) -> Option<u32> {
        let i = self.objects.iter().position(|o| o.space == space)?;
        self.objects.swap_remove(i).map(|o| o.phandle)
    }

    /// Takes the resident object used least recently out of the table.
    fn take_lru(&mut self) -> Option<u32> {
        let i = self
            .objects
            .iter()
            .enumerate()
            .min_by_key(|(_, o)| o.lru)
            .map(|(i, _)| i)?;
        self.objects.swap_remove(i).map(|o| o.phandle)
    }
}

/// Flushes the resident object used least recently; false if there is none. The space keeps
/// its blob, from which its next command loads it. A flush that does not go through is
/// settled or queued.
pub(super) fn evict_lru_object(
    io: &mut Io,
    st: &mut Sessions,
    tpm: &mut dyn Tpm,
    res: &mut Residents,
) -> bool {
    let Some(p) = res.take_lru() else {
        return false;
    };
    bump(&mut io.stats.resident_evictions);
    let _ = io.flush_or_queue(tpm, &mut st.pending, p);
    true
}

/// Saves the resident session used least recently; false if there is none. It is then
/// saved by tpmrs, as between commands without residency, or, if its save fails, ended as
/// a commit ends it (flushed with a tombstone, or forgotten if the TPM says it is gone); a
/// save the TPM does not run leaves it loaded, no longer resident: it is saved after its
/// next use.
pub(super) fn evict_lru_session(io: &mut Io, st: &mut Sessions, tpm: &mut dyn Tpm) -> bool {
    let Some(h) = st.registry.lru_resident() else {
        return false;
    };
    bump(&mut io.stats.resident_evictions);
    if !save_session(io, st, tpm, h) {
        save_after_gap(io, st, tpm, h);
    }
    if let Some(e) = st.registry.get_mut(h) {
        e.resident = false;
    }
    true
}

/// Evicts every resident object; how many.
pub(super) fn evict_all_objects(
    io: &mut Io,
    st: &mut Sessions,
    tpm: &mut dyn Tpm,
    res: &mut Residents,
) -> usize {
    let mut n = 0usize;
    while evict_lru_object(io, st, tpm, res) {
        n = n.saturating_add(1);
    }
    n
}

/// Evicts every resident session; how many.
pub(super) fn evict_all_sessions(io: &mut Io, st: &mut Sessions, tpm: &mut dyn Tpm) -> usize {
    let mut n = 0usize;
    while evict_lru_session(io, st, tpm) {
        n = n.saturating_add(1);
    }
    n
}

/// Evicts residents, least recently used first, until `objects` more objects and
/// `sessions` more sessions fit beside what is loaded within the budgets (or no resident
/// is left). `in_use` objects are loaded for the command that runs now (out of the table).
#[allow(clippy::too_many_arguments)]
pub(super) fn make_room(
    io: &mut Io,
    st: &mut Sessions,
    tpm: &mut dyn Tpm,
    res: &mut Residents,
    config: &Config,
    in_use: usize,
    objects: usize,
    sessions: usize,
) {
    let (object_budget, session_budget) = res.budgets(config);
    while res
        .objects
        .len()
        .saturating_add(in_use)
        .saturating_add(objects)
        > object_budget
    {
        if !evict_lru_object(io, st, tpm, res) {
            break;
        }
    }
    while st.registry.loaded_count().saturating_add(sessions) > session_budget {
        if !evict_lru_session(io, st, tpm) {
            break;
        }
    }
}

/// Makes session `h` (loaded, used by the command now ending) resident, with a spare
/// allocation for its context (kept from its last save, or made now, in its own space's
/// command); false if there is no memory for one: then it is saved as without residency.
pub(super) fn keep_session(st: &mut Sessions, tick: u64, h: u32) -> bool {
    let len = if st.blob_len == 0 {
        MAX_CONTEXT
    } else {
        st.blob_len
    };
    let Some(e) = st.registry.get_mut(h) else {
        return false;
    };
    if e.spare.is_none() {
        match Charged::try_with_capacity(len) {
            Ok(v) => e.spare = Some(v),
            Err(_) => return false,
        }
    }
    e.resident = true;
    e.lru = tick;
    true
}

/// Evicts every resident object and every loaded session of ours (resident, or left loaded
/// by a save the TPM did not run), for a suspend. No command is in progress: every
/// session is the resource manager's to save.
pub(super) fn evict_everything(
    io: &mut Io,
    st: &mut Sessions,
    tpm: &mut dyn Tpm,
    res: &mut Residents,
) {
    evict_all_objects(io, st, tpm, res);
    let loaded: usize = st.registry.loaded_count();
    for _ in 0..loaded {
        let Some(h) = st
            .registry
            .entries()
            .iter()
            .find(|e| e.state.is_loaded() && !e.resident)
            .map(|e| e.handle)
        else {
            break;
        };
        if let Some(e) = st.registry.get_mut(h) {
            e.resident = true;
        }
        evict_lru_session(io, st, tpm);
    }
    evict_all_sessions(io, st, tpm);
}
