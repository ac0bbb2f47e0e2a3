// SPDX-License-Identifier: GPL-2.0
//! Kernel implementation of the platform shim (the host build uses `platform_std.rs`).
//!
//! Same API as the host version, backed by [`kernel::alloc::KVec`] with `GFP_KERNEL`: the
//! protocol core only runs in process context (write, the O_NONBLOCK work item, release), where
//! sleeping allocations are allowed.

use core::ops::{Deref, DerefMut};
use kernel::alloc::{flags::GFP_KERNEL, KVec};

/// An allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// A growable array with fallible allocation.
pub struct Vec<T>(KVec<T>);

impl<T> Vec<T> {
    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        Vec(KVec::new())
    }

    /// An empty vector with room for `n` elements.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the allocation fails.
    pub fn try_with_capacity(n: usize) -> Result<Self, OutOfMemory> {
        KVec::with_capacity(n, GFP_KERNEL)
            .map(Vec)
            .map_err(|_| OutOfMemory)
    }

    /// Appends `v`.
    ///
    /// # Errors
    /// [`OutOfMemory`] if growing the vector fails (the vector is unchanged).
    pub fn try_push(&mut self, v: T) -> Result<(), OutOfMemory> {
        self.0.push(v, GFP_KERNEL).map_err(|_| OutOfMemory)
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }

    /// Removes element `i`, replacing it by the last one; `None` if `i` is out of range.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        let last = self.0.len().checked_sub(1)?;
        if i > last {
            return None;
        }
        self.0.swap(i, last);
        self.0.pop()
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl<T: Copy> Vec<T> {
    /// Appends a copy of `s`.
    ///
    /// # Errors
    /// [`OutOfMemory`] if growing the vector fails (the vector is unchanged).
    pub fn try_extend_from_slice(&mut self, s: &[T]) -> Result<(), OutOfMemory> {
        self.0
            .extend_from_slice(s, GFP_KERNEL)
            .map_err(|_| OutOfMemory)
    }
}

impl<T> Default for Vec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Deref for Vec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for Vec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}
