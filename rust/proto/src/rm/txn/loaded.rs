// SPDX-License-Identifier: GPL-2.0
//! What the command in flight loaded or registered ([`Loaded`]): its objects, the sessions to
//! save after it, the numbers held for a StartAuthSession, and which of them were resident
//! before it. [`Txn::commit`](super::Txn::commit) saves or flushes all of it on every path.

use super::super::super::command::MAX_HANDLES;
use super::super::preoccupy::Held;
use super::MAX_TXN_SESSIONS;

/// A small fixed-capacity set (no allocation, never panics).
#[derive(Clone, Copy)]
pub(in super::super) struct List<T: Copy, const N: usize> {
    items: [Option<T>; N],
}

impl<T: Copy + PartialEq, const N: usize> List<T, N> {
    pub(in super::super) fn new() -> Self {
        List { items: [None; N] }
    }
    /// Adds `v` unless it is already there; false if full.
    pub(in super::super) fn add(&mut self, v: T) -> bool {
        if self.contains(v) {
            return true;
        }
        match self.items.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(v);
                true
            }
            None => false,
        }
    }
    pub(in super::super) fn contains(&self, v: T) -> bool {
        self.items.contains(&Some(v))
    }
    /// Removes `v` if it is there.
    pub(in super::super) fn remove(&mut self, v: T) {
        for s in self.items.iter_mut() {
            if *s == Some(v) {
                *s = None;
            }
        }
    }
    pub(in super::super) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items.iter().filter_map(|s| *s)
    }
}

/// An object loaded for the current command.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in super::super) struct LoadedObject {
    pub(in super::super) vhandle: u32,
    pub(in super::super) phandle: u32,
    /// Save it again before flushing (its state changed).
    pub(in super::super) resave: bool,
    /// Still loaded in the TPM (false once the TPM flushed it itself).
    pub(in super::super) alive: bool,
    /// Taken from the residents' table (`resident.rs`): loaded before this command, so the
    /// TPM may have lost it behind tpmrs' back (`lost.rs`).
    pub(in super::super) resident: bool,
}

/// What the current command loaded or registered, undone or committed by
/// [`Txn::commit`](super::Txn::commit).
pub(in super::super) struct Loaded {
    pub(in super::super) objects: List<LoadedObject, MAX_HANDLES>,
    /// Sessions to save after the command (if still registered and loaded).
    pub(in super::super) sessions: List<u32, MAX_TXN_SESSIONS>,
    /// Numbers held for a StartAuthSession (see `preoccupy`), flushed after it.
    pub(in super::super) held: Held,
    /// Of `sessions`, those that were resident before this command (see `LoadedObject`).
    pub(in super::super) resident_sessions: List<u32, MAX_TXN_SESSIONS>,
}

impl Loaded {
    pub(in super::super) fn new() -> Self {
        Loaded {
            objects: List::new(),
            sessions: List::new(),
            held: Held::new(),
            resident_sessions: List::new(),
        }
    }
    pub(in super::super) fn phandle_of(&self, vhandle: u32) -> Option<u32> {
        self.objects
            .iter()
            .find(|o| o.vhandle == vhandle)
            .map(|o| o.phandle)
    }
    pub(in super::super) fn mark_flushed(&mut self, vhandle: u32) {
        for o in self.objects.items.iter_mut().flatten() {
            if o.vhandle == vhandle {
                o.alive = false;
            }
        }
    }
}
