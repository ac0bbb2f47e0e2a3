// SPDX-License-Identifier: GPL-2.0
//! Tombstones: what the owner of an evicted session is told, once.
//!
//! Session handles are never rewritten (see [`super::registry`]). So that the TPM never
//! hands an evicted session's number back to the *same* space before it was told (its old
//! reference would reach the new session with a stale nonce: an HMAC failure that may count
//! against the dictionary-attack lockout), tpmrs holds the space's dead numbers before it
//! sends the space's StartAuthSession: see `rm/preoccupy.rs`.

use super::registry::same_session;
use super::Sessions;

/// A session evicted from space `owner`: its owner's next reference to `handle` gets
/// TPM_RC_EXPIRED.
#[derive(Clone, Copy)]
pub(super) struct Tombstone {
    pub(super) owner: u64,
    pub(super) handle: u32,
}

impl Sessions {
    /// Whether space `owner` still has to be told that its session of `h`'s slot was
    /// evicted.
    pub(crate) fn has_tombstone(&self, owner: u64, h: u32) -> bool {
        self.tombstones
            .iter()
            .any(|t| t.owner == owner && same_session(t.handle, h))
    }

    /// Whether space `owner` still has to be told of any evicted session.
    pub(crate) fn has_tombstones(&self, owner: u64) -> bool {
        self.tombstones.iter().any(|t| t.owner == owner)
    }

    /// Space `owner` got a tombstone: the glue hears of it at its next
    /// [`super::super::Rm::take_owed`]. Without memory for it, the glue does not hear: the
    /// owner's commands then queue for the TPM before they are answered, as any command.
    pub(super) fn note_owed(&mut self, owner: u64) {
        if !self.newly_owed.contains(&owner) {
            let _ = self.newly_owed.try_push(owner);
        }
    }

    /// Calls `f` for each space that got a tombstone since the last call.
    pub(crate) fn take_owed(&mut self, f: &mut dyn FnMut(u64)) {
        while let Some(owner) = self.newly_owed.pop() {
            f(owner);
        }
    }

    /// Consumes the tombstone of space `owner` for the session slot of `h`, if any.
    pub(crate) fn take_tombstone(&mut self, owner: u64, h: u32) -> bool {
        let Some(i) = self
            .tombstones
            .iter()
            .position(|t| t.owner == owner && same_session(t.handle, h))
        else {
            return false;
        };
        self.tombstones.swap_remove(i);
        true
    }

    /// Drops every tombstone of space `owner`.
    pub(crate) fn drop_tombstones(&mut self, owner: u64) {
        while let Some(i) = self.tombstones.iter().position(|t| t.owner == owner) {
            self.tombstones.swap_remove(i);
        }
    }
}
