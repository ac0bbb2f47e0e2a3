// SPDX-License-Identifier: GPL-2.0
//! One command in flight ([`Txn`]): stage 2 (map and load) and stage 3 (transmit, with
//! context-gap repair and the exhaustion check). Stage 4, mapping the response, is in
//! `respond`; stage 5, the commit (save the sessions used, flush the objects loaded), in
//! `commit`.
//!
//! Whatever a stage loaded is recorded in [`Loaded`], and [`Txn::commit`] saves or flushes
//! it on every path, early answers and errors included. An object or session of a space
//! may be loaded between commands (its save failed on the TPM's side: `ObjectEntry::loaded`,
//! `SessionState::Loaded`; or it is resident, `resident.rs`): the next command that names it
//! uses it where it is.

use core::ops::ControlFlow;

use super::super::codec::put_u32;
use super::super::command::{Command, MAX_HANDLES};
use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::registry::SessionState;
use super::super::session::{End, Grant, Sessions, MAX_GAP_REPAIRS};
use super::super::space::Space;
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::kind::{loaded_session, updates_sequence};
use super::preoccupy::Preoccupied;
use super::resident::{evict_all_objects, evict_all_sessions, Residents};
use super::tpm_io::{response_code, transmit, Io, Reply};
use super::wait::Outcome;
use super::{pos, synth_rm, Config};

mod loaded;
mod room;
pub(super) use loaded::{List, Loaded, LoadedObject};

/// Sessions one command can touch: its handle area, its authorization area, a new one.
pub(super) const MAX_TXN_SESSIONS: usize = MAX_HANDLES + MAX_SESSIONS_PER_COMMAND + 1;

/// Most times the client's command is sent again: after each context-gap repair, after
/// residents made way for it, after each reload of a context the TPM lost.
const MAX_RESENDS: usize = MAX_GAP_REPAIRS + 1 + MAX_HANDLES + MAX_SESSIONS_PER_COMMAND;

/// Most passes over a command's handles to load its objects (see `Txn::load_objects`).
const MAX_LOAD_PASSES: usize = MAX_HANDLES + 1;

/// Whether `rc` says the TPM has no room for an object or session in its memory.
fn is_memory_rc(rc: u32) -> bool {
    matches!(
        rc,
        TPM_RC_OBJECT_MEMORY | TPM_RC_SESSION_MEMORY | TPM_RC_MEMORY
    )
}

/// What [`Txn::lost`] found (`lost.rs`).
pub(super) enum Found {
    /// No resident context lost: the answer stands.
    Nothing,
    /// A resident object was lost and is loaded again: send the command again.
    Reloaded,
    /// The answer for the client (a resident session lost, or the object could not be
    /// loaded again).
    Answer(Outcome),
}

/// One command in flight: disjoint borrows of the resource manager's state.
pub(super) struct Txn<'a> {
    pub(super) config: Config,
    pub(super) io: &'a mut Io,
    pub(super) st: &'a mut Sessions,
    /// The resident objects (`resident.rs`).
    pub(super) res: &'a mut Residents,
    pub(super) space: &'a mut Space,
    pub(super) tpm: &'a mut dyn Tpm,
    pub(super) now: u64,
    /// The waiter's ticket, if the command waited for a session slot.
    pub(super) ticket: Option<u64>,
    pub(super) loaded: Loaded,
    /// The command's waiter gave up: a session shortage is answered, not waited for.
    pub(super) gave_up: bool,
    /// The command is a StartAuthSession that got a session from the TPM.
    pub(super) started: bool,
    /// Contexts stay loaded after the command (`Config::resident`, not suspended).
    pub(super) resident: bool,
    /// A resident object of this command was found lost while loading: load again.
    repin: bool,
}

impl<'a> Txn<'a> {
    /// A command of `space` about to be loaded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: Config,
        io: &'a mut Io,
        st: &'a mut Sessions,
        res: &'a mut Residents,
        space: &'a mut Space,
        tpm: &'a mut dyn Tpm,
        now: u64,
        ticket: Option<u64>,
    ) -> Self {
        let gave_up = st.sched.gave_up(ticket);
        let resident = config.resident && !res.suspended;
        res.tick = res.tick.wrapping_add(1);
        Txn {
            config,
            io,
            st,
            res,
            space,
            tpm,
            now,
            ticket,
            loaded: Loaded::new(),
            gave_up,
            started: false,
            resident,
            repin: false,
        }
    }

    /// Stage 2: loads every object in the handle area (patching its physical handle into
    /// `work`) and every session the command names that we hold saved.
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::BadResponse`], [`RmError::InvalidCommand`].
    pub(super) fn load(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome>, RmError> {
        if self.resident {
            self.pin_residents(command);
            self.make_room_for(command, work);
        }
        if let ControlFlow::Break(o) = self.load_objects(command, work, rsp)? {
            return Ok(ControlFlow::Break(o));
        }
        self.load_sessions(command, rsp)
    }

    fn load_objects(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome>, RmError> {
        let cc = command.cc();
        // A pass loads what is not loaded and patches every handle; a load that got the
        // number of a resident object of this command (lost behind tpmrs' back) unpins it,
        // and the next pass loads it again (`Txn::note_handed_out`).
        for _ in 0..MAX_LOAD_PASSES {
            self.repin = false;
            for (i, &h) in command.handles().iter().enumerate() {
                if !is_transient_handle(h) {
                    continue;
                }
                if let ControlFlow::Break(o) = self.load_object(i, h, cc, work, rsp)? {
                    return Ok(ControlFlow::Break(o));
                }
            }
            if !self.repin {
                break;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The TPM handed out object handle `p` to tpmrs: it was free. A resident object listed
    /// under it was lost behind tpmrs' back: it is forgotten (never flushed nor used there:
    /// `p` is the new object's now), out of the table or out of this command's objects (to
    /// be loaded again from its blob). Issue 21: "never use a handle that may be someone
    /// else's".
    pub(super) fn note_handed_out(&mut self, p: u32) {
        self.st.handed_out(p);
        if self.res.forget_phandle(p) {
            bump(&mut self.io.stats.resident_lost);
        }
        let stale = self
            .loaded
            .objects
            .iter()
            .find(|o| o.phandle == p && o.resident);
        if let Some(stale) = stale {
            self.loaded.objects.remove(stale);
            bump(&mut self.io.stats.resident_lost);
            self.repin = true;
        }
    }

    /// Loads the object `h` named at position `i` of a command `cc` (unless it is loaded
    /// already) and patches its physical handle into `work`.
    pub(super) fn load_object(
        &mut self,
        i: usize,
        h: u32,
        cc: u32,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome>, RmError> {
        let phandle = match self.loaded.phandle_of(h) {
            Some(p) => p,
            None => {
                let Some(obj) = self.space.object_mut(h) else {
                    return Err(RmError::InvalidCommand);
                };
                if let Some(p) = obj.loaded.take() {
                    // Still loaded (its last save was refused): this command owns it
                    // now, and saves it again after.
                    self.loaded.objects.add(LoadedObject {
                        vhandle: h,
                        phandle: p,
                        resave: true,
                        alive: true,
                        resident: false,
                    });
                    p
                } else {
                    let sequence = obj.sequence;
                    let Some(blob) = obj.blob.as_ref() else {
                        // Neither saved nor loaded: cannot happen. Gone.
                        self.space.remove_object(h);
                        let rc = rc_handle_at_handle(pos(i));
                        return respond(synth_rm(rsp, &mut self.io.stats, rc));
                    };
                    let mut reply = self.io.context_load(self.tpm, blob)?;
                    // No room: residents (none in use: they are out of the table) make way,
                    // once (`resident.rs`).
                    if reply == Reply::Rc(TPM_RC_OBJECT_MEMORY)
                        && self.resident
                        && evict_all_objects(self.io, self.st, self.tpm, self.res) > 0
                    {
                        reply = self.io.context_load(self.tpm, blob)?;
                    }
                    match reply {
                        Reply::Done(p) => {
                            self.note_handed_out(p);
                            self.loaded.objects.add(LoadedObject {
                                vhandle: h,
                                phandle: p,
                                resave: sequence || updates_sequence(cc),
                                alive: true,
                                resident: false,
                            });
                            p
                        }
                        // No room, or busy: the client sees the TPM's warning and the
                        // object stays as it was.
                        Reply::Rc(rc) if is_not_executed_rc(rc) => {
                            return respond(self.io.copy_last(rsp));
                        }
                        Reply::Rc(_) => {
                            self.space.remove_object(h);
                            let rc = rc_handle_at_handle(pos(i));
                            return respond(synth_rm(rsp, &mut self.io.stats, rc));
                        }
                    }
                }
            }
        };
        put_u32(work, Command::handle_offset(i), phandle).map_err(|_| RmError::InvalidCommand)?;
        Ok(ControlFlow::Continue(()))
    }

    /// Loads every session the command names that we hold saved, and marks every session it
    /// names for saving afterwards. No room to load one: `Outcome::Exhausted`.
    fn load_sessions(
        &mut self,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome>, RmError> {
        let from_handles = command
            .handles()
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, rc_handle_at_handle(pos(i))));
        let from_auth = command
            .sessions()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.handle, rc_handle_at_session(pos(i))));
        for (h, err_rc) in from_handles.chain(from_auth) {
            if !is_session_handle(h) {
                continue;
            }
            let Some(entry) = self.st.registry.get_mut(h) else {
                continue; // admitted: cannot happen
            };
            // The TPM's form from here on (the client may have named the other one).
            let h = entry.handle;
            if self.loaded.sessions.contains(h) {
                continue;
            }
            entry.last_used_ns = self.now;
            let mut result = match &entry.state {
                SessionState::Loaded => {
                    self.loaded.sessions.add(h);
                    continue;
                }
                SessionState::SavedByClient(_) | SessionState::FlushPending => continue,
                SessionState::SavedByRm(blob) => self.io.context_load(self.tpm, blob)?,
            };
            // No room: resident sessions (none in use: the command's own are no longer
            // marked) make way, once (`resident.rs`).
            if result == Reply::Rc(TPM_RC_SESSION_MEMORY)
                && self.resident
                && evict_all_sessions(self.io, self.st, self.tpm) > 0
            {
                result = match self.st.registry.get(h).map(|e| &e.state) {
                    Some(SessionState::SavedByRm(blob)) => self.io.context_load(self.tpm, blob)?,
                    _ => continue, // ours, saved: cannot change
                };
            }
            let Some(entry) = self.st.registry.get_mut(h) else {
                continue;
            };
            match result {
                Reply::Done(p) if p == h => {
                    let saved = core::mem::replace(&mut entry.state, SessionState::Loaded);
                    // Resident, it keeps the allocation of its context for its next save.
                    if let (true, SessionState::SavedByRm(blob)) = (self.resident, saved) {
                        entry.spare = Some(blob);
                    }
                    entry.saved_seq = None;
                    self.loaded.sessions.add(h);
                }
                Reply::Done(p) => {
                    // Restored under another handle: should never happen. Drop it.
                    self.st.registry.remove(h);
                    let _ = self.io.flush_or_queue(self.tpm, &mut self.st.pending, p);
                    self.st.grant(Grant::Queue);
                    return respond(synth_rm(rsp, &mut self.io.stats, err_rc));
                }
                Reply::Rc(rc) if is_session_exhaustion_rc(rc) && !self.gave_up => {
                    return Ok(ControlFlow::Break(Outcome::Exhausted { rc: Some(rc) }));
                }
                // No room, or busy (e.g. TPM_RC_RETRY): the session stays saved, the
                // client sees the TPM's warning.
                Reply::Rc(rc) if is_not_executed_rc(rc) => {
                    return respond(self.io.copy_last(rsp));
                }
                Reply::Rc(_) => {
                    // Not flushed: a real TPM refuses our own untouched blob only when the
                    // context is no longer valid (a TPM reset changed the context key, or
                    // the session is gone), and then the handle may be someone else's.
                    self.st
                        .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)?;
                    return respond(synth_rm(rsp, &mut self.io.stats, err_rc));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Stage 3: sends the mapped command. A StartAuthSession of a space that has tombstones
    /// first holds the numbers the space holds dead (`preoccupy`): none clean to be had, it
    /// is not sent and waits. TPM_RC_CONTEXT_GAP (a warning: not executed) renews the oldest
    /// saved session and sends again. A StartAuthSession, or a ContextLoad of a session,
    /// that finds no slot is undone: `Outcome::Exhausted`.
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::NotSent`], [`RmError::BadResponse`].
    pub(super) fn transmit(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<ControlFlow<Outcome, usize>, RmError> {
        let cc = command.cc();
        let owner = self.space.id();
        if cc == TPM_CC_START_AUTH_SESSION && self.st.has_tombstones(owner) {
            // Numbers the space holds dead are held first: the command is sent once, and
            // gets a clean number. None to be found: it waits, unsent, like one the TPM
            // refused; a waiter that gave up is sent as it is (see `adopt_session`).
            let mut found = self
                .loaded
                .held
                .preoccupy(self.io, self.st, self.tpm, owner)?;
            // No loaded slot for tpmrs' own sessions: resident sessions make way, once.
            if found
                == (Preoccupied::NoClean {
                    rc: Some(TPM_RC_SESSION_MEMORY),
                })
                && self.resident
                && evict_all_sessions(self.io, self.st, self.tpm) > 0
            {
                found = self
                    .loaded
                    .held
                    .preoccupy(self.io, self.st, self.tpm, owner)?;
            }
            if let Preoccupied::NoClean { rc } = found {
                if !self.gave_up {
                    return Ok(ControlFlow::Break(Outcome::Exhausted { rc }));
                }
            }
        }
        let mut n = transmit(&mut self.io.stats, self.tpm, work, rsp)?;
        let (mut repairs, mut memory) = (0, false);
        // Each round sends the command again after a repair that says so (a warning: the TPM
        // ran nothing), at most MAX_GAP_REPAIRS context-gap repairs, one round of evictions
        // of residents, and one reload per context the TPM lost (`lost.rs`).
        for _ in 0..MAX_RESENDS {
            let rc = response_code(rsp);
            if rc == TPM_RC_CONTEXT_GAP && repairs < MAX_GAP_REPAIRS {
                // PANIC: repairs < MAX_GAP_REPAIRS here.
                repairs += 1;
                if !self.st.repair_gap(self.io, self.tpm)? {
                    break;
                }
            } else if self.resident && is_memory_rc(rc) && !memory {
                memory = true;
                if !self.make_way(rc) {
                    break;
                }
            } else if self.resident {
                match self.lost(command, rc, work, rsp)? {
                    Found::Nothing => break,
                    Found::Reloaded => {}
                    Found::Answer(o) => return Ok(ControlFlow::Break(o)),
                }
            } else {
                break;
            }
            n = transmit(&mut self.io.stats, self.tpm, work, rsp)?;
        }
        let rc = response_code(rsp);
        if is_session_exhaustion_rc(rc)
            && !self.gave_up
            && (cc == TPM_CC_START_AUTH_SESSION || loaded_session(command, work).is_some())
        {
            return Ok(ControlFlow::Break(Outcome::Exhausted { rc: Some(rc) }));
        }
        self.started = cc == TPM_CC_START_AUTH_SESSION && rc == TPM_RC_SUCCESS;
        if self.started && self.st.sched.took_slot(self.ticket, owner, self.now) {
            self.space.note_slot_taken();
        }
        Ok(ControlFlow::Continue(n))
    }
}

/// A response of `n` bytes for the client is in `rsp`: the command goes no further.
fn respond<T>(n: Result<usize, RmError>) -> Result<ControlFlow<Outcome, T>, RmError> {
    n.map(|n| ControlFlow::Break(Outcome::Response(n)))
}
