// SPDX-License-Identifier: GPL-2.0
//! The state all open files of `/dev/tpmrs0` share: the chip, the resource manager and its
//! wait queue, and the counters shown in debugfs (`stats`, `clients`). The file operations
//! are in `fops.rs`, what one open file owns in `client.rs`.
//!
//! # Lock order
//!
//! `Client::inner` (per open file) is never held while `Shared::rm` is taken. `Shared::rm`
//! (the resource manager: command table, session registry) is taken before the chip's ops lock
//! (`tpm_try_get_ops`, the chip's `tpm_mutex`), and both are held together for the whole
//! command, so every command of every space runs one at a time, like tpmrm0.
//!
//! `Shared::clients` (the list of open files) is taken alone: nothing else is held while it
//! is, and it is released before `Shared::rm` is taken to print the list. The spinlocks
//! `Shared::stats` and `ClientStats::info` are innermost: taken last (under `Shared::rm`, say) and
//! held only to copy a few counters.

use crate::{
    chip::{Chip, DeadTpm},
    proto::{Request, Rm, RmError, SessionState, Space, Stats, Step},
};
use kernel::{
    alloc::KVec,
    new_condvar, new_mutex, new_spinlock,
    prelude::*,
    sync::{Arc, CondVar, CondVarTimeoutResult, Mutex, MutexGuard, SpinLock},
    time::{Instant, Monotonic},
    workqueue::Queue,
};

/// Who opened a file and what tpmrs did for it: the glue's part of its line in
/// `/sys/kernel/debug/tpmrs/clients` (see [`show_clients`]).
#[derive(Clone, Copy)]
pub(crate) struct ClientInfo {
    /// Process (thread group) id of the opener.
    pub(crate) pid: i32,
    /// Command name of the opener, NUL-padded.
    pub(crate) comm: [u8; 16],
    /// The id of the file's space in the resource manager (0: none yet).
    pub(crate) space_id: u64,
    /// Transient objects the space holds, as of its last command.
    pub(crate) objects: u64,
    /// Commands that waited for a session slot.
    pub(crate) waits: u64,
    /// The longest of those waits (ns).
    pub(crate) longest_wait_ns: u64,
    /// TPM commands sent for this file's commands.
    pub(crate) tpm_commands: u64,
}

/// The counters of one open file, shared by the file and the list in [`Shared`].
#[pin_data]
pub(crate) struct ClientStats {
    /// Innermost lock (see the lock order above): held only to copy the counters.
    #[pin]
    pub(crate) info: SpinLock<ClientInfo>,
}

impl ClientStats {
    /// Counters for a new file.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(info: ClientInfo) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                info <- new_spinlock!(info, "tpmrs::ClientStats::info"),
            }),
            GFP_KERNEL,
        )
    }
}

/// What one client command cost, for its file's line in `/sys/kernel/debug/tpmrs/clients`.
#[derive(Default)]
pub(crate) struct Cost {
    /// TPM commands sent while running it: its own and the resource manager's (context
    /// loads and saves, flushes, evictions done for it while it waited).
    pub(crate) tpm_commands: u64,
    /// When it began to wait for a session slot, if it did.
    wait_began_ns: Option<u64>,
    /// How long it waited for a session slot, if it did.
    pub(crate) waited_ns: Option<u64>,
}

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
    queue: &'static Queue,
    /// The origin of the resource manager's clock (see [`Self::now_ns`]).
    epoch: Instant<Monotonic>,
    /// A copy of the resource manager's counters, refreshed after each of its calls, so that
    /// reading them never waits for a TPM command behind `rm`.
    #[pin]
    stats: SpinLock<Stats>,
    /// The counters of every open file, for `/sys/kernel/debug/tpmrs/clients`.
    #[pin]
    clients: Mutex<KVec<Arc<ClientStats>>>,
}

impl Shared {
    /// Creates the shared state around an initialized resource manager.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(chip: Chip, rm: Rm, queue: &'static Queue) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                chip,
                rm <- new_mutex!(rm, "tpmrs::Shared::rm"),
                session_freed <- new_condvar!("tpmrs::Shared::session_freed"),
                queue,
                epoch: Instant::now(),
                stats <- new_spinlock!(Stats::default(), "tpmrs::Shared::stats"),
                clients <- new_mutex!(KVec::new(), "tpmrs::Shared::clients"),
            }),
            GFP_KERNEL,
        )
    }

    /// The resource manager's clock: monotonic nanoseconds since the module was loaded.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(0)
    }

    /// The workqueue for O_NONBLOCK commands.
    pub(crate) fn queue(&self) -> &Queue {
        self.queue
    }

    /// Runs one client command for `space`, holding the resource manager and the chip.
    ///
    /// When the TPM's session slots are exhausted, the command waits its turn in the resource
    /// manager's FIFO queue: this is the wait protocol's loop ([`Rm::step`], one call per
    /// step), which sleeps on [`Self::session_freed`] with `rm` and the chip released until
    /// a slot is freed or reserved for it, or until the time the step named (an eviction due
    /// after SESSION_TIMEOUT, a poll). A step that would only sleep again
    /// ([`Rm::sleep_until`]) does not take the chip. The wait is interruptible; a signal
    /// leaves the queue (passing on any reservation) and nothing of the command behind, and
    /// the space keeps its queue place and wait clock for a restarted write (the resource
    /// manager keeps a space's place for SESSION_TIMEOUT / 4 after its request ends).
    /// `closed` is asked before every step: once it says the file is gone (an O_NONBLOCK
    /// command in the worker whose file was released), the command stops at once, with
    /// `EPIPE`, evicting nobody. [`Self::cancel_waits`] wakes it.
    ///
    /// # Errors
    ///
    /// `EPIPE` when the chip is going away or the file is closed; `ERESTARTSYS` when a signal
    /// ends a wait; otherwise the errno the protocol core chose (`EINVAL` for malformed
    /// commands, a transport errno, ...).
    pub(crate) fn execute(
        &self,
        space: &mut Space,
        cmd: &[u8],
        rsp: &mut [u8],
        cost: &mut Cost,
        closed: &dyn Fn() -> bool,
    ) -> Result<usize> {
        let mut rm = self.rm.lock();
        let mut req = Request::new();
        let ret = loop {
            if closed() {
                break Err(EPIPE);
            }
            let sent = rm.stats().tpm_commands;
            let step = match rm.sleep_until(&req, self.now_ns()) {
                Some(until_ns) => Step::Sleep { until_ns },
                None => match self.chip.lock() {
                    Ok(mut tpm) => rm.step(&mut req, space, &mut tpm, self.now_ns(), cmd, rsp),
                    Err(e) => break Err(e),
                },
            };
            cost.tpm_commands += rm.stats().tpm_commands.wrapping_sub(sent);
            self.after_call(&mut rm);
            match step {
                Step::Done(r) => break r.map_err(to_error),
                Step::Sleep { until_ns } => {
                    let now = self.now_ns();
                    cost.wait_began_ns.get_or_insert(now);
                    let ms = until_ns.saturating_sub(now).div_ceil(1_000_000).max(1);
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
        let now = self.now_ns();
        cost.waited_ns = cost.wait_began_ns.map(|t| now.saturating_sub(t));
        rm.end_request(req, now);
        self.after_call(&mut rm);
        ret
    }

    /// Wakes every waiting command so that each asks again whether its file is still open
    /// (see `closed` in [`Self::execute`]).
    pub(crate) fn cancel_waits(&self) {
        // Taking `rm` orders this after a waiter's check of `closed` and before its sleep.
        let _rm = self.rm.lock();
        self.session_freed.notify_all();
    }

    /// After each call of the resource manager: refreshes the copy of its counters, and
    /// wakes the sleeping waiters if it freed or reserved a slot.
    fn after_call(&self, rm: &mut MutexGuard<'_, Rm>) {
        let stats = rm.stats();
        *self.stats.lock() = stats;
        if rm.take_wakeup() {
            self.session_freed.notify_all();
        }
    }

    /// Flushes everything `space` holds from the TPM (at close). Never fails: what cannot be
    /// flushed now is queued in the resource manager and retried with the next command.
    pub(crate) fn close_space(&self, mut space: Space) {
        let mut rm = self.rm.lock();
        match self.chip.lock() {
            Ok(mut tpm) => rm.close_space(&mut space, &mut tpm, self.now_ns()),
            Err(_) => rm.close_space(&mut space, &mut DeadTpm, self.now_ns()),
        }
        self.after_call(&mut rm);
    }

    /// Creates the space for a newly opened file.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new_space(&self) -> Result<Space> {
        let mut rm = self.rm.lock();
        let space = rm.new_space().map_err(to_error);
        self.after_call(&mut rm);
        space
    }

    /// Lists a newly opened file in `/sys/kernel/debug/tpmrs/clients`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn add_client(&self, client: Arc<ClientStats>) -> Result {
        self.clients.lock().push(client, GFP_KERNEL)?;
        Ok(())
    }

    /// Takes a released file off the list.
    pub(crate) fn remove_client(&self, client: &ClientStats) {
        let mut clients = self.clients.lock();
        if let Some(i) = clients.iter().position(|c| core::ptr::eq(&**c, client)) {
            // Dropped after the lock (the caller still holds a reference, so it is not the
            // last one, but nothing needs to run under the lock).
            let removed = clients.remove(i);
            drop(clients);
            drop(removed);
        }
    }
}

/// The contents of `/sys/kernel/debug/tpmrs/clients`: one line per open file, with the pid
/// and command name of the process that opened it, its space id, the objects and sessions it
/// holds (sessions loaded in the TPM, saved by tpmrs, saved by the client), its waits for a
/// session slot (count, longest in ms), the sessions evicted from it, and the TPM commands
/// sent for it.
pub(crate) fn show_clients(
    shared: &Arc<Shared>,
    f: &mut kernel::fmt::Formatter<'_>,
) -> kernel::fmt::Result {
    // A copy of the list, so that `clients` is not held while waiting for `rm`.
    let clients = {
        let list = shared.clients.lock();
        let mut copy =
            KVec::with_capacity(list.len(), GFP_KERNEL).map_err(|_| kernel::fmt::Error)?;
        for c in list.iter() {
            copy.push(c.clone(), GFP_KERNEL)
                .map_err(|_| kernel::fmt::Error)?;
        }
        copy
    };
    let rm = shared.rm.lock();
    for c in clients.iter() {
        let info = *c.info.lock();
        let (mut loaded, mut saved_rm, mut saved_client) = (0u32, 0u32, 0u32);
        for e in rm.sessions().entries() {
            if e.owner != Some(info.space_id) {
                continue;
            }
            match e.state {
                SessionState::Loaded => loaded += 1,
                SessionState::SavedByRm(_) => saved_rm += 1,
                SessionState::SavedByClient => saved_client += 1,
                SessionState::FlushPending => {}
            }
        }
        let comm_len = info
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(info.comm.len());
        let comm = info
            .comm
            .get(..comm_len)
            .and_then(|c| core::str::from_utf8(c).ok())
            .unwrap_or("?");
        writeln!(
            f,
            "pid={} comm={} space={} objects={} sessions_loaded={} sessions_saved_by_tpmrs={} \
             sessions_saved_by_client={} waits={} longest_wait_ms={} evicted={} tpm_commands={}",
            info.pid,
            comm,
            info.space_id,
            info.objects,
            loaded,
            saved_rm,
            saved_client,
            info.waits,
            info.longest_wait_ns / 1_000_000,
            rm.evictions_of(info.space_id),
            info.tpm_commands,
        )?;
    }
    Ok(())
}

/// The contents of `/sys/kernel/debug/tpmrs/stats`: the resource manager's counters
/// ([`Stats::rows`]), one `name value` pair per line.
pub(crate) fn show_stats(
    shared: &Arc<Shared>,
    f: &mut kernel::fmt::Formatter<'_>,
) -> kernel::fmt::Result {
    // The copy, not `rm`: reading never waits behind a TPM command.
    let s = *shared.stats.lock();
    for (name, value) in s.rows() {
        writeln!(f, "{name} {value}")?;
    }
    Ok(())
}

/// The kernel error for a resource-manager error.
fn to_error(e: RmError) -> Error {
    Error::from_errno(e.to_errno())
}
