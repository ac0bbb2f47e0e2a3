// SPDX-License-Identifier: GPL-2.0
//! Host implementation of the platform shim (the kernel build uses `platform_kernel.rs`).
//!
//! This is the only collection type the protocol core may use. Every allocation is fallible;
//! the API is deliberately small so that the kernel version can provide the same one.

use core::ops::{Deref, DerefMut};

/// An allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// A growable array with fallible allocation. `CHARGED`: in the kernel, its memory is charged
/// to the client's memory cgroup (see `platform_kernel.rs`); no difference on the host.
pub struct Vec<T, const CHARGED: bool = false>(alloc::vec::Vec<T>);

/// A vector of what one client causes (charged to its opener's memory cgroup in the kernel).
pub type Charged<T> = Vec<T, true>;

impl<T, const CHARGED: bool> Vec<T, CHARGED> {
    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        Vec(alloc::vec::Vec::new())
    }

    /// An empty vector with room for `n` elements.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the allocation fails.
    pub fn try_with_capacity(n: usize) -> Result<Self, OutOfMemory> {
        let mut v = alloc::vec::Vec::new();
        v.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
        Ok(Vec(v))
    }

    /// Appends `v`.
    ///
    /// # Errors
    /// [`OutOfMemory`] if growing the vector fails (the vector is unchanged).
    pub fn try_push(&mut self, v: T) -> Result<(), OutOfMemory> {
        self.0.try_reserve(1).map_err(|_| OutOfMemory)?;
        self.0.push(v);
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }

    /// Removes element `i`, replacing it by the last one; `None` if `i` is out of range.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i < self.0.len() {
            Some(self.0.swap_remove(i))
        } else {
            None
        }
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
        self.0.try_reserve(s.len()).map_err(|_| OutOfMemory)?;
        self.0.extend_from_slice(s);
        Ok(())
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
