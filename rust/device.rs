// SPDX-License-Identifier: GPL-2.0
//! `/dev/tpmrs0`: the misc device, its file operations and the state all open files share.
//!
//! The kernel crate's `MiscDevice` abstraction has no `poll`, which the TSS device TCTI needs
//! (it writes with `O_NONBLOCK` and polls for the response). Like Rust Binder, tpmrs therefore
//! builds its own `file_operations` and registers a `struct miscdevice` with it.
//!
//! # Lock order
//!
//! `Client::inner` (per open file) is never held while `Shared::rm` is taken. `Shared::rm`
//! (the resource manager: command table, session registry) is taken before the chip's ops lock
//! (`tpm_try_get_ops`, the chip's `tpm_mutex`), and both are held together for the whole
//! command, so every command of every space runs one at a time, like tpmrm0.

use crate::{
    chip::{Chip, DeadTpm},
    client::Client,
    proto::{Request, Rm, RmError, Space, Step},
};
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_char, c_int},
    fs::File,
    new_condvar, new_mutex,
    prelude::*,
    sync::{poll::PollTable, Arc, CondVar, CondVarTimeoutResult, Mutex, MutexGuard},
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice},
};

/// What every open file shares: the chip and the resource manager's global state.
#[pin_data]
pub(crate) struct Shared {
    /// The TPM.
    pub(crate) chip: Chip,
    /// The resource manager. Lock order: before the chip's ops lock.
    #[pin]
    pub(crate) rm: Mutex<Rm>,
    /// Commands waiting for a session slot sleep here (with `rm` released); notified whenever
    /// the resource manager reports a freed slot or a reservation ([`Rm::take_wakeup`]).
    #[pin]
    session_freed: CondVar,
    /// Where O_NONBLOCK commands run.
    pub(crate) wq: *mut bindings::workqueue_struct,
}

// SAFETY: `wq` is only used to enqueue work, which is thread safe; the module keeps the
// workqueue alive longer than any `Shared` user (see `TpmrsModule`). The other fields are
// `Send`/`Sync` themselves.
unsafe impl Send for Shared {}
// SAFETY: As for `Send`.
unsafe impl Sync for Shared {}

impl Shared {
    /// Creates the shared state around an initialized resource manager.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(chip: Chip, rm: Rm, wq: &crate::chip::WorkQueue) -> Result<Arc<Self>> {
        let wq = wq.raw();
        Arc::pin_init(
            pin_init!(Self {
                chip,
                rm <- new_mutex!(rm, "tpmrs::Shared::rm"),
                session_freed <- new_condvar!("tpmrs::Shared::session_freed"),
                wq,
            }),
            GFP_KERNEL,
        )
    }

    /// The workqueue for O_NONBLOCK commands.
    pub(crate) fn queue(&self) -> &kernel::workqueue::Queue {
        // SAFETY: The module destroys the workqueue only after the misc device is gone and
        // every file is closed, i.e. after the last user of `Shared` can enqueue.
        unsafe { kernel::workqueue::Queue::from_raw(self.wq) }
    }

    /// Runs one client command for `space`, holding the resource manager and the chip.
    ///
    /// When the TPM's session slots are exhausted, the command waits its turn in the resource
    /// manager's FIFO queue: this is the wait protocol's loop ([`Rm::step`], one call per
    /// step), which sleeps on [`Self::session_freed`] with `rm` and the chip released until
    /// a slot is freed or reserved for it, or until the time the step named (an eviction due
    /// after SESSION_TIMEOUT, a poll). The wait is interruptible; a signal leaves the queue
    /// (passing on any reservation) and nothing of the command behind.
    ///
    /// # Errors
    ///
    /// `EPIPE` when the chip is going away; `ERESTARTSYS` when a signal ends a wait;
    /// otherwise the errno the protocol core chose (`EINVAL` for malformed commands, a
    /// transport errno, ...).
    pub(crate) fn execute(&self, space: &mut Space, cmd: &[u8], rsp: &mut [u8]) -> Result<usize> {
        let mut rm = self.rm.lock();
        let mut req = Request::new();
        let ret = loop {
            let step = match self.chip.lock() {
                Ok(mut tpm) => rm.step(&mut req, space, &mut tpm, now_ns(), cmd, rsp),
                Err(e) => break Err(e),
            };
            self.wake_waiters(&mut rm);
            match step {
                Step::Done(r) => break r.map_err(to_error),
                Step::Sleep { until_ns } => {
                    let ms = until_ns.saturating_sub(now_ns()).div_ceil(1_000_000).max(1);
                    let jiffies = kernel::time::msecs_to_jiffies(ms.min(60_000) as u32);
                    if let CondVarTimeoutResult::Signal { .. } = self
                        .session_freed
                        .wait_interruptible_timeout(&mut rm, jiffies)
                    {
                        break Err(ERESTARTSYS);
                    }
                }
            }
        };
        rm.end_request(req, now_ns());
        self.wake_waiters(&mut rm);
        ret
    }

    /// Wakes the sleeping waiters if the resource manager freed or reserved a slot.
    fn wake_waiters(&self, rm: &mut MutexGuard<'_, Rm>) {
        if rm.take_wakeup() {
            self.session_freed.notify_all();
        }
    }

    /// Flushes everything `space` holds from the TPM (at close). Never fails: what cannot be
    /// flushed now is queued in the resource manager and retried with the next command.
    pub(crate) fn close_space(&self, mut space: Space) {
        let mut rm = self.rm.lock();
        match self.chip.lock() {
            Ok(mut tpm) => rm.close_space(&mut space, &mut tpm, now_ns()),
            Err(_) => rm.close_space(&mut space, &mut DeadTpm, now_ns()),
        }
        self.wake_waiters(&mut rm);
    }

    /// Creates the space for a newly opened file.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new_space(&self) -> Result<Space> {
        self.rm.lock().new_space().map_err(to_error)
    }
}

/// The contents of `/sys/kernel/debug/tpmrs/stats`: the resource manager's counters, one
/// `name value` pair per line.
pub(crate) fn show_stats(
    shared: &Arc<Shared>,
    f: &mut kernel::fmt::Formatter<'_>,
) -> kernel::fmt::Result {
    let s = shared.rm.lock().stats();
    let rows: [(&str, u64); 19] = [
        ("client_commands", s.client_commands),
        ("tpm_commands", s.tpm_commands),
        ("context_loads", s.context_loads),
        ("context_saves", s.context_saves),
        ("flushes", s.flushes),
        ("synthesized_responses", s.synthesized_responses),
        ("rejected_commands", s.rejected_commands),
        ("transport_errors", s.transport_errors),
        ("sessions", s.sessions),
        ("abandoned", s.abandoned),
        ("waiting", s.waiting),
        ("waits", s.waits),
        ("longest_wait_ns", s.longest_wait_ns),
        ("evictions", s.evictions),
        ("gap_repairs", s.gap_repairs),
        ("continuation_hits", s.continuation_hits),
        ("open_spaces", s.open_spaces),
        ("tombstones", s.tombstones),
        ("pending_flushes", s.pending_flushes),
    ];
    for (name, value) in rows {
        writeln!(f, "{name} {value}")?;
    }
    Ok(())
}

/// The kernel error for a resource-manager error.
fn to_error(e: RmError) -> Error {
    Error::from_errno(e.to_errno())
}

/// Monotonic time in nanoseconds, for session timestamps.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions.
    let t = unsafe { bindings::ktime_get() };
    u64::try_from(t).unwrap_or(0)
}

/// The registered `/dev/tpmrs0`.
///
/// # Invariants
///
/// `misc` is registered (with [`FOPS`]) for as long as this object exists.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    #[pin]
    misc: Opaque<bindings::miscdevice>,
}

impl Registration {
    /// Registers `/dev/tpmrs0`.
    ///
    /// # Errors
    ///
    /// What `misc_register` returns (`EBUSY` if the name is taken, `ENOMEM`).
    pub(crate) fn register(shared: Arc<Shared>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            // `shared` is initialized before `misc`: `open` may run as soon as it is registered.
            try_pin_init!(Self {
                shared,
                misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                    // SAFETY: The initializer may write to `slot`; all-zero is a valid
                    // `miscdevice` which we then fill in.
                    unsafe {
                        slot.write(pin_init::zeroed());
                        (*slot).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                        (*slot).name = c"tpmrs0".as_char_ptr();
                        (*slot).fops = &FOPS.0;
                    }
                    // SAFETY: `slot` holds a filled-in miscdevice in pinned memory that lives
                    // until `PinnedDrop` deregisters it.
                    // INVARIANT: registered on success.
                    to_result(unsafe { bindings::misc_register(slot) })
                }),
            }),
            GFP_KERNEL,
        )
    }
}

// SAFETY: `misc_register`/`misc_deregister` may be called from any thread, and `&Registration`
// gives no access to the `miscdevice` beyond what the misc core synchronizes itself.
unsafe impl Send for Registration {}
// SAFETY: See `Send`.
unsafe impl Sync for Registration {}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered by the type invariant; deregistered exactly once here.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

/// Makes a C operations table usable as a `static`.
#[repr(transparent)]
struct AssertSync<T>(T);
// SAFETY: Only used for the `file_operations` table, which is never written after build time.
unsafe impl<T> Sync for AssertSync<T> {}

/// The file operations of `/dev/tpmrs0`.
static FOPS: AssertSync<bindings::file_operations> = AssertSync(bindings::file_operations {
    owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
    open: Some(tpmrs_open),
    release: Some(tpmrs_release),
    read: Some(tpmrs_read),
    write: Some(tpmrs_write),
    poll: Some(tpmrs_poll),
    ..pin_init::zeroed()
});

/// # Safety
///
/// Called by the VFS through `misc_open`, which has set `private_data` to our `miscdevice`
/// and keeps it registered during the call.
unsafe extern "C" fn tpmrs_open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: `misc_open` stored the `struct miscdevice` pointer in `private_data`.
    let misc = unsafe { (*file).private_data }.cast::<Opaque<bindings::miscdevice>>();
    // SAFETY: Our only miscdevice is the `misc` field of a `Registration`, which stays alive
    // while it is registered, i.e. for this whole call (`Opaque` is `repr(transparent)`).
    let reg = unsafe { &*kernel::container_of!(misc, Registration, misc) };

    let client = match Client::new(reg.shared.clone()) {
        Ok(client) => client,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `open` owns `private_data`; from here on it holds our `Arc<Client>`, which
    // `tpmrs_release` takes back.
    unsafe { (*file).private_data = client.into_foreign().cast() };
    0
}

/// # Safety
///
/// Called by the VFS once per successful `tpmrs_open`, after the last other file operation.
unsafe extern "C" fn tpmrs_release(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` holds the `Arc<Client>` from `tpmrs_open`; release owns it.
    let client =
        unsafe { <Arc<Client> as ForeignOwnable>::from_foreign((*file).private_data.cast()) };
    client.release();
    0
}

/// # Safety
///
/// Called by the VFS between `tpmrs_open` and `tpmrs_release`; `buf` is a user pointer.
unsafe extern "C" fn tpmrs_read(
    file: *mut bindings::file,
    buf: *mut c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: `private_data` holds the `Arc<Client>` from `tpmrs_open` until release.
    let client = unsafe { <Arc<Client> as ForeignOwnable>::borrow((*file).private_data.cast()) };
    let user = UserSlice::new(UserPtr::from_ptr(buf.cast()), count).writer();
    match client.read(user, count) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called by the VFS between `tpmrs_open` and `tpmrs_release`; `buf` is a user pointer.
unsafe extern "C" fn tpmrs_write(
    file: *mut bindings::file,
    buf: *const c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: `private_data` holds the `Arc<Client>` from `tpmrs_open` until release.
    let client = unsafe { <Arc<Client> as ForeignOwnable>::borrow((*file).private_data.cast()) };
    // SAFETY: The VFS passes a valid file, with no fdget_pos region of ours on this thread.
    let f = unsafe { File::from_raw_file(file) };
    let nonblock = f.flags() & kernel::fs::file::flags::O_NONBLOCK != 0;
    let user = UserSlice::new(UserPtr::from_ptr(buf.cast_mut().cast()), count).reader();
    match Client::write(client, user, count, nonblock) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called by the VFS between `tpmrs_open` and `tpmrs_release`.
unsafe extern "C" fn tpmrs_poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: `private_data` holds the `Arc<Client>` from `tpmrs_open` until release.
    let client = unsafe { <Arc<Client> as ForeignOwnable>::borrow((*file).private_data.cast()) };
    // SAFETY: The VFS passes a valid file, with no fdget_pos region of ours on this thread.
    let f = unsafe { File::from_raw_file(file) };
    // SAFETY: The VFS passes a valid (or NULL) poll table for the duration of the call.
    let table = unsafe { PollTable::from_raw(wait) };
    client.poll(f, table)
}
