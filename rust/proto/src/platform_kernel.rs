// SPDX-License-Identifier: GPL-2.0
//! Kernel implementation of the platform shim (the host build uses `platform_std.rs`).
//!
//! Same API as the host version, backed by the kernel's `Vec` with `GFP_KERNEL`: the protocol
//! core only runs in process context (write, the O_NONBLOCK work item, release), where
//! sleeping allocations are allowed.
//!
//! A [`Charged`] vector holds what one client causes (its objects' and sessions' saved
//! contexts, its object table) and grows with `GFP_KERNEL_ACCOUNT` through the glue's
//! allocator `crate::memcg::Charged` (this file is only built inside the kernel crates, which
//! provide it): charged to the memory cgroup the glue made active, the opener's, and failing
//! with [`OutOfMemory`] at its `memory.max` instead of invoking its OOM killer.

use core::ops::{Deref, DerefMut};
use kernel::alloc::{
    flags::{GFP_KERNEL, GFP_KERNEL_ACCOUNT},
    Flags,
};

/// The kernel's vector over the glue's allocator, which charges only with
/// `GFP_KERNEL_ACCOUNT` (plain kmalloc otherwise).
type Inner<T> = kernel::alloc::Vec<T, crate::memcg::Charged>;

/// An allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// A growable array with fallible allocation. `CHARGED`: its memory is charged to the active
/// memory cgroup (see [`Charged`]).
pub struct Vec<T, const CHARGED: bool = false>(Inner<T>);

/// A vector of what one client causes, charged to its opener's memory cgroup.
pub type Charged<T> = Vec<T, true>;

impl<T, const CHARGED: bool> Vec<T, CHARGED> {
    /// The flags every allocation of this vector uses.
    const FLAGS: Flags = if CHARGED {
        GFP_KERNEL_ACCOUNT
    } else {
        GFP_KERNEL
    };

    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        Vec(Inner::new())
    }

    /// An empty vector with room for `n` elements.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the allocation fails.
    pub fn try_with_capacity(n: usize) -> Result<Self, OutOfMemory> {
        Inner::with_capacity(n, Self::FLAGS)
            .map(Vec)
            .map_err(|_| OutOfMemory)
    }

    /// Appends `v`.
    ///
    /// # Errors
    /// [`OutOfMemory`] if growing the vector fails (the vector is unchanged).
    pub fn try_push(&mut self, v: T) -> Result<(), OutOfMemory> {
        self.0.push(v, Self::FLAGS).map_err(|_| OutOfMemory)
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

    /// How many elements it holds without allocating.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<T: Copy, const CHARGED: bool> Vec<T, CHARGED> {
    /// Appends a copy of `s`.
    ///
    /// # Errors
    /// [`OutOfMemory`] if growing the vector fails (the vector is unchanged).
    pub fn try_extend_from_slice(&mut self, s: &[T]) -> Result<(), OutOfMemory> {
        self.0
            .extend_from_slice(s, Self::FLAGS)
            .map_err(|_| OutOfMemory)
    }
}

impl<T, const CHARGED: bool> Default for Vec<T, CHARGED> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const CHARGED: bool> Deref for Vec<T, CHARGED> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const CHARGED: bool> DerefMut for Vec<T, CHARGED> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}
