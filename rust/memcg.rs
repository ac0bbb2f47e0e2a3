// SPDX-License-Identifier: GPL-2.0
//! Memory a client causes is charged to the memory cgroup of the process that opened its file
//! (issue 13): its command and response buffers, the saved contexts of its objects and
//! sessions, and its object table.
//!
//! Two pieces, both over the C shim (`tpmrs_shim.c`):
//!
//! - [`Charged`], the allocator of those buffers. With `GFP_KERNEL_ACCOUNT` in the flags it
//!   allocates with `GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN`: charged to the
//!   active memory cgroup, and failing with ENOMEM at the cgroup's `memory.max` (after
//!   reclaim) instead of invoking the cgroup's OOM killer, which plain `GFP_KERNEL_ACCOUNT`
//!   would do. The kernel crate's flags have no `__GFP_RETRY_MAYFAIL`, hence the shim. Other
//!   flags: plain [`Kmalloc`]. Both are kmalloc allocations, freed alike.
//! - [`MemCg`], a reference on the opener's memory cgroup taken at open, and [`MemCg::charge`],
//!   a scope (`set_active_memcg`) in which those allocations are charged to it whichever task
//!   runs the command: the writer's own for a blocking write, a kworker of the module's
//!   workqueue for an O_NONBLOCK one (whose allocations would otherwise be charged to no
//!   cgroup at all).

use core::{alloc::Layout, marker::PhantomData, ptr::NonNull};
use kernel::{
    alloc::{
        allocator::Kmalloc, flags::GFP_KERNEL_ACCOUNT, AllocError, Allocator, Flags, NumaNode,
    },
    ffi::{c_ulong, c_void},
};

/// Opaque `struct mem_cgroup`.
#[repr(C)]
pub(crate) struct RawMemCg {
    _private: [u8; 0],
}

extern "C" {
    fn tpmrs_memcg_get() -> *mut RawMemCg;
    fn tpmrs_memcg_put(memcg: *mut RawMemCg);
    fn tpmrs_memcg_enter(memcg: *mut RawMemCg) -> *mut RawMemCg;
    fn tpmrs_memcg_leave(old: *mut RawMemCg);
    fn tpmrs_krealloc_charged(p: *mut c_void, size: usize, align: c_ulong) -> *mut c_void;
}

/// The allocator of what a client causes: charged, and failing cleanly, with
/// `GFP_KERNEL_ACCOUNT` (see the module documentation); [`Kmalloc`] otherwise.
pub(crate) struct Charged;

/// A vector whose growth with `GFP_KERNEL_ACCOUNT` is charged (see [`Charged`]).
pub(crate) type ChargedVec<T> = kernel::alloc::Vec<T, Charged>;

// SAFETY: Every allocation, charged or not, is a kmalloc allocation (`krealloc_node_align`
// through the shim or through `Kmalloc`), valid until freed, and both paths accept any of
// them: the charged path is `krealloc_node_align` itself, and `Kmalloc::realloc` (which also
// frees) is `krealloc_node_align` too. Alignment and size are those of `Kmalloc`
// (`aligned_layout`, `MIN_ALIGN`), and the returned slice has the size asked for.
unsafe impl Allocator for Charged {
    const MIN_ALIGN: usize = <Kmalloc as Allocator>::MIN_ALIGN;

    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let layout = Kmalloc::aligned_layout(layout);
        if layout.size() == 0 || !flags.contains(GFP_KERNEL_ACCOUNT) {
            // SAFETY: The caller's guarantees for `ptr` and `old_layout` are those
            // `Kmalloc::realloc` needs, and `ptr` is a kmalloc allocation (see above).
            return unsafe { Kmalloc::realloc(ptr, layout, old_layout, flags, nid) };
        }
        // A zero-sized old layout means `ptr` is dangling, not an allocation.
        let old = match ptr {
            Some(p) if old_layout.size() != 0 => p.as_ptr().cast::<c_void>(),
            _ => core::ptr::null_mut(),
        };
        // SAFETY: `old` is NULL or a live kmalloc allocation the caller owns (the caller's
        // guarantees); on failure it stays valid, on success krealloc has moved or kept it.
        let raw = unsafe { tpmrs_krealloc_charged(old, layout.size(), layout.align() as c_ulong) };
        let p = NonNull::new(raw.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }
}

/// A reference on a memory cgroup: the opener's, taken at open.
///
/// # Invariants
///
/// `ptr` is NULL (no memory cgroups) or a memory cgroup on which this object holds a
/// reference.
pub(crate) struct MemCg {
    ptr: *mut RawMemCg,
}

// SAFETY: A memory cgroup reference may be used and dropped from any thread.
unsafe impl Send for MemCg {}
// SAFETY: `&MemCg` only allows entering a charging scope on the current task, which reads the
// pointer; the reference is not changed.
unsafe impl Sync for MemCg {}

impl MemCg {
    /// The current task's memory cgroup (its active charging scope, else its mm's cgroup).
    pub(crate) fn current() -> Self {
        // SAFETY: No preconditions; returns a referenced memcg or NULL.
        let ptr = unsafe { tpmrs_memcg_get() };
        // INVARIANT: `tpmrs_memcg_get` took a reference for us (or returned NULL).
        Self { ptr }
    }

    /// Charges the current task's `GFP_KERNEL_ACCOUNT` allocations to this cgroup until the
    /// returned scope is dropped (on the same task: the scope is not `Send`).
    pub(crate) fn charge(&self) -> ChargeScope<'_> {
        // SAFETY: `ptr` is NULL or referenced (type invariant) for at least the scope's
        // lifetime, which borrows `self`.
        let old = unsafe { tpmrs_memcg_enter(self.ptr) };
        ChargeScope {
            old,
            _memcg: PhantomData,
        }
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold the reference (or NULL); dropped once here.
        unsafe { tpmrs_memcg_put(self.ptr) };
    }
}

/// A charging scope from [`MemCg::charge`]; ends when dropped. Not `Send` (it holds a raw
/// pointer): it ends on the task it began on.
pub(crate) struct ChargeScope<'a> {
    old: *mut RawMemCg,
    _memcg: PhantomData<&'a MemCg>,
}

impl Drop for ChargeScope<'_> {
    fn drop(&mut self) {
        // SAFETY: `old` is the scope that was active when this one began on this task (NULL
        // or a memcg its own setter keeps referenced), restored here, once.
        unsafe { tpmrs_memcg_leave(self.old) };
    }
}
