// SPDX-License-Identifier: GPL-2.0
//! The global session registry: every TPM session created or loaded through the resource
//! manager, with its owner space and its state.
//!
//! Session handles are not virtualized (a session handle feeds HMAC computation), so a
//! handle names the same session for every space; ownership is what isolates spaces.

use super::platform::{OutOfMemory, Vec};

/// Where a session's context is.
pub enum SessionState {
    /// Loaded in the TPM.
    Loaded,
    /// Saved by the resource manager, which holds the blob (a session blob loads once).
    SavedByRm(Vec<u8>),
    /// Saved by the client (TPM2_ContextSave); the client holds the blob, we hold nothing.
    SavedByClient,
}

impl SessionState {
    /// Whether the session is loaded.
    pub fn is_loaded(&self) -> bool {
        matches!(self, SessionState::Loaded)
    }
}

/// One session.
pub struct SessionEntry {
    /// The session handle (0x02xxxxxx HMAC, 0x03xxxxxx policy).
    pub handle: u32,
    /// Id of the space that owns it.
    pub owner: u64,
    /// Where its context is.
    pub state: SessionState,
    /// When it was registered (ns, clock of the caller).
    pub created_ns: u64,
    /// When a command last used it (ns, clock of the caller).
    pub last_used_ns: u64,
}

/// Index bits of a session handle, shared by its HMAC and policy forms.
const SESSION_INDEX_MASK: u32 = 0x00FF_FFFF;

/// Whether `a` and `b` name the same session slot (they differ at most in the handle type).
pub fn same_session(a: u32, b: u32) -> bool {
    a & SESSION_INDEX_MASK == b & SESSION_INDEX_MASK
}

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

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The session with handle `handle`.
    pub fn get(&self, handle: u32) -> Option<&SessionEntry> {
        self.entries.iter().find(|e| e.handle == handle)
    }

    /// The session with handle `handle`, mutably.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut SessionEntry> {
        self.entries.iter_mut().find(|e| e.handle == handle)
    }

    /// Whether `handle` is a session owned by space `owner`.
    pub fn is_owned_by(&self, handle: u32, owner: u64) -> bool {
        self.get(handle).is_some_and(|e| e.owner == owner)
    }

    /// Whether the session slot of `handle` (HMAC or policy form) is owned by `owner`.
    pub fn slot_owned_by(&self, handle: u32, owner: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.owner == owner && same_session(e.handle, handle))
    }

    /// Number of sessions owned by `owner`.
    pub fn count_owned(&self, owner: u64) -> usize {
        self.entries.iter().filter(|e| e.owner == owner).count()
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

    /// Removes and returns the session with handle `handle`.
    pub fn remove(&mut self, handle: u32) -> Option<SessionEntry> {
        let i = self.entries.iter().position(|e| e.handle == handle)?;
        self.entries.swap_remove(i)
    }

    /// Removes and returns one session owned by `owner`.
    pub fn remove_one_owned(&mut self, owner: u64) -> Option<SessionEntry> {
        let i = self.entries.iter().position(|e| e.owner == owner)?;
        self.entries.swap_remove(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(handle: u32, owner: u64) -> SessionEntry {
        SessionEntry {
            handle,
            owner,
            state: SessionState::Loaded,
            created_ns: 1,
            last_used_ns: 2,
        }
    }

    #[test]
    fn ownership() {
        let mut r = SessionRegistry::new();
        assert!(r.is_empty());
        r.insert(entry(0x0200_0000, 1)).unwrap();
        r.insert(entry(0x0300_0001, 2)).unwrap();
        r.insert(entry(0x0200_0002, 1)).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.is_owned_by(0x0200_0000, 1));
        assert!(!r.is_owned_by(0x0200_0000, 2));
        assert!(!r.is_owned_by(0x0200_0009, 1));
        assert!(r.slot_owned_by(0x0300_0000, 1));
        assert!(r.slot_owned_by(0x0200_0001, 2));
        assert_eq!(r.count_owned(1), 2);
        assert!(r.get(0x0300_0001).unwrap().state.is_loaded());
        r.get_mut(0x0300_0001).unwrap().state = SessionState::SavedByClient;
        assert!(!r.get(0x0300_0001).unwrap().state.is_loaded());
        // A reissued handle replaces the stale entry of its slot.
        r.insert(entry(0x0200_0001, 1)).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.is_owned_by(0x0200_0001, 1));
        assert!(r.get(0x0300_0001).is_none());
        assert!(r.remove(0x0200_0001).is_some());
        assert!(r.remove(0x0200_0001).is_none());
        assert!(r.remove_one_owned(1).is_some());
        assert!(r.remove_one_owned(1).is_some());
        assert!(r.remove_one_owned(1).is_none());
        assert!(r.is_empty());
    }
}
