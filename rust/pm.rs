// SPDX-License-Identifier: GPL-2.0
//! The PM notifier (`tpmrs_pm.c`): before the system suspends or hibernates, the resource
//! manager saves or flushes every context it keeps loaded between commands (resident
//! contexts, `proto::rm::resident`), with the chip held, and makes none resident again until
//! the system has resumed ([`Shared::suspend`], [`Shared::resume`]). A TPM power cycle loses
//! what is loaded; what is saved comes back after TPM2_Startup(STATE).

use crate::device::Shared;
use kernel::{
    error::to_result,
    ffi::{c_int, c_void},
    prelude::*,
    sync::{Arc, ArcBorrow},
};

extern "C" {
    fn tpmrs_pm_register(
        handler: unsafe extern "C" fn(data: *mut c_void, prepare: c_int),
        data: *mut c_void,
    ) -> c_int;
    fn tpmrs_pm_unregister();
}

/// The registered PM notifier, holding a reference on the shared state it acts on.
///
/// # Invariants
///
/// `shared` comes from [`Arc::into_raw`] and this object owns that reference; the notifier
/// is registered with it for as long as this object exists (the only one: the shim has a
/// single notifier block).
pub(crate) struct PmNotifier {
    shared: *const Shared,
}

// SAFETY: The pointer is an `Arc` reference, which may be used and dropped from any thread;
// the notifier may be unregistered from any thread.
unsafe impl Send for PmNotifier {}
// SAFETY: `&PmNotifier` gives access to nothing.
unsafe impl Sync for PmNotifier {}

impl PmNotifier {
    /// Registers the notifier for `shared`. Call once (module init).
    ///
    /// # Errors
    ///
    /// What `register_pm_notifier` returns.
    pub(crate) fn register(shared: Arc<Shared>) -> Result<Self> {
        let ptr = Arc::into_raw(shared);
        // SAFETY: `handler` matches the prototype the shim calls; `ptr` stays valid until
        // `drop` unregisters the notifier (which waits for a running handler) and only then
        // releases the reference.
        let ret = unsafe { tpmrs_pm_register(handler, ptr.cast_mut().cast()) };
        if let Err(e) = to_result(ret) {
            // SAFETY: `ptr` came from `Arc::into_raw` above and the shim does not hold it.
            drop(unsafe { Arc::from_raw(ptr) });
            return Err(e);
        }
        // INVARIANT: registered with the reference `ptr` owns.
        Ok(Self { shared: ptr })
    }
}

impl Drop for PmNotifier {
    fn drop(&mut self) {
        // SAFETY: Registered (type invariant); unregistered once, here. Once it returns, no
        // call of `handler` runs or will run.
        unsafe { tpmrs_pm_unregister() };
        // SAFETY: By the type invariant the pointer came from `Arc::into_raw` and this
        // object owns the reference, released once, here, after the last use above.
        drop(unsafe { Arc::from_raw(self.shared) });
    }
}

/// Called by the shim's notifier: `prepare` non-zero before a sleep transition, zero after
/// it.
///
/// # Safety
///
/// `data` is the pointer [`PmNotifier::register`] passed, whose reference is held until the
/// notifier is unregistered.
unsafe extern "C" fn handler(data: *mut c_void, prepare: c_int) {
    // SAFETY: `data` came from `Arc::into_raw` (the caller's guarantee), and the
    // `PmNotifier` keeps that reference until no call of this function runs.
    let shared: ArcBorrow<'_, Shared> = unsafe { ArcBorrow::from_raw(data.cast_const().cast()) };
    if prepare != 0 {
        shared.suspend();
    } else {
        shared.resume();
    }
}
