// SPDX-License-Identifier: GPL-2.0
//! Tombstones: what the owner of an evicted session is told, once.
//!
//! If the TPM hands an evicted session's number back to the *same* space before it was told
//! (its own StartAuthSession, or the ContextLoad of an abandoned session, gets it), the
//! space's new session is given an *alias* instead (the same handle type, an index with
//! [`super::registry::SESSION_ALIAS_BIT`] set): the old number still answers TPM_RC_EXPIRED
//! once and the new one works, so a client holding both references never has its old
//! reference reach the new session (with a stale nonce, an HMAC failure that counts against
//! the dictionary-attack lockout). Aliases are rewritten to the TPM's handle in the handle
//! area, the authorization area and FlushContext, and back in the StartAuthSession,
//! ContextLoad and GetCapability(TPM_CAP_HANDLES) responses. The TPM never sees an alias.

use super::registry::{same_session, SESSION_ALIAS_BIT};
use super::Sessions;

/// A session evicted from space `owner`: its owner's next reference to `handle` gets
/// TPM_RC_EXPIRED.
#[derive(Clone, Copy)]
pub(super) struct Tombstone {
    pub(super) owner: u64,
    pub(super) handle: u32,
}

impl Sessions {
    /// The number space `owner` gets for its new session `h`: `h` itself, unless the space
    /// still holds a tombstone for that number (it has not yet been told that its old
    /// session of that number was evicted): then an alias that names neither a tombstone
    /// nor another session of the space.
    pub(crate) fn number_for(&self, owner: u64, h: u32) -> u32 {
        let taken = |v: u32| {
            self.tombstones
                .iter()
                .any(|t| t.owner == owner && same_session(t.handle, v))
                || self
                    .registry
                    .entries()
                    .iter()
                    .any(|e| e.owner == Some(owner) && same_session(e.vhandle, v))
        };
        if !taken(h) {
            return h;
        }
        // Fewer tombstones and sessions than indices: one is free.
        (0..=0xFFFFu32)
            .map(|k| (h & 0xFF00_0000) | SESSION_ALIAS_BIT | k)
            .find(|&v| !taken(v))
            .unwrap_or(h)
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
