// SPDX-License-Identifier: GPL-2.0
//! The file operations of `/dev/tpmrs0` and its registration as a misc device.
//!
//! The kernel crate's `MiscDevice` abstraction has no `poll`, which the TSS device TCTI needs
//! (it writes with `O_NONBLOCK` and polls for the response). Like Rust Binder, tpmrs therefore
//! builds its own `file_operations` and registers a `struct miscdevice` with it. Each
//! operation turns the raw arguments into safe types and calls [`Client`]; nothing here
//! decides anything about the protocol.

use crate::{client::Client, device::Shared};
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_char, c_int},
    fs::File,
    prelude::*,
    sync::{poll::PollTable, Arc},
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice},
};

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

    // SAFETY: The VFS passes the file being opened, valid for this call, with no fdget_pos
    // region of ours on this thread.
    let opener = unsafe { File::from_raw_file(file) };
    // The opener's effective uid as the kernel keeps it (`__kuid_val`: the uid in the initial
    // user namespace): whose saved and abandoned sessions the file may list, flush and load.
    let uid = opener.cred().euid().into_raw().val;
    let client = match Client::new(reg.shared.clone(), uid) {
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
    Client::release(client);
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
