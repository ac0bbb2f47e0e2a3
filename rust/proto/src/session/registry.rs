// SPDX-License-Identifier: GPL-2.0
//! The global session registry: every TPM session created or loaded through the resource
//! manager, with its owner space and its state.
//!
//! Session handles are never rewritten, as on /dev/tpmrm0 and as the TAB/RM specification
//! wants: a session's handle is its Name, which enters cpHash (PolicySecret, PolicyNV,
//! audit digests). So a handle names the same session for every space, and ownership is
//! what isolates spaces. A session is found by its index, in either form: the TPM lists
//! saved policy sessions in their HMAC form (0x02...) and accepts either form in
//! FlushContext, and so do we.
//!
//! A session without an owner is either *abandoned* (saved by a client whose file was
//! closed, kept to be loaded again, see `Rm::close_space`) or waiting for a flush that
//! failed on the transport ([`SessionState::FlushPending`]).
//!
//! Who may touch another file's session: only a session its client saved (abandoned, or
//! owned by a file still open) is ever listed to, flushed by or loaded by another file, and
//! only by a file opened by the same uid, or by root ([`SessionEntry::shared_with`]). A
//! session in use (loaded, or saved by tpmrs between commands) is its owner's alone.

use super::super::platform::{Charged, OutOfMemory, Vec};
use super::super::space::ROOT_UID;

/// Where a session's context is.
pub enum SessionState {
    /// Loaded in the TPM.
    Loaded,
    /// Saved by the resource manager, which holds the blob (a session blob loads once).
    SavedByRm(Charged<u8>),
    /// Saved by the client (TPM2_ContextSave); the client holds the blob, and we a copy of
    /// it, charged to the client (`None` if that allocation failed): only this exact blob
    /// can load the session (see `SessionEntry::is_client_blob`).
    SavedByClient(Option<Charged<u8>>),
    /// To be flushed (a FlushContext failed on the transport and the pending-flush queue
    /// could not grow); retried with the pending flushes. Never owned.
    FlushPending,
}

impl SessionState {
    /// Whether the session is loaded.
    pub fn is_loaded(&self) -> bool {
        matches!(self, SessionState::Loaded)
    }

    /// Whether the session is saved (by us or by the client).
    pub fn is_saved(&self) -> bool {
        matches!(
            self,
            SessionState::SavedByRm(_) | SessionState::SavedByClient(_)
        )
    }
}

/// One session.
pub struct SessionEntry {
    /// The session handle (0x02xxxxxx HMAC, 0x03xxxxxx policy).
    pub handle: u32,
    /// Unique id of this entry (never reused, unlike handles).
    pub id: u64,
    /// Id of the space that owns it; `None` if abandoned or flush-pending.
    pub owner: Option<u64>,
    /// The uid that opened its owner's file (for an abandoned session, its last owner's).
    pub uid: u32,
    /// Where its context is.
    pub state: SessionState,
    /// When it was created (ns, clock of the caller).
    pub created_ns: u64,
    /// When its current owner got it: created, or loaded from the abandoned list. A session
    /// is not evicted before it has been owned for `Config::session_timeout_ns`.
    pub owned_since_ns: u64,
    /// When a command last used it (ns, clock of the caller).
    pub last_used_ns: u64,
    /// `sequence` of its last saved context (ours or the client's), if known: orders saved
    /// sessions for context-gap repair.
    pub saved_seq: Option<u64>,
    /// Order of abandonment (larger is more recent); 0 if never abandoned.
    pub abandoned_at: u64,
    /// *Resident*: loaded between commands (`Config::resident`), and not in use by the
    /// command that runs now, so that another space's command may evict it (save it) when it
    /// needs its loaded-session slot (see `rm/resident.rs`).
    pub resident: bool,
    /// When it was last used, in the resource manager's command count: whom to evict first
    /// (least recently used).
    pub lru: u64,
    /// An allocation for its context, made while its own space's command ran (so charged to
    /// its client, in the kernel): an eviction saves it here, whoever's command evicts it.
    /// Kept while it is loaded with `Config::resident`; `None` otherwise.
    pub spare: Option<Charged<u8>>,
}

impl SessionEntry {
    /// A new loaded session owned by `owner`, a file opened by `uid`, created at `now`.
    pub fn new(handle: u32, id: u64, owner: u64, uid: u32, now: u64) -> Self {
        SessionEntry {
            handle,
            id,
            owner: Some(owner),
            uid,
            state: SessionState::Loaded,
            created_ns: now,
            owned_since_ns: now,
            last_used_ns: now,
            saved_seq: None,
            abandoned_at: 0,
            resident: false,
            lru: 0,
            spare: None,
        }
    }

    /// Whether the session is abandoned: saved by a client, no owner.
    pub fn is_abandoned(&self) -> bool {
        self.owner.is_none() && matches!(self.state, SessionState::SavedByClient(_))
    }

    /// Whether the session is resident: loaded, not in use, evictable for another space's
    /// command.
    pub fn is_resident(&self) -> bool {
        self.resident && self.state.is_loaded()
    }

    /// Whether the session counts as ours (owned or abandoned, not merely awaiting a flush).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, SessionState::FlushPending)
    }

    /// Whether a file opened by `uid` that does not own the session may list, flush and
    /// load it: its client saved it (it is abandoned, or owned by another file still open,
    /// whose client holds the blob), and `uid` opened that file too, or is root.
    pub fn shared_with(&self, uid: u32) -> bool {
        matches!(self.state, SessionState::SavedByClient(_)) && (uid == self.uid || uid == ROOT_UID)
    }

    /// Whether `context` is, byte for byte, the blob the session's client saved last: the
    /// only one that can load it (the TPM's integrity HMAC covers its sequence, handle and
    /// contents, and a session loads only from its latest context). Compared in time that
    /// depends on the lengths only, not on where the bytes differ.
    pub fn is_client_blob(&self, context: &[u8]) -> bool {
        let SessionState::SavedByClient(Some(blob)) = &self.state else {
            return false;
        };
        if blob.len() != context.len() {
            return false;
        }
        let diff = blob
            .iter()
            .zip(context)
            .fold(0u8, |d, (x, y)| d | core::hint::black_box(x ^ y));
        diff == 0
    }
}

pub use super::super::constants::same_session;

/// All sessions known to the resource manager.
#[derive(Default)]
pub struct SessionRegistry {
    entries: Vec<SessionEntry>,
}

impl SessionRegistry {
    /// An empty registry.
    pub const fn new() -> Self {
        SessionRegistry {
            entries: Vec::new(),
        }
    }

    /// Every session.
    pub fn entries(&self) -> &[SessionEntry] {
        &self.entries
    }

    /// Number of entries (including flush-pending ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    #[cfg(not(tpmrs_kernel))]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of live sessions (owned or abandoned).
    pub fn live_count(&self) -> usize {
        self.entries.iter().filter(|e| e.is_live()).count()
    }

    /// Number of sessions loaded in the TPM (resident, in use, or left loaded after a save
    /// the TPM did not run).
    pub fn loaded_count(&self) -> usize {
        self.entries.iter().filter(|e| e.state.is_loaded()).count()
    }

    /// Number of resident sessions (see [`SessionEntry::resident`]).
    pub fn resident_count(&self) -> usize {
        self.entries.iter().filter(|e| e.is_resident()).count()
    }

    /// Handle of the resident session used least recently.
    pub fn lru_resident(&self) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.is_resident())
            .min_by_key(|e| (e.lru, e.id))
            .map(|e| e.handle)
    }

    /// Number of abandoned sessions.
    pub fn abandoned_count(&self) -> usize {
        self.entries.iter().filter(|e| e.is_abandoned()).count()
    }

    /// The session `handle` names, in either form.
    pub fn get(&self, handle: u32) -> Option<&SessionEntry> {
        self.entries.iter().find(|e| same_session(e.handle, handle))
    }

    /// The session `handle` names, in either form, mutably.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut SessionEntry> {
        self.entries
            .iter_mut()
            .find(|e| same_session(e.handle, handle))
    }

    /// The handle (in the form the TPM issued) of the session `handle` names, in either
    /// form, if space `owner` owns it.
    pub fn resolve(&self, handle: u32, owner: u64) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.owner == Some(owner) && same_session(e.handle, handle))
            .map(|e| e.handle)
    }

    /// Number of sessions owned by `owner`.
    pub fn count_owned(&self, owner: u64) -> usize {
        self.entries
            .iter()
            .filter(|e| e.owner == Some(owner))
            .count()
    }

    /// Number of sessions owned by open files of `uid` (abandoned ones count for nobody).
    pub fn count_held_by_uid(&self, uid: u32) -> usize {
        self.entries
            .iter()
            .filter(|e| e.owner.is_some() && e.uid == uid)
            .count()
    }

    /// Handle of one session owned by `owner`.
    pub fn find_owned(&self, owner: u64) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.owner == Some(owner))
            .map(|e| e.handle)
    }

    /// Number of abandoned sessions whose last owner was opened by `uid`.
    fn abandoned_by(&self, uid: u32) -> usize {
        self.entries
            .iter()
            .filter(|e| e.is_abandoned() && e.uid == uid)
            .count()
    }

    /// Handle of the abandoned session to flush first when there are too many: the one
    /// abandoned first among those of the uid that holds the most (of the uids that hold
    /// as many, the one that abandoned one first). So a uid's abandonments never push out
    /// the sessions of a uid that holds fewer than it.
    pub fn trim_victim(&self) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.is_abandoned())
            .map(|e| (self.abandoned_by(e.uid), e))
            .max_by(|(na, a), (nb, b)| {
                na.cmp(nb)
                    .then_with(|| (b.abandoned_at, b.id).cmp(&(a.abandoned_at, a.id)))
            })
            .map(|(_, e)| e.handle)
    }

    /// Handle of the live saved session with the oldest known saved context (smallest
    /// `saved_seq`): the one that limits the TPM's context gap, as far as we know.
    pub fn oldest_saved(&self) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.is_live() && e.state.is_saved())
            .filter_map(|e| e.saved_seq.map(|s| (s, e.id, e.handle)))
            .min()
            .map(|(_, _, h)| h)
    }

    /// Handle of one flush-pending entry.
    pub fn find_flush_pending(&self) -> Option<u32> {
        self.entries.iter().find(|e| !e.is_live()).map(|e| e.handle)
    }

    /// Adds `entry`, replacing any entry for the same session slot (a stale one: the TPM
    /// handed the handle out again).
    ///
    /// # Errors
    /// [`OutOfMemory`] if the registry cannot grow (then it is unchanged).
    pub fn insert(&mut self, entry: SessionEntry) -> Result<(), OutOfMemory> {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| same_session(e.handle, entry.handle))
        {
            *e = entry;
            return Ok(());
        }
        self.entries.try_push(entry)
    }

    /// Removes and returns the session `handle` names, in either form.
    pub fn remove(&mut self, handle: u32) -> Option<SessionEntry> {
        let i = self
            .entries
            .iter()
            .position(|e| same_session(e.handle, handle))?;
        self.entries.swap_remove(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(handle: u32, owner: u64) -> SessionEntry {
        let mut e = SessionEntry::new(handle, u64::from(handle), owner, 1000, 1);
        e.last_used_ns = 2;
        e
    }

    #[test]
    fn ownership() {
        let mut r = SessionRegistry::new();
        assert!(r.is_empty());
        r.insert(entry(0x0200_0000, 1)).unwrap();
        r.insert(entry(0x0300_0001, 2)).unwrap();
        r.insert(entry(0x0200_0002, 1)).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.resolve(0x0200_0000, 1), Some(0x0200_0000));
        assert_eq!(r.resolve(0x0200_0000, 2), None);
        assert_eq!(r.resolve(0x0200_0009, 1), None);
        // Only session handles name sessions: an object of the same index does not.
        assert!(r.get(0x8000_0000).is_none());
        assert!(r.get(0x4000_0000).is_none());
        assert_eq!(r.resolve(0x8000_0000, 1), None);
        // Either form names the session; the TPM's form comes back.
        assert_eq!(r.resolve(0x0300_0000, 1), Some(0x0200_0000));
        assert_eq!(r.resolve(0x0200_0001, 2), Some(0x0300_0001));
        assert_eq!(r.resolve(0x0200_0001, 1), None);
        assert_eq!(r.get(0x0200_0001).map(|e| e.handle), Some(0x0300_0001));
        assert_eq!(r.count_owned(1), 2);
        assert!(r.get(0x0300_0001).unwrap().state.is_loaded());
        r.get_mut(0x0300_0001).unwrap().state = SessionState::SavedByClient(None);
        assert!(!r.get(0x0300_0001).unwrap().state.is_loaded());
        // A reissued handle replaces the stale entry of its slot.
        r.insert(entry(0x0200_0001, 1)).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.resolve(0x0200_0001, 1), Some(0x0200_0001));
        assert_eq!(r.get(0x0300_0001).map(|e| e.owner), Some(Some(1)));
        assert!(r.remove(0x0300_0001).is_some());
        assert!(r.remove(0x0200_0001).is_none());
        assert!(r.find_owned(1).is_some());
        while let Some(h) = r.find_owned(1) {
            assert!(r.remove(h).is_some());
        }
        assert!(r.find_owned(1).is_none());
        assert!(r.is_empty());
    }

    #[test]
    fn abandoned_and_saved_order() {
        let mut r = SessionRegistry::new();
        for (i, h) in [0x0300_0000u32, 0x0300_0001, 0x0300_0002]
            .iter()
            .enumerate()
        {
            let mut e = entry(*h, 1);
            e.state = SessionState::SavedByClient(None);
            e.saved_seq = Some(10 - i as u64);
            r.insert(e).unwrap();
        }
        assert_eq!(r.abandoned_count(), 0);
        assert_eq!(r.oldest_saved(), Some(0x0300_0002));
        for (h, at) in [(0x0300_0000u32, 5u64), (0x0300_0001, 3)] {
            let e = r.get_mut(h).unwrap();
            e.owner = None;
            e.abandoned_at = at;
        }
        assert_eq!(r.abandoned_count(), 2);
        assert_eq!(r.live_count(), 3);
        assert_eq!(r.trim_victim(), Some(0x0300_0001));
        r.get_mut(0x0300_0002).unwrap().state = SessionState::FlushPending;
        r.get_mut(0x0300_0002).unwrap().owner = None;
        assert_eq!(r.live_count(), 2);
        assert_eq!(r.oldest_saved(), Some(0x0300_0001));
        assert_eq!(r.find_flush_pending(), Some(0x0300_0002));
        assert!(r.get(0x0300_0000).unwrap().is_abandoned());
        assert!(!r.get(0x0300_0002).unwrap().is_abandoned());
    }

    #[test]
    fn trimming_takes_from_the_uid_that_holds_the_most() {
        let mut r = SessionRegistry::new();
        // (handle, uid, abandoned_at): uid 1 holds one, uid 2 holds three, uid 3 two.
        let abandoned = [
            (0x0300_0000u32, 1u32, 1u64),
            (0x0300_0001, 2, 2),
            (0x0300_0002, 3, 3),
            (0x0300_0003, 2, 4),
            (0x0300_0004, 3, 5),
            (0x0300_0005, 2, 6),
        ];
        for (h, uid, at) in abandoned {
            let mut e = SessionEntry::new(h, u64::from(h), 9, uid, 1);
            e.state = SessionState::SavedByClient(None);
            e.owner = None;
            e.abandoned_at = at;
            r.insert(e).unwrap();
        }
        let mut order = vec![];
        while let Some(h) = r.trim_victim() {
            order.push(h & 0xF);
            r.remove(h);
        }
        // uid 2's first; then uids 2 and 3 hold two each: 3's first one is older; ...
        assert_eq!(order, vec![1, 2, 3, 0, 4, 5]);
    }

    #[test]
    fn sharing_is_for_client_saved_sessions_of_the_same_uid_or_root() {
        let mut e = SessionEntry::new(0x0300_0000, 1, 1, 1000, 1);
        assert!(!e.shared_with(1000) && !e.shared_with(ROOT_UID), "in use");
        e.state = SessionState::SavedByClient(None);
        assert!(e.shared_with(1000) && e.shared_with(ROOT_UID));
        assert!(!e.shared_with(1001));
        e.owner = None;
        assert!(e.shared_with(1000) && !e.shared_with(1001));
        e.state = SessionState::FlushPending;
        assert!(!e.shared_with(ROOT_UID));
    }
}
