// SPDX-License-Identifier: GPL-2.0
//! The resource manager: one client command in, one response (or errno) out.
//!
//! [`Rm::execute`] runs a command through five stages, each in its own file under `rm/`,
//! read top-down in `Rm::run`:
//!
//! 1. **admit** (`admit.rs`): framing and the command table, answers owed for evicted
//!    sessions, ownership of every handle and session named, the FIFO gate for new session
//!    slots. Nothing is sent yet.
//! 2. **map and load** (`txn.rs`): objects of the space are loaded from their saved blobs and
//!    their physical handles patched in; sessions we hold saved are loaded.
//! 3. **transmit** (`txn.rs`, `tpm_io.rs`): send, with context-gap repair; a
//!    StartAuthSession of a space that lost sessions to an eviction first holds the numbers
//!    the space holds dead (`preoccupy.rs`); a command that finds no session slot is undone
//!    and answered [`Outcome::Exhausted`].
//! 4. **map the response** (`respond.rs`): sessions ended, objects flushed by the TPM, new
//!    objects and sessions adopted by the space, handle lists filtered.
//! 5. **commit** (`commit.rs`): the sessions used are saved and the objects loaded flushed,
//!    on every path; what fails there never replaces the command's answer.
//!
//! A space's objects and sessions are saved between commands, so any number of spaces and
//! objects fit; one whose save fails on the TPM's side stays loaded until its next use
//! (`ObjectEntry::loaded`, `SessionState::Loaded`). With `Config::resident` they stay loaded
//! while the TPM has room, and are evicted only when someone needs the slot (`resident.rs`;
//! lost behind tpmrs' back: `lost.rs`). TPM2_FlushContext takes its own route after
//! admission (`flush.rs`).
//! Sessions are shared bookkeeping: see [`super::session`]. Waiting for a session slot is
//! `wait.rs`.

mod admit;
mod commit;
mod flush;
mod init;
mod kind;
mod lost;
mod preoccupy;
mod resident;
mod respond;
mod save;
pub(crate) mod tpm_io;
mod txn;
mod wait;

use core::ops::ControlFlow;

use super::cc_table::CcTable;
use super::error::RmError;
use super::event::Event;
use super::platform::Vec;
use super::response::{write_rc_response, write_rm_error};
use super::session::registry::SessionRegistry;
#[cfg(not(tpmrs_kernel))]
use super::session::scheduler::Scheduler;
use super::session::scheduler::Ticket;
use super::session::Sessions;
use super::space::Space;
#[cfg(not(tpmrs_kernel))]
use super::space::SpaceIds;
use super::stats::{bump, Stats};
use super::tpm::Tpm;
use admit::Route;
use resident::Residents;
use tpm_io::Io;
use txn::Txn;

#[cfg(not(tpmrs_kernel))]
pub use resident::ResidentObject;
pub use wait::{Outcome, Request, Step};

/// Limits of the resource manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most transient objects one space may hold (default 64).
    pub max_objects: usize,
    /// Most sessions one space may own (default 64). Abandoned sessions count for nobody.
    pub max_sessions: usize,
    /// Most abandoned sessions kept for continuation, in all (default 8, like tpm2-abrmd's
    /// 4-8; 0 flushes every session at close); over it, the oldest of the uid that holds
    /// the most is flushed. Each holds one of the TPM's session slots
    /// (TPM_PT_ACTIVE_SESSIONS_MAX, typically 64) until it is loaded again, overflows or is
    /// evicted (abandoned sessions are the first victims), so keep it well below that:
    /// 0..=32 is a sensible range for a module parameter.
    pub max_abandoned: usize,
    /// SESSION_TIMEOUT (default 2 s): how long a command waits for a session slot before it
    /// may evict a session, and how long a session is safe from eviction after its owner got
    /// it. Must be > 0.
    pub session_timeout_ns: u64,
    /// How often the head of the wait queue retries without being woken (default 100 ms):
    /// slots held outside tpmrs can free up without us knowing. Also the least time between
    /// two eviction attempts of one waiter. Must be > 0.
    pub retry_interval_ns: u64,
    /// Session slots tpmrs leaves to everyone else (default 2): it never holds more than
    /// TPM_PT_ACTIVE_SESSIONS_MAX minus this many sessions, so in-kernel users
    /// (TCG_TPM2_HMAC, trusted keys), /dev/tpm0 and /dev/tpmrm0 can always start one. Its
    /// own clients wait and rotate inside that budget.
    pub session_headroom: usize,
    /// Resident contexts (default off): after a command, a space's objects and sessions stay
    /// loaded in the TPM while it has loaded slots to spare beyond the reserves below, and are
    /// evicted (sessions saved, objects flushed; least recently used first) only when another
    /// space's command needs the slot, the space is closed, the system suspends
    /// ([`Rm::suspend`]) or a reserve must be restored. Off, every command loads what it names
    /// and saves or flushes it after (the eager context switch of /dev/tpmrm0). See
    /// `rm/resident.rs`.
    pub resident: bool,
    /// Loaded object slots (of TPM_PT_HR_TRANSIENT_MIN) left free between commands for
    /// everyone else with `resident` (default 1): the kernel's own users and /dev/tpm0 and
    /// /dev/tpmrm0 clients, which cannot ask tpmrs for a slot.
    pub reserve_objects: usize,
    /// Loaded session slots (of TPM_PT_HR_LOADED_MIN) left free between commands with
    /// `resident` (default 1): the kernel's HMAC session (TCG_TPM2_HMAC) needs one.
    pub reserve_sessions: usize,
    /// Fair share between users first (default on): the wait queue for session slots and
    /// the turns at the TPM go round the openers' uids, then round each uid's files, so one
    /// user who opens forty files gets one user's share. Off, every open file gets a share
    /// of its own (module parameter `fair_share_by_uid`).
    pub fair_share_by_uid: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_objects: 64,
            max_sessions: 64,
            max_abandoned: 8,
            session_timeout_ns: 2_000_000_000,
            retry_interval_ns: 100_000_000,
            session_headroom: 2,
            resident: false,
            reserve_objects: 1,
            reserve_sessions: 1,
            fair_share_by_uid: true,
        }
    }
}

/// The TPM 2.0 resource manager: global state shared by every space.
pub struct Rm {
    config: Config,
    cc: CcTable,
    st: Sessions,
    io: Io,
    /// Copy of the client command, patched with physical handles.
    work: Vec<u8>,
    /// Ids for [`Rm::new_space`] (the host tests; the kernel glue and KUnit number their
    /// spaces with [`SpaceIds`] of their own, without this lock).
    #[cfg(not(tpmrs_kernel))]
    ids: SpaceIds,
    /// The TPM's TPM_PT_ACTIVE_SESSIONS_MAX, if it told us (read by [`Rm::init`]).
    active_sessions_max: Option<usize>,
    /// Resident objects, and the TPM's loaded slots (`Config::resident`).
    res: Residents,
}

/// Writes a synthesized response code into `rsp`.
fn synth(rsp: &mut [u8], stats: &mut Stats, rc: u32) -> Result<usize, RmError> {
    bump(&mut stats.synthesized_responses);
    write_rc_response(rsp, rc).map_err(|_| RmError::BufferTooSmall)
}

/// Writes a synthesized response code of the resource-manager layer into `rsp`.
fn synth_rm(rsp: &mut [u8], stats: &mut Stats, rc: u32) -> Result<usize, RmError> {
    bump(&mut stats.synthesized_responses);
    write_rm_error(rsp, rc).map_err(|_| RmError::BufferTooSmall)
}

/// 1-based position `i + 1` as a response-code position.
fn pos(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(0).saturating_add(1)
}

/// Ends the enclosing closure with `Ok(outcome)` when a stage answered early.
macro_rules! stage {
    ($e:expr) => {
        match $e? {
            ControlFlow::Continue(v) => v,
            ControlFlow::Break(outcome) => return Ok(outcome),
        }
    };
}

impl Rm {
    /// A resource manager with its buffers allocated; call [`Rm::init`] before use.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`].
    pub fn new(config: Config) -> Result<Rm, RmError> {
        let mut work = Vec::try_with_capacity(super::TPM_BUFSIZE)?;
        work.try_push(0)?;
        work.clear();
        let mut st = Sessions::new()?;
        st.sched.keep_ns = config.session_timeout_ns / 4;
        st.sched.timeout_ns = config.session_timeout_ns;
        st.sched.spare_ns = config.retry_interval_ns;
        Ok(Rm {
            config,
            cc: CcTable::new(),
            st,
            io: Io::new()?,
            work,
            #[cfg(not(tpmrs_kernel))]
            ids: SpaceIds::new(),
            active_sessions_max: None,
            res: Residents::new(),
        })
    }

    /// The most sessions tpmrs holds at once: TPM_PT_ACTIVE_SESSIONS_MAX minus
    /// `Config::session_headroom`, or `None` if the TPM did not say.
    pub fn session_budget(&self) -> Option<usize> {
        self.active_sessions_max
            .map(|m| m.saturating_sub(self.config.session_headroom))
    }

    /// The TPM's command table.
    #[cfg(not(tpmrs_kernel))]
    pub fn command_table(&self) -> &CcTable {
        &self.cc
    }

    /// The session registry.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.st.registry
    }

    /// The wait queue.
    #[cfg(not(tpmrs_kernel))]
    pub fn scheduler(&self) -> &Scheduler {
        &self.st.sched
    }

    /// Handles whose flush the TPM did not run, to be sent again.
    #[cfg(not(tpmrs_kernel))]
    pub fn pending_flushes(&self) -> &[u32] {
        &self.st.pending.certain
    }

    /// Handles whose flush failed on the transport and could not be checked: looked for,
    /// never flushed again (see `session/flush.rs`).
    #[cfg(not(tpmrs_kernel))]
    pub fn unverified_flushes(&self) -> &[u32] {
        &self.st.pending.unverified
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters, with the gauges computed now.
    pub fn stats(&self) -> Stats {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        Stats {
            sessions: n(self.st.registry.live_count()),
            abandoned: n(self.st.registry.abandoned_count()),
            waiting: n(self.st.sched.len()),
            waits: self.st.sched.waits,
            longest_wait_ns: self.st.sched.longest_wait_ns,
            tombstones: n(self.st.tombstone_count()),
            pending_flushes: n(self.st.pending.len()),
            resident_objects: n(self.res.objects().len()),
            resident_sessions: n(self.st.registry.resident_count()),
            ..self.io.stats
        }
    }

    /// The objects left loaded between commands (`Config::resident`), of every space.
    #[cfg(not(tpmrs_kernel))]
    pub fn resident_objects(&self) -> &[ResidentObject] {
        self.res.objects()
    }

    /// The TPM's loaded object and session slots (TPM_PT_HR_TRANSIENT_MIN and
    /// TPM_PT_HR_LOADED_MIN, read by [`Rm::init`] with `Config::resident`), and of them
    /// what resident contexts may keep between commands (less the reserves).
    pub fn loaded_slots(&self) -> ((usize, usize), (usize, usize)) {
        (self.res.slots(), self.res.budgets(&self.config))
    }

    /// What happened since the last [`Rm::clear_events`] (evictions, context-gap repairs,
    /// waits begun and ended), oldest first: the glue drains it after every call, for its
    /// trace events.
    pub fn events(&self) -> &[Event] {
        self.st.events.events()
    }

    /// Events dropped because more happened in one call than the log holds
    /// ([`super::event::EVENT_LOG_CAPACITY`]).
    #[cfg(not(tpmrs_kernel))]
    pub fn events_lost(&self) -> u64 {
        self.st.events.lost()
    }

    /// Empties the event log (after the glue traced it).
    pub fn clear_events(&mut self) {
        self.st.events.clear();
    }

    /// Sessions evicted from the open space `space_id` so far (0 once it is closed).
    pub fn evictions_of(&self, space_id: u64) -> u64 {
        self.st.evicted.get(space_id)
    }

    /// A new, empty space with an id unique among the spaces this resource manager made
    /// (the host tests), for a file opened by `uid` (its effective uid in the initial user
    /// namespace). The kernel glue makes its spaces with [`SpaceIds`] instead, without this
    /// lock: an open must never wait for TPM work.
    ///
    /// # Errors
    /// None today; reserved for allocation failures.
    #[cfg(not(tpmrs_kernel))]
    pub fn new_space(&mut self, uid: u32) -> Result<Space, RmError> {
        Ok(self.ids.open(uid))
    }

    /// One client command for `space`. `cmd` is exactly what the client wrote (the caller
    /// already rejected >4096 with E2BIG). `ticket` is the command's place in the wait queue
    /// if it runs again after [`Outcome::Exhausted`] (see [`Rm::step`], which drives that).
    ///
    /// # Errors
    /// The errno tpmrm0 would give, as an [`RmError`].
    pub fn execute(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now_ns: u64,
        ticket: Option<&Ticket>,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<Outcome, RmError> {
        bump(&mut self.io.stats.client_commands);
        let id = ticket.map(Ticket::id);
        self.st.expire(now_ns);
        let r = self.run(space, tpm, now_ns, id, cmd, rsp);
        match r {
            Ok(Outcome::Response(_)) => {}
            Ok(Outcome::Exhausted { rc }) => {
                self.st.sched.exhausted(id, now_ns, rc);
                bump(&mut self.io.stats.rejected_commands);
            }
            Err(_) => bump(&mut self.io.stats.rejected_commands),
        }
        r
    }

    /// The pipeline, stage by stage.
    fn run(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now: u64,
        ticket: Option<u64>,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<Outcome, RmError> {
        // 1. Admit: framing, command table, tombstones, ownership, the FIFO gate.
        let admitted = match self.admit(space, tpm, ticket, cmd, rsp)? {
            ControlFlow::Continue(a) => a,
            ControlFlow::Break(outcome) => return Ok(outcome),
        };
        let command = admitted.command;
        if admitted.route == Route::FlushContext {
            return self
                .flush_context(space, tpm, &command, rsp)
                .map(Outcome::Response);
        }
        let Rm {
            config,
            st,
            io,
            work,
            res,
            ..
        } = self;
        let mut txn = Txn::new(*config, io, st, res, space, tpm, now, ticket);
        let answer = (|| {
            // 2. Map and load: objects from their blobs, sessions we hold saved.
            stage!(txn.load(&command, work, rsp));
            // 3. Transmit, repairing a context gap; no session slot: Exhausted.
            let n = stage!(txn.transmit(&command, work, rsp));
            // 4. Map the response: ended sessions, new objects and sessions, handle lists.
            txn.map_response(&command, work, rsp, n)
        })();
        // 5. Commit: save the sessions used, flush the objects loaded, on every path.
        txn.commit(answer)
    }

    /// Close: flush everything the space holds from the TPM, except sessions its client
    /// saved itself, which are abandoned (kept for continuation; the oldest abandoned ones
    /// are flushed beyond `Config::max_abandoned`). The space's waiters leave the queue and
    /// its tombstones are dropped. Never fails; a flush that fails on the transport is queued
    /// and retried at the next command. Tickets of the space's waiters become stale (end
    /// such commands first). Call [`Rm::take_wakeups`] afterwards.
    pub fn close_space(&mut self, space: &mut Space, tpm: &mut dyn Tpm, now_ns: u64) {
        let owner = space.id();
        self.st.retry_pending(&mut self.io, tpm);
        let gang = self.st.sched.remove_space(owner, now_ns);
        for _ in 0..gang.saturating_add(self.st.sched.take_returned()) {
            self.st.slot_freed();
        }
        self.st.evicted.forget(owner);
        self.st
            .close_space(&mut self.io, tpm, owner, self.config.max_abandoned);
        for p in space.loaded_handles() {
            // A transport failure queues the flush.
            let _ = self.io.flush_or_queue(tpm, &mut self.st.pending, p);
        }
        while let Some(p) = self.res.take_any_of(owner) {
            let _ = self.io.flush_or_queue(tpm, &mut self.st.pending, p);
        }
        space.clear();
    }

    /// The system is about to suspend or hibernate (the glue's PM notifier, before the TPM
    /// driver's suspend, which sends TPM2_Shutdown(STATE)): every context of ours still
    /// loaded is saved or flushed, as it would be between commands without residency
    /// (resident objects flushed, their spaces keep their blobs; resident sessions, and
    /// sessions left loaded by a save the TPM did not run, saved), and no context is made
    /// resident again until [`Rm::resume`]. A TPM power cycle loses what is loaded and keeps
    /// what is saved. Objects left loaded by a failed save (`ObjectEntry::loaded`) are their
    /// spaces', out of reach here: they stay. Call [`Rm::take_wakeups`] afterwards.
    pub fn suspend(&mut self, tpm: &mut dyn Tpm) {
        bump(&mut self.io.stats.suspends);
        self.res.suspended = true;
        self.st.retry_pending(&mut self.io, tpm);
        resident::evict_everything(&mut self.io, &mut self.st, tpm, &mut self.res);
    }

    /// [`Rm::suspend`] when the TPM cannot be reached (its chip is going away): nothing is
    /// saved, and no context is made resident until [`Rm::resume`]. What was loaded is found
    /// lost at its next use (`rm/lost.rs`).
    pub fn suspend_unreachable(&mut self) {
        bump(&mut self.io.stats.suspends);
        self.res.suspended = true;
    }

    /// The system has resumed (or the suspend failed): contexts may be resident again.
    pub fn resume(&mut self) {
        self.res.suspended = false;
    }
}
