// SPDX-License-Identifier: GPL-2.0
//! The state all open files of `/dev/tpmrs0` share: the chip, the resource manager and its
//! wait queue, and the counters shown in debugfs (`stats`, `clients`). The file operations
//! are in `fops.rs`, what one open file owns in `client.rs`.
//!
//! # Lock order
//!
//! `Client::inner` (per open file) is never held while `Shared::rm` is taken. `Shared::rm`
//! (the resource manager: command table, session registry) is taken before the chip's ops
//! lock (`tpm_try_get_ops`, the chip's `tpm_mutex`), and both are held together for each
//! step of a command that uses the TPM, so every TPM command of every space runs one at a
//! time, like tpmrm0. Which command's step goes next is decided under `Shared::turns` (the
//! queue for the TPM, `proto::turns`), which is never held together with `Shared::rm`.
//!
//! The PM notifier (`pm.rs`) takes `Shared::rm` and then the chip, as a step does, and never
//! a turn: it runs before tasks are frozen, while commands may still run.
//!
//! `Shared::clients` (the list of open files) is taken alone, or under `Shared::rm` to wake
//! every waiter (only when the resource manager could not keep the list of whom to wake),
//! never the other way round: `show_clients` copies the list and releases it before it takes
//! `Shared::rm`. `Shared::by_space` (the same files by space id; an XArray, whose lock is a
//! spinlock) is taken under `Shared::rm` or `Shared::turns` to wake one file's waiting
//! command or mark it owed an answer, and under `Shared::clients` to add a file: nothing is
//! taken under it and nothing sleeps under it (a store may drop it to allocate). The
//! spinlocks `Shared::stats` and `ClientStats::info` are innermost: taken last (under
//! `Shared::rm` or `Shared::clients`) and held only to copy a few counters.

use crate::{
    chip::{Chip, DeadTpm},
    proto::{Request, Rm, RmError, Space, SpaceIds, Stats, Step, Turn, Turns},
};

mod debugfs;
use core::sync::atomic::Ordering;
pub(crate) use debugfs::{show_clients, show_stats, ClientInfo, ClientStats};
use kernel::{
    alloc::KVec,
    new_mutex, new_spinlock,
    prelude::*,
    sync::{Arc, CondVarTimeoutResult, Mutex, MutexGuard, SpinLock},
    time::{Instant, Monotonic},
    workqueue::Queue,
    xarray::{AllocKind, XArray},
};

/// How long a command waiting for its turn at the TPM sleeps at most before it looks again
/// (ms; it is woken when its turn comes: this only bounds the cost of a lost wake-up).
const TURN_POLL_MS: u32 = 100;

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
    /// Whose command uses the TPM next. Held only to queue, take and give back a turn, never
    /// with `rm`.
    #[pin]
    turns: Mutex<Turns>,
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
    /// The same files by space id: whom a turn handoff or a freed slot wakes is looked up
    /// here, in time that does not grow with the number of open files (an XArray: a radix
    /// tree of 64-way nodes), not by walking `clients`. Its lock is a spinlock, innermost:
    /// held only to find a file and wake it or mark it owed.
    #[pin]
    by_space: XArray<Arc<ClientStats>>,
    /// Space ids and the count of open spaces: an open takes no lock that TPM work holds.
    spaces: SpaceIds,
}

impl Shared {
    /// Creates the shared state around an initialized resource manager.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(chip: Chip, rm: Rm, queue: &'static Queue) -> Result<Arc<Self>> {
        let by_uid = rm.config().fair_share_by_uid;
        Arc::pin_init(
            pin_init!(Self {
                chip,
                rm <- new_mutex!(rm, "tpmrs::Shared::rm"),
                turns <- new_mutex!(Turns::new(by_uid), "tpmrs::Shared::turns"),
                queue,
                epoch: Instant::now(),
                stats <- new_spinlock!(Stats::default(), "tpmrs::Shared::stats"),
                clients <- new_mutex!(KVec::new(), "tpmrs::Shared::clients"),
                by_space <- XArray::new(AllocKind::Alloc),
                spaces: SpaceIds::new(),
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

    /// Runs one client command of the file `me` for `space`.
    ///
    /// A command owed an answer without the TPM ([`Rm::answer_at_once`]: its first use of
    /// a session lost to an eviction) is answered at once, in neither queue. Others wait in
    /// two queues:
    /// - **The TPM** ([`Turns`], under `turns`): each step that needs the TPM first takes a
    ///   turn, and the turn goes to the waiting command whose space has had the fewest turns
    ///   lately (a new or gathering space first), not to whoever queued first on a lock. The one whose turn it is then holds
    ///   `rm` and the chip for that step, and wakes the next ([`Self::wake`]): only that
    ///   waiter wakes. `rm` is thus wanted by the turn's holder and by short holders only
    ///   (an open, a close, a waiter deciding to sleep on), never by a queue of TPM work.
    /// - **Session slots**: when the TPM's session slots are exhausted, the command waits
    ///   its turn in the resource manager's FIFO queue: this is the wait protocol's loop
    ///   ([`Rm::step`], one call per step), which sleeps on `me.wake` with `rm` released
    ///   until a slot is freed or reserved for its space, or until the time the step named
    ///   (an eviction due after SESSION_TIMEOUT, a poll). A step that would only sleep again
    ///   ([`Rm::sleep_until`]) takes no turn and not the chip.
    ///
    /// Every wait is interruptible; a signal leaves both queues (passing on any reservation
    /// or turn) and nothing of the command behind, and the space keeps its queue place and
    /// wait clock for a restarted write (the resource manager keeps a space's place for
    /// SESSION_TIMEOUT / 4 after its request ends). `closed` is asked before every step: once
    /// it says the file is gone (an O_NONBLOCK command in the worker whose file was
    /// released), the command stops at once, with `EPIPE`, evicting nobody.
    /// [`Self::cancel_waits`] wakes it.
    ///
    /// # Errors
    ///
    /// `EPIPE` when the chip is going away or the file is closed; `ERESTARTSYS` when a signal
    /// ends a wait; `ENOMEM`; otherwise the errno the protocol core chose (`EINVAL` for
    /// malformed commands, a transport errno, ...).
    pub(crate) fn execute(
        &self,
        me: &ClientStats,
        space: &mut Space,
        cmd: &[u8],
        rsp: &mut [u8],
        cost: &mut Cost,
        closed: &dyn Fn() -> bool,
    ) -> Result<usize> {
        let mut req = Request::new();
        if me.owed.load(Ordering::Relaxed) {
            // An answer owed without the TPM (a session lost to an eviction) takes no turn.
            let mut rm = self.rm.lock();
            let owed = rm.answer_at_once(space, cmd, rsp);
            me.owed.store(rm.is_owed(space.id()), Ordering::Relaxed);
            if let Some(r) = owed {
                let ret = r.map_err(to_error);
                self.end_command(&mut rm, req, space, cost);
                drop(rm);
                return self.traced(ret, space, cmd, rsp, cost);
            }
        }
        let mut first = true;
        let ret = loop {
            if closed() {
                break Err(EPIPE);
            }
            // Does the next step need the TPM? (A new command always does.)
            if !core::mem::take(&mut first) {
                let mut rm = self.rm.lock();
                if let Some(until_ns) = rm.sleep_until(&req, self.now_ns()) {
                    if self.sleep(me, &mut rm, cost, until_ns).is_err() {
                        break Err(ERESTARTSYS);
                    }
                    continue;
                }
            }
            let turn = match self.take_turn(me, space, cmd, req.queued(), closed) {
                Ok(turn) => turn,
                Err(e) => break Err(e),
            };
            let mut rm = self.rm.lock();
            // Asked again under `rm`: `release` marks the file closed before its worker takes
            // `rm` to wake this command, so a step never runs (and evicts others) for a file
            // that is already closed.
            if closed() {
                drop(rm);
                self.give_turn(turn, space);
                break Err(EPIPE);
            }
            let sent = rm.stats().tpm_commands;
            let step = match self.chip.lock() {
                Ok(mut tpm) => Ok(rm.step(&mut req, space, &mut tpm, self.now_ns(), cmd, rsp)),
                Err(e) => Err(e),
            };
            cost.tpm_commands += rm.stats().tpm_commands.wrapping_sub(sent);
            let ret = match step {
                Ok(Step::Done(r)) => Some(r.map_err(to_error)),
                // Sleeps at the top of the loop, after asking again under `rm`: what
                // changed since is not missed.
                Ok(Step::Sleep { .. }) => None,
                Err(e) => Some(Err(e)),
            };
            let Some(ret) = ret else {
                self.after_call(&mut rm);
                drop(rm);
                self.give_turn(turn, space);
                continue;
            };
            // The command ends under the hold of its last step, before the turn passes on:
            // taking `rm` again afterwards would wait for the next command's TPM work.
            self.end_command(&mut rm, req, space, cost);
            drop(rm);
            self.give_turn(turn, space);
            return self.traced(ret, space, cmd, rsp, cost);
        };
        let mut rm = self.rm.lock();
        self.end_command(&mut rm, req, space, cost);
        drop(rm);
        self.traced(ret, space, cmd, rsp, cost)
    }

    /// The command of `req` is over: it leaves the wait queue, and its cost is complete.
    fn end_command(
        &self,
        rm: &mut MutexGuard<'_, Rm>,
        req: Request,
        space: &mut Space,
        cost: &mut Cost,
    ) {
        let now = self.now_ns();
        cost.waited_ns = cost.wait_began_ns.map(|t| now.saturating_sub(t));
        rm.end_request(req, now);
        rm.note_gathering(space, now);
        self.after_call(rm);
    }

    /// Fires the command's trace event, and returns its result.
    fn traced(
        &self,
        ret: Result<usize>,
        space: &Space,
        cmd: &[u8],
        rsp: &[u8],
        cost: &Cost,
    ) -> Result<usize> {
        let waited_ns = cost.waited_ns.unwrap_or(0);
        crate::trace::command(space.id(), cmd, rsp, &ret, cost.tpm_commands, waited_ns);
        ret
    }

    /// Sleeps (with `rm` released) until a session slot is freed or reserved for the space
    /// of `me`, or until `until_ns`.
    ///
    /// # Errors
    ///
    /// `ERESTARTSYS` if a signal ended the sleep.
    fn sleep(
        &self,
        me: &ClientStats,
        rm: &mut MutexGuard<'_, Rm>,
        cost: &mut Cost,
        until_ns: u64,
    ) -> Result {
        let now = self.now_ns();
        cost.wait_began_ns.get_or_insert(now);
        let ms = until_ns.saturating_sub(now).div_ceil(1_000_000).max(1);
        let jiffies = kernel::time::msecs_to_jiffies(ms.min(60_000) as u32);
        match me.wake.wait_interruptible_timeout(rm, jiffies) {
            CondVarTimeoutResult::Signal { .. } => Err(ERESTARTSYS),
            _ => Ok(()),
        }
    }

    /// Waits for a turn at the TPM for the command of `me` (see [`Turns`]): the command whose
    /// turn ends wakes the next. `queued`: the command holds a place in the wait queue for a
    /// session slot (it goes first within its uid's share).
    ///
    /// # Errors
    ///
    /// `ERESTARTSYS` (a signal), `EPIPE` (the file was closed), `ENOMEM`.
    fn take_turn(
        &self,
        me: &ClientStats,
        space: &Space,
        cmd: &[u8],
        queued: bool,
        closed: &dyn Fn() -> bool,
    ) -> Result<Turn> {
        let mut turns = self.turns.lock();
        let turn = turns.enter(space, cmd, queued).map_err(|_| ENOMEM)?;
        loop {
            if turns.try_take(&turn) {
                return Ok(turn);
            }
            let signal = matches!(
                me.wake.wait_interruptible_timeout(
                    &mut turns,
                    kernel::time::msecs_to_jiffies(TURN_POLL_MS),
                ),
                CondVarTimeoutResult::Signal { .. }
            );
            if signal || closed() {
                let next = turns.cancel(turn);
                self.wake(next);
                return Err(if signal { ERESTARTSYS } else { EPIPE });
            }
        }
    }

    /// Gives back the turn taken by [`Self::take_turn`] and wakes the command whose turn it
    /// is now.
    ///
    /// Every turn costs one unit, whatever TPM time it took: spaces are served turn about.
    /// Charged in TPM time, a client that evicted for itself paid for the eviction's flushes
    /// with fewer turns afterwards, and the clients' shares of operations came out less
    /// even (Jain 0.67 to 0.95 against 0.97 in the 32 x 3 runs on the bench kernel).
    fn give_turn(&self, turn: Turn, space: &mut Space) {
        let mut turns = self.turns.lock();
        let next = turns.done(turn, space, 1);
        self.wake(next);
    }

    /// Wakes the command of file `me`, if one waits, so that it asks again whether its file
    /// is still open (see `closed` in [`Self::execute`]). Takes `rm`, which TPM work holds:
    /// called from the module's workqueue after a release, never from `release` itself.
    pub(crate) fn cancel_waits(&self, me: &ClientStats) {
        // Taking `rm`, then `turns`, orders this after a waiter's check of `closed` and
        // before its sleep, whichever of the two it sleeps under.
        drop(self.rm.lock());
        drop(self.turns.lock());
        me.wake.notify_all();
    }

    /// Wakes the waiting command of `space` (`None`: nobody). Called with the lock the
    /// change was made under (`rm` or `turns`) held, so a waiter is either asleep on its
    /// `wake` or has yet to take that lock and look again: no wake-up is lost.
    fn wake(&self, space: Option<u64>) {
        if let Some(space) = space {
            self.with_client(space, |c| c.wake.notify_all());
        }
    }

    /// Calls `f` for the open file of `space`, if it is open, found by its id
    /// (`by_space`), with `by_space`'s spinlock held: `f` must not sleep. With `rm` or
    /// `turns` held (lock order: `rm` or `turns`, then `by_space`).
    fn with_client(&self, space: u64, f: impl FnOnce(&ClientStats)) {
        let Ok(index) = usize::try_from(space) else {
            return;
        };
        if let Some(c) = self.by_space.lock().get(index) {
            f(&c);
        }
    }

    /// Wakes the waiting command of every open file: the resource manager could not keep
    /// the list of whom to wake (out of memory). Walks `clients`, with `rm` held (lock
    /// order: `rm`, then `clients`).
    fn wake_all(&self) {
        for c in self.clients.lock().iter() {
            c.wake.notify_all();
        }
    }

    /// After each call of the resource manager: fires the trace events of what it did,
    /// refreshes the copy of its counters, and wakes the sleeping waiters if it freed or
    /// reserved a slot.
    fn after_call(&self, rm: &mut MutexGuard<'_, Rm>) {
        crate::trace::drain_events(rm);
        let stats = rm.stats();
        *self.stats.lock() = stats;
        rm.take_owed(&mut |space| {
            self.with_client(space, |c| c.owed.store(true, Ordering::Relaxed));
        });
        rm.take_wakeups(&mut |space| match space {
            Some(space) => self.wake(Some(space)),
            None => self.wake_all(),
        });
    }

    /// Flushes everything `space` holds from the TPM (at close), and counts it closed. Never
    /// fails: what cannot be flushed now is queued in the resource manager and retried with
    /// the next command. Takes `rm` and the chip: called from the module's workqueue (a
    /// released file) or at the end of the file's last command, never from `release`.
    pub(crate) fn close_space(&self, mut space: Space) {
        let mut rm = self.rm.lock();
        match self.chip.lock() {
            Ok(mut tpm) => rm.close_space(&mut space, &mut tpm, self.now_ns()),
            Err(_) => rm.close_space(&mut space, &mut DeadTpm, self.now_ns()),
        }
        self.after_call(&mut rm);
        drop(rm);
        self.spaces.closed();
    }

    /// The system is about to suspend or hibernate (the PM notifier, `pm.rs`): every context
    /// tpmrs keeps loaded between commands is saved or flushed, with the chip held, and none
    /// is made resident again until [`Self::resume`] ([`Rm::suspend`]). Takes `rm` and the
    /// chip, as a command's step does. A chip going away: nothing can be saved
    /// ([`Rm::suspend_unreachable`]).
    pub(crate) fn suspend(&self) {
        let mut rm = self.rm.lock();
        match self.chip.lock() {
            Ok(mut tpm) => rm.suspend(&mut tpm),
            Err(_) => rm.suspend_unreachable(),
        }
        self.after_call(&mut rm);
    }

    /// The system has resumed, or the suspend failed: contexts may be resident again.
    pub(crate) fn resume(&self) {
        let mut rm = self.rm.lock();
        rm.resume();
        self.after_call(&mut rm);
    }

    /// Creates the space for a file newly opened by `uid` (see [`Space::uid`]). Takes no
    /// lock: the misc core holds its global `misc_mtx` across `open`, so an open that waited
    /// for TPM work (a CreatePrimary of seconds) would stall every misc device's open on the
    /// machine.
    pub(crate) fn new_space(&self, uid: u32) -> Space {
        self.spaces.open(uid)
    }

    /// Counts a released file's space as closing until [`Shared::close_space`] is done with
    /// it (the gauge `closing_spaces`).
    pub(crate) fn space_released(&self) {
        self.spaces.released();
    }

    /// Lists a newly opened file in `/sys/kernel/debug/tpmrs/clients`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn add_client(&self, client: Arc<ClientStats>) -> Result {
        let index = usize::try_from(client.info.lock().space_id).map_err(|_| EINVAL)?;
        let mut clients = self.clients.lock();
        clients.push(client.clone(), GFP_KERNEL)?;
        // Space ids are never reused: nothing was stored under this one.
        if let Err(e) = self.by_space.lock().store(index, client, GFP_KERNEL) {
            let _ = clients.pop();
            return Err(e.error);
        }
        Ok(())
    }

    /// Takes a released file off the list and the index.
    pub(crate) fn remove_client(&self, client: &ClientStats) {
        if let Ok(index) = usize::try_from(client.info.lock().space_id) {
            // Dropped after the lock (not the last reference: the caller holds one).
            let removed = self.by_space.lock().remove(index);
            drop(removed);
        }
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

/// The kernel error for a resource-manager error.
fn to_error(e: RmError) -> Error {
    Error::from_errno(e.to_errno())
}
