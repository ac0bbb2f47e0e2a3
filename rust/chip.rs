// SPDX-License-Identifier: GPL-2.0
//! The TPM chip: a reference on the kernel's default TPM 2.0 chip, its ops lock, and the
//! transport the protocol core sends commands through.
//!
//! Everything here goes through the C shim (`tpmrs_shim.c`): the kernel crate has no TPM
//! bindings and the layout of `struct tpm_chip` depends on Kconfig.

use crate::proto::{Tpm, TransportError};
use kernel::{bindings, error::to_result, prelude::*, types::NotThreadSafe, workqueue::Queue};

/// Opaque `struct tpm_chip`.
#[repr(C)]
pub(crate) struct RawChip {
    _private: [u8; 0],
}

/// Opaque `struct tpm_buf` (with its data), allocated by the shim.
#[repr(C)]
pub(crate) struct RawBuf {
    _private: [u8; 0],
}

extern "C" {
    fn tpmrs_chip_get() -> *mut RawChip;
    fn tpmrs_chip_get_num(num: kernel::ffi::c_int) -> *mut RawChip;
    fn tpmrs_chip_put(chip: *mut RawChip);
    fn tpmrs_chip_name(chip: *mut RawChip) -> *const kernel::ffi::c_char;
    fn tpmrs_chip_lock(chip: *mut RawChip) -> kernel::ffi::c_int;
    fn tpmrs_chip_unlock(chip: *mut RawChip);
    fn tpmrs_xfer_alloc() -> *mut RawBuf;
    fn tpmrs_xfer_free(buf: *mut RawBuf);
    fn tpmrs_transmit(
        chip: *mut RawChip,
        buf: *mut RawBuf,
        cmd: *const u8,
        cmd_len: usize,
        rsp: *mut u8,
        rsp_size: usize,
        sent: *mut bool,
    ) -> isize;
    fn tpmrs_wq_alloc() -> *mut bindings::workqueue_struct;
    fn tpmrs_wq_destroy(wq: *mut bindings::workqueue_struct);
}

/// A counted reference on the default TPM 2.0 chip, and the buffer tpmrs' commands go
/// through.
///
/// # Invariants
///
/// `ptr` is a valid chip on which this object holds a device reference. `xfer` is a buffer
/// from `tpmrs_xfer_alloc`, owned by this object, used only through a [`ChipGuard`] (that is,
/// with the chip's ops lock held, which no two guards hold at once).
pub(crate) struct Chip {
    ptr: *mut RawChip,
    xfer: *mut RawBuf,
}

// SAFETY: A device reference may be used and dropped from any thread; every operation on the
// chip that needs exclusion takes the chip's own lock (`tpm_try_get_ops`).
unsafe impl Send for Chip {}
// SAFETY: See `Send`: `&Chip` only allows lock/transmit, which the chip serializes itself.
unsafe impl Sync for Chip {}

impl Chip {
    /// Takes a reference on the default TPM 2.0 chip.
    ///
    /// # Errors
    ///
    /// `ENODEV` if there is no TPM, or it is not a TPM 2.0.
    pub(crate) fn get_default() -> Result<Self> {
        // SAFETY: No preconditions; returns a referenced chip or NULL.
        let ptr = unsafe { tpmrs_chip_get() };
        Self::with_buffer(ptr)
    }

    /// Wraps the referenced chip `ptr` (or NULL: `ENODEV`) with its buffer.
    fn with_buffer(ptr: *mut RawChip) -> Result<Self> {
        if ptr.is_null() {
            return Err(ENODEV);
        }
        // SAFETY: No preconditions; returns a buffer or NULL.
        let xfer = unsafe { tpmrs_xfer_alloc() };
        if xfer.is_null() {
            // SAFETY: `ptr` holds the reference taken for us, dropped exactly once here.
            unsafe { tpmrs_chip_put(ptr) };
            return Err(ENOMEM);
        }
        // INVARIANT: `ptr` is a chip with a reference taken for us, `xfer` a fresh buffer.
        Ok(Self { ptr, xfer })
    }

    /// Takes a reference on the TPM 2.0 chip `tpm<num>`, or on the default chip (the
    /// lowest-numbered one) if `num` is negative.
    ///
    /// # Errors
    ///
    /// `ENODEV` if there is no such TPM, or it is not a TPM 2.0; `ENOMEM`.
    pub(crate) fn get(num: i32) -> Result<Self> {
        if num < 0 {
            return Self::get_default();
        }
        // SAFETY: No preconditions; returns a referenced chip or NULL.
        let ptr = unsafe { tpmrs_chip_get_num(num) };
        Self::with_buffer(ptr)
    }

    /// The chip's device name ("tpm0").
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: By the type invariant the chip is valid; `dev_name` is a NUL-terminated string
        // that lives as long as the device, which our reference keeps alive.
        unsafe { CStr::from_char_ptr(tpmrs_chip_name(self.ptr)) }
    }

    /// Takes the chip's ops lock (sleeps). The TPM can be used until the guard is dropped.
    ///
    /// # Errors
    ///
    /// `EPIPE` when the chip is going away (what /dev/tpmrm0 answers then).
    pub(crate) fn lock(&self) -> Result<ChipGuard<'_>> {
        // SAFETY: By the type invariant the chip is valid.
        to_result(unsafe { tpmrs_chip_lock(self.ptr) }).map_err(|_| EPIPE)?;
        // INVARIANT: the lock was taken just above.
        Ok(ChipGuard {
            chip: self,
            _not_send: NotThreadSafe,
        })
    }
}

impl Drop for Chip {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the buffer is ours and no guard exists (a guard borrows
        // the chip); it is freed exactly once here.
        unsafe { tpmrs_xfer_free(self.xfer) };
        // SAFETY: By the type invariant we hold a reference, dropped exactly once here.
        unsafe { tpmrs_chip_put(self.ptr) };
    }
}

/// The chip's ops lock, held: the only way to send commands to the TPM.
///
/// Not `Send`: the lock is a mutex (`tpm_mutex`), released by the task that took it.
///
/// # Invariants
///
/// `tpm_try_get_ops` succeeded on `chip` and `tpm_put_ops` has not been called yet.
pub(crate) struct ChipGuard<'a> {
    chip: &'a Chip,
    _not_send: NotThreadSafe,
}

impl Tpm for ChipGuard<'_> {
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        let mut sent = true;
        // SAFETY: The chip is valid and locked (type invariants), so its buffer is ours alone
        // for the call (the `Chip` invariant); `cmd` and `rsp` are valid for the lengths given,
        // `sent` for a write, and the shim copies in and out of them before returning.
        let ret = unsafe {
            tpmrs_transmit(
                self.chip.ptr,
                self.chip.xfer,
                cmd.as_ptr(),
                cmd.len(),
                rsp.as_mut_ptr(),
                rsp.len(),
                &mut sent,
            )
        };
        match usize::try_from(ret) {
            Ok(len) => Ok(len),
            Err(_) => {
                let errno = i32::try_from(ret).unwrap_or(-(bindings::EIO as i32));
                Err(if sent {
                    TransportError::maybe_sent(errno)
                } else {
                    TransportError::not_sent(errno)
                })
            }
        }
    }
}

impl Drop for ChipGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the ops lock is held; it is released exactly once here.
        unsafe { tpmrs_chip_unlock(self.chip.ptr) };
    }
}

/// A transport for when the chip is gone: every command fails like a vanished chip does.
///
/// Used at close when the ops lock cannot be taken, so that the core queues its flushes
/// instead of forgetting them.
pub(crate) struct DeadTpm;

impl Tpm for DeadTpm {
    fn transmit(&mut self, _cmd: &[u8], _rsp: &mut [u8]) -> Result<usize, TransportError> {
        Err(TransportError::maybe_sent(-(bindings::EPIPE as i32)))
    }
}

/// The module's own workqueue for O_NONBLOCK commands.
///
/// Owned by the module and destroyed at module exit, which drains it: no queued work item can
/// outlive the module's code.
///
/// # Invariants
///
/// `ptr` is a valid workqueue allocated by `tpmrs_wq_alloc` and not yet destroyed.
pub(crate) struct WorkQueue {
    ptr: *mut bindings::workqueue_struct,
}

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for WorkQueue {}
// SAFETY: Enqueueing on a workqueue is thread safe.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// Allocates the workqueue.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let ptr = unsafe { tpmrs_wq_alloc() };
        if ptr.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: just allocated.
        Ok(Self { ptr })
    }

    /// The queue to enqueue on, for [`crate::device::Shared`].
    ///
    /// # Safety
    ///
    /// The reference must not be used after this `WorkQueue` is dropped.
    pub(crate) unsafe fn queue(&self) -> &'static Queue {
        // SAFETY: `ptr` is a live workqueue (type invariant); the caller promises not to use
        // the reference after `drop` destroys it.
        unsafe { Queue::from_raw(self.ptr) }
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `ptr` is a live workqueue; destroyed exactly once here.
        unsafe { tpmrs_wq_destroy(self.ptr) };
    }
}
