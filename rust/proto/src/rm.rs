// SPDX-License-Identifier: GPL-2.0
//! The resource-manager pipeline: one client command in, one response (or errno) out.
//!
//! Per command: check the framing, map the handle area, load only what the command uses
//! (objects from their saved blobs, sessions saved by us), send, map the response, then save
//! the sessions used and flush the objects loaded. Nothing of a space stays loaded in the TPM
//! between commands, so any number of spaces and objects fit.

use super::capability::{filter_handles_response, write_handles_response, CapabilityRequest};
use super::cc_table::{CcAttrs, CcTable, CcTableError};
use super::codec::{get_u32, put_u32};
use super::command::{Command, CommandHeader, FramingError, MAX_HANDLES};
use super::constants::*;
use super::context::{
    build_context_load, build_context_save, build_flush_context, context_load_handle,
    context_save_blob, parse_context,
};
use super::error::RmError;
use super::platform::Vec;
use super::response::{write_rc_response, write_rm_error, ResponseHeader};
use super::sessions::{same_session, SessionEntry, SessionRegistry, SessionState};
use super::space::{InsertError, Space};
use super::stats::{bump, Stats};
use super::tpm::Tpm;

/// Limits of the resource manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most transient objects one space may hold (default 64).
    pub max_objects: usize,
    /// Most sessions one space may own (default 64).
    pub max_sessions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_objects: 64,
            max_sessions: 64,
        }
    }
}

/// Most GetCapability(TPM_CAP_COMMANDS) round trips `init` makes.
const MAX_CAP_COMMANDS_ROUNDS: usize = 64;
/// Sessions one command can touch: its handle area, its authorization area, a new one.
const MAX_TXN_SESSIONS: usize = MAX_HANDLES + MAX_SESSIONS_PER_COMMAND + 1;

/// A small fixed-capacity list (no allocation, never panics).
struct List<T: Copy, const N: usize> {
    items: [Option<T>; N],
}

impl<T: Copy + PartialEq, const N: usize> List<T, N> {
    fn new() -> Self {
        List { items: [None; N] }
    }
    /// Adds `v` unless it is already there; false if full.
    fn add(&mut self, v: T) -> bool {
        if self.contains(v) {
            return true;
        }
        match self.items.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(v);
                true
            }
            None => false,
        }
    }
    fn contains(&self, v: T) -> bool {
        self.items.contains(&Some(v))
    }
    fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items.iter().filter_map(|s| *s)
    }
}

/// An object loaded for the current command.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LoadedObject {
    vhandle: u32,
    phandle: u32,
    /// Save it again before flushing (its state changed).
    resave: bool,
    /// Still loaded in the TPM (false once the TPM flushed it itself).
    alive: bool,
}

/// What the current command loaded or registered, undone or committed by `finish`.
struct Txn {
    objects: List<LoadedObject, MAX_HANDLES>,
    /// Sessions to save after the command (if still registered and loaded).
    sessions: List<u32, MAX_TXN_SESSIONS>,
}

impl Txn {
    fn new() -> Self {
        Txn {
            objects: List::new(),
            sessions: List::new(),
        }
    }
    fn phandle_of(&self, vhandle: u32) -> Option<u32> {
        self.objects
            .iter()
            .find(|o| o.vhandle == vhandle)
            .map(|o| o.phandle)
    }
    fn mark_flushed(&mut self, vhandle: u32) {
        for o in self.objects.items.iter_mut().flatten() {
            if o.vhandle == vhandle {
                o.alive = false;
            }
        }
    }
}

/// Outcome of one of our own context commands: Ok(value) or the TPM's response code.
type TpmResult<T> = Result<T, u32>;

/// The buffers and counters of the resource manager's own TPM traffic.
struct Io {
    cmd: Vec<u8>,
    rsp: Vec<u8>,
    rsp_len: usize,
    stats: Stats,
}

/// Sends `cmd`, receives into `rsp`, checks the response framing. The one place where TPM
/// commands are counted.
fn send(
    stats: &mut Stats,
    tpm: &mut dyn Tpm,
    cmd: &[u8],
    rsp: &mut [u8],
) -> Result<usize, RmError> {
    bump(&mut stats.tpm_commands);
    let n = match tpm.transmit(cmd, rsp) {
        Ok(n) => n,
        Err(e) => {
            bump(&mut stats.transport_errors);
            return Err(RmError::Transport(e.0));
        }
    };
    let r = rsp.get(..n).ok_or(RmError::BadResponse)?;
    ResponseHeader::parse(r).map_err(|_| RmError::BadResponse)?;
    Ok(n)
}

impl Io {
    fn new() -> Result<Self, RmError> {
        let mut cmd = Vec::try_with_capacity(TPM_BUFSIZE)?;
        let mut rsp = Vec::try_with_capacity(TPM_BUFSIZE)?;
        for _ in 0..TPM_BUFSIZE {
            cmd.try_push(0)?;
            rsp.try_push(0)?;
        }
        Ok(Io {
            cmd,
            rsp,
            rsp_len: 0,
            stats: Stats::default(),
        })
    }

    /// Sends the first `len` bytes of the command buffer; returns the response code.
    fn run(&mut self, tpm: &mut dyn Tpm, len: usize) -> Result<u32, RmError> {
        let cmd = self.cmd.get(..len).ok_or(RmError::OutOfMemory)?;
        self.rsp_len = send(&mut self.stats, tpm, cmd, &mut self.rsp)?;
        Ok(get_u32(&self.rsp, 6).unwrap_or(u32::MAX))
    }

    /// The last response.
    fn last(&self) -> &[u8] {
        self.rsp.get(..self.rsp_len).unwrap_or(&[])
    }

    /// Copies the last response into `out`; returns its length.
    fn copy_last(&self, out: &mut [u8]) -> Result<usize, RmError> {
        let r = self.last();
        out.get_mut(..r.len())
            .ok_or(RmError::BufferTooSmall)?
            .copy_from_slice(r);
        Ok(r.len())
    }

    fn context_load(&mut self, tpm: &mut dyn Tpm, blob: &[u8]) -> Result<TpmResult<u32>, RmError> {
        let n = build_context_load(&mut self.cmd, blob).map_err(|_| RmError::InvalidCommand)?;
        bump(&mut self.stats.context_loads);
        let rc = self.run(tpm, n)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(Err(rc));
        }
        context_load_handle(self.last())
            .map(Ok)
            .map_err(|_| RmError::BadResponse)
    }

    /// Saves `handle`; on success the blob is `self.last()[10..]`.
    fn context_save(&mut self, tpm: &mut dyn Tpm, handle: u32) -> Result<TpmResult<()>, RmError> {
        let n = build_context_save(&mut self.cmd, handle).map_err(|_| RmError::OutOfMemory)?;
        bump(&mut self.stats.context_saves);
        let rc = self.run(tpm, n)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(Err(rc));
        }
        context_save_blob(self.last()).map_err(|_| RmError::BadResponse)?;
        Ok(Ok(()))
    }

    /// The blob of the last successful `context_save`, copied.
    fn saved_blob(&self) -> Result<Vec<u8>, RmError> {
        let b = context_save_blob(self.last()).map_err(|_| RmError::BadResponse)?;
        let mut v = Vec::try_with_capacity(b.len())?;
        v.try_extend_from_slice(b)?;
        Ok(v)
    }

    fn flush(&mut self, tpm: &mut dyn Tpm, handle: u32) -> Result<TpmResult<()>, RmError> {
        let n = build_flush_context(&mut self.cmd, handle).map_err(|_| RmError::OutOfMemory)?;
        bump(&mut self.stats.flushes);
        let rc = self.run(tpm, n)?;
        Ok(if rc == TPM_RC_SUCCESS {
            Ok(())
        } else {
            Err(rc)
        })
    }

    /// Flushes `handle`; if the transport fails, queues it in `pending` and returns the error.
    fn flush_or_queue(
        &mut self,
        tpm: &mut dyn Tpm,
        pending: &mut Vec<u32>,
        handle: u32,
    ) -> Result<(), RmError> {
        match self.flush(tpm, handle) {
            Ok(_) => Ok(()),
            Err(e) => {
                // If even the queue cannot grow, the handle leaks: nothing else can be done.
                let _ = pending.try_push(handle);
                Err(e)
            }
        }
    }
}

/// The TPM 2.0 resource manager: global state shared by every space.
pub struct Rm {
    config: Config,
    cc: CcTable,
    sessions: SessionRegistry,
    io: Io,
    /// Copy of the client command, patched with physical handles.
    work: Vec<u8>,
    /// Handles whose FlushContext failed on the transport, retried later.
    pending_flushes: Vec<u32>,
    next_space_id: u64,
}

/// Writes a synthesized response code into `rsp` (RM layer if `layer`).
fn synth(rsp: &mut [u8], stats: &mut Stats, rc: u32) -> Result<usize, RmError> {
    bump(&mut stats.synthesized_responses);
    write_rc_response(rsp, rc).map_err(|_| RmError::BufferTooSmall)
}

fn synth_rm(rsp: &mut [u8], stats: &mut Stats, rc: u32) -> Result<usize, RmError> {
    bump(&mut stats.synthesized_responses);
    write_rm_error(rsp, rc).map_err(|_| RmError::BufferTooSmall)
}

/// Whether `cc` changes the state of the sequence object it uses.
fn updates_sequence(cc: u32) -> bool {
    matches!(
        cc,
        TPM_CC_SEQUENCE_UPDATE | TPM_CC_SEQUENCE_COMPLETE | TPM_CC_EVENT_SEQUENCE_COMPLETE
    )
}

/// Whether `cc` creates a sequence object.
fn starts_sequence(cc: u32) -> bool {
    matches!(cc, TPM_CC_HASH_SEQUENCE_START | TPM_CC_HMAC_START)
}

/// One command in flight: disjoint borrows of the resource manager's state.
struct Exec<'a> {
    config: Config,
    io: &'a mut Io,
    sessions: &'a mut SessionRegistry,
    pending: &'a mut Vec<u32>,
    space: &'a mut Space,
    tpm: &'a mut dyn Tpm,
    now: u64,
    txn: Txn,
}

impl Exec<'_> {
    /// Loads every object in the handle area and patches its physical handle into `work`.
    /// Ok(None) when done; Ok(Some(n)) when a response of n bytes for the client is in `rsp`.
    fn load_objects(
        &mut self,
        command: &Command,
        work: &mut [u8],
        rsp: &mut [u8],
    ) -> Result<Option<usize>, RmError> {
        let cc = command.cc();
        for (i, &h) in command.handles().iter().enumerate() {
            if !is_transient_handle(h) {
                continue;
            }
            let phandle = match self.txn.phandle_of(h) {
                Some(p) => p,
                None => {
                    let Some(obj) = self.space.object(h) else {
                        return Err(RmError::InvalidCommand);
                    };
                    let sequence = obj.sequence;
                    match self.io.context_load(self.tpm, &obj.blob)? {
                        Ok(p) => {
                            self.txn.objects.add(LoadedObject {
                                vhandle: h,
                                phandle: p,
                                resave: sequence || updates_sequence(cc),
                                alive: true,
                            });
                            p
                        }
                        Err(rc) if is_resource_rc(rc) => {
                            return self.io.copy_last(rsp).map(Some);
                        }
                        Err(_) => {
                            self.space.remove_object(h);
                            let pos = u32::try_from(i).unwrap_or(0).saturating_add(1);
                            return synth_rm(rsp, &mut self.io.stats, rc_handle_at_handle(pos))
                                .map(Some);
                        }
                    }
                }
            };
            put_u32(work, Command::handle_offset(i), phandle)
                .map_err(|_| RmError::InvalidCommand)?;
        }
        Ok(None)
    }

    /// Loads every session the command names that we hold saved, and marks every session it
    /// names for saving afterwards.
    fn load_sessions(
        &mut self,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<Option<usize>, RmError> {
        let from_handles = command.handles().iter().enumerate().map(|(i, h)| {
            (
                *h,
                rc_handle_at_handle(u32::try_from(i).unwrap_or(0).saturating_add(1)),
            )
        });
        let from_auth = command.sessions().iter().enumerate().map(|(i, s)| {
            (
                s.handle,
                rc_handle_at_session(u32::try_from(i).unwrap_or(0).saturating_add(1)),
            )
        });
        for (h, err_rc) in from_handles.chain(from_auth) {
            if !is_session_handle(h) || self.txn.sessions.contains(h) {
                continue;
            }
            let Some(entry) = self.sessions.get_mut(h) else {
                continue; // checked before: cannot happen
            };
            entry.last_used_ns = self.now;
            let result = match &entry.state {
                SessionState::Loaded => {
                    self.txn.sessions.add(h);
                    continue;
                }
                SessionState::SavedByClient => continue,
                SessionState::SavedByRm(blob) => self.io.context_load(self.tpm, blob)?,
            };
            match result {
                Ok(p) if p == h => {
                    entry.state = SessionState::Loaded;
                    self.txn.sessions.add(h);
                }
                Ok(p) => {
                    // Restored under another handle: should never happen. Drop it.
                    self.sessions.remove(h);
                    let _ = self.io.flush_or_queue(self.tpm, self.pending, p);
                    return synth_rm(rsp, &mut self.io.stats, err_rc).map(Some);
                }
                Err(rc) if is_resource_rc(rc) => return self.io.copy_last(rsp).map(Some),
                Err(_) => {
                    self.sessions.remove(h);
                    return synth_rm(rsp, &mut self.io.stats, err_rc).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// A successful command returned the transient object `phandle`: save it as a new object
    /// of the space and patch its virtual handle into the response. `client_blob` is the
    /// context the client loaded (TPM2_ContextLoad), which can be kept as it is.
    fn adopt_object(
        &mut self,
        cc: u32,
        phandle: u32,
        client_blob: Option<&[u8]>,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        if self.space.objects().len() >= self.config.max_objects {
            self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY);
        }
        let (blob, sequence) = match client_blob {
            Some(b) => {
                let mut v = match Vec::try_with_capacity(b.len()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
                        return Err(e.into());
                    }
                };
                if v.try_extend_from_slice(b).is_err() {
                    self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
                    return Err(RmError::OutOfMemory);
                }
                let seq =
                    parse_context(b).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE);
                (v, seq)
            }
            None => {
                let saved = match self.io.context_save(self.tpm, phandle) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = self.pending.try_push(phandle);
                        return Err(e);
                    }
                };
                if let Err(rc) = saved {
                    self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
                    return synth(rsp, &mut self.io.stats, rc);
                }
                let v = match self.io.saved_blob() {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
                        return Err(e);
                    }
                };
                let seq = starts_sequence(cc)
                    || parse_context(&v).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE);
                (v, seq)
            }
        };
        self.io.flush_or_queue(self.tpm, self.pending, phandle)?;
        match self
            .space
            .insert_object(blob, sequence, self.config.max_objects)
        {
            Ok(vhandle) => {
                put_u32(rsp, TPM_HEADER_SIZE, vhandle).map_err(|_| RmError::BadResponse)?;
                Ok(len)
            }
            Err(InsertError::Full) => synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY),
            Err(InsertError::OutOfMemory) => Err(RmError::OutOfMemory),
        }
    }

    /// A successful command returned the session `handle`: register it as this space's.
    fn adopt_session(&mut self, handle: u32, rsp: &mut [u8], len: usize) -> Result<usize, RmError> {
        let owner = self.space.id();
        let others = self
            .sessions
            .entries()
            .iter()
            .filter(|e| e.owner == owner && !same_session(e.handle, handle))
            .count();
        if others >= self.config.max_sessions {
            self.sessions.remove(handle);
            self.io.flush_or_queue(self.tpm, self.pending, handle)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_SESSION_MEMORY);
        }
        let created_ns = match self.sessions.get(handle) {
            Some(e) if e.owner == owner => e.created_ns,
            _ => self.now,
        };
        let entry = SessionEntry {
            handle,
            owner,
            state: SessionState::Loaded,
            created_ns,
            last_used_ns: self.now,
        };
        if self.sessions.insert(entry).is_err() {
            self.io.flush_or_queue(self.tpm, self.pending, handle)?;
            return Err(RmError::OutOfMemory);
        }
        self.txn.sessions.add(handle);
        Ok(len)
    }

    /// Saves the sessions used and flushes the objects loaded. Never leaves anything of ours
    /// in the TPM that we do not track. Returns the first transport error, after trying all.
    fn finish(&mut self) -> Result<(), RmError> {
        let mut first_err = None;
        for h in self.txn.sessions.iter() {
            let loaded = self.sessions.get(h).is_some_and(|e| e.state.is_loaded());
            if !loaded {
                continue;
            }
            let saved = match self.io.context_save(self.tpm, h) {
                Ok(Ok(())) => self.io.saved_blob().ok(),
                Ok(Err(rc)) if is_handle_rc(rc) => {
                    // Gone from the TPM (lazy backup of strict accounting): forget it.
                    self.sessions.remove(h);
                    continue;
                }
                Ok(Err(_)) => None,
                Err(e) => {
                    let _ = self.pending.try_push(h);
                    self.sessions.remove(h);
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            match (saved, self.sessions.get_mut(h)) {
                (Some(blob), Some(entry)) => entry.state = SessionState::SavedByRm(blob),
                _ => {
                    self.sessions.remove(h);
                    if let Err(e) = self.io.flush_or_queue(self.tpm, self.pending, h) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        for o in self.txn.objects.iter() {
            if !o.alive {
                continue;
            }
            if o.resave && self.space.object(o.vhandle).is_some() {
                let blob = match self.io.context_save(self.tpm, o.phandle) {
                    Ok(Ok(())) => self.io.saved_blob().ok(),
                    Ok(Err(_)) => None,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        None
                    }
                };
                match (blob, self.space.object_mut(o.vhandle)) {
                    (Some(b), Some(obj)) => obj.blob = b,
                    // A stale blob of a sequence would silently give wrong results.
                    _ => {
                        self.space.remove_object(o.vhandle);
                    }
                }
            }
            if let Err(e) = self.io.flush_or_queue(self.tpm, self.pending, o.phandle) {
                first_err.get_or_insert(e);
            }
        }
        self.txn = Txn::new();
        first_err.map_or(Ok(()), Err)
    }

    /// `finish`, then `result` (or the first transport error of `finish` if `result` is Ok).
    fn conclude(&mut self, result: Result<usize, RmError>) -> Result<usize, RmError> {
        let f = self.finish();
        let n = result?;
        f.map(|()| n)
    }
}

impl Rm {
    /// A resource manager with its buffers allocated; call [`Rm::init`] before use.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`].
    pub fn new(config: Config) -> Result<Rm, RmError> {
        let mut work = Vec::try_with_capacity(TPM_BUFSIZE)?;
        work.try_push(0)?;
        work.clear();
        Ok(Rm {
            config,
            cc: CcTable::new(),
            sessions: SessionRegistry::new(),
            io: Io::new()?,
            work,
            pending_flushes: Vec::try_with_capacity(16)?,
            next_space_id: 1,
        })
    }

    /// Reads the TPM's command table (TPM2_GetCapability(TPM_CAP_COMMANDS), following
    /// moreData).
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::BadResponse`] (also for a TPM error),
    /// [`RmError::OutOfMemory`].
    pub fn init(&mut self, tpm: &mut dyn Tpm) -> Result<(), RmError> {
        self.cc.clear();
        let r = self.read_cc_table(tpm);
        if r.is_err() {
            self.cc.clear();
        }
        r
    }

    fn read_cc_table(&mut self, tpm: &mut dyn Tpm) -> Result<(), RmError> {
        let mut property = 0;
        for _ in 0..MAX_CAP_COMMANDS_ROUNDS {
            let n = CcTable::build_request(&mut self.io.cmd, property)
                .map_err(|_| RmError::OutOfMemory)?;
            self.io.run(tpm, n)?;
            let next = self
                .cc
                .add_from_response(self.io.last())
                .map_err(|e| match e {
                    CcTableError::OutOfMemory => RmError::OutOfMemory,
                    CcTableError::BadResponse | CcTableError::Tpm(_) => RmError::BadResponse,
                })?;
            match next {
                None => {
                    return if self.cc.is_empty() {
                        Err(RmError::BadResponse)
                    } else {
                        Ok(())
                    }
                }
                Some(p) if p > property => property = p,
                Some(_) => return Err(RmError::BadResponse),
            }
        }
        Err(RmError::BadResponse)
    }

    /// The TPM's command table.
    pub fn command_table(&self) -> &CcTable {
        &self.cc
    }

    /// The session registry.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.sessions
    }

    /// Handles whose flush is still pending (transport failures).
    pub fn pending_flushes(&self) -> &[u32] {
        &self.pending_flushes
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    /// A new, empty space with a unique id.
    ///
    /// # Errors
    /// None today; reserved for allocation failures.
    pub fn new_space(&mut self) -> Result<Space, RmError> {
        let id = self.next_space_id;
        self.next_space_id = self.next_space_id.wrapping_add(1);
        Ok(Space::new(id))
    }

    /// Retries queued flushes; those that fail on the transport stay queued.
    fn retry_pending_flushes(&mut self, tpm: &mut dyn Tpm) {
        let mut tries = self.pending_flushes.len();
        while tries > 0 {
            // PANIC: tries > 0 here.
            tries -= 1;
            let Some(h) = self.pending_flushes.pop() else {
                break;
            };
            if self.io.flush(tpm, h).is_err() {
                let _ = self.pending_flushes.try_push(h);
                break; // the transport is still down
            }
        }
    }

    /// One client command for `space`. `cmd` is exactly what the client wrote (the caller
    /// already rejected >4096 with E2BIG).
    /// Ok(n): a response of n bytes in `rsp` (from the TPM or synthesized in the RM layer).
    /// Err: the errno tpmrm0 would give.
    ///
    /// # Errors
    /// See [`RmError`].
    pub fn execute(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now_ns: u64,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        bump(&mut self.io.stats.client_commands);
        let r = self.execute_inner(space, tpm, now_ns, cmd, rsp);
        if r.is_err() {
            bump(&mut self.io.stats.rejected_commands);
        }
        r
    }

    fn execute_inner(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now: u64,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        if self.cc.is_empty() {
            return Err(RmError::NotInitialized);
        }
        if rsp.len() < TPM_BUFSIZE {
            return Err(RmError::BufferTooSmall);
        }
        if cmd.len() > TPM_BUFSIZE {
            return Err(RmError::TooBig);
        }
        let header = CommandHeader::parse(cmd).map_err(|_| RmError::InvalidCommand)?;
        let Some(attrs) = self.cc.lookup(header.cc) else {
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_COMMAND_CODE);
        };
        let command = match Command::parse(cmd, attrs) {
            Ok(c) => c,
            // As /dev/tpmrm0, which leaves the tag to the TPM: the TPM's own answer.
            Err(FramingError::BadTag) => return synth(rsp, &mut self.io.stats, TPM_RC_BAD_TAG),
            Err(_) => return Err(RmError::InvalidCommand),
        };
        self.retry_pending_flushes(tpm);

        // Ownership checks, before anything is sent.
        let owner = space.id();
        for (i, &h) in command.handles().iter().enumerate() {
            let pos = u32::try_from(i).unwrap_or(0).saturating_add(1);
            if is_transient_handle(h) && space.object(h).is_none() {
                return Err(RmError::InvalidCommand);
            }
            if is_session_handle(h) && !self.sessions.is_owned_by(h, owner) {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_handle(pos));
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            let pos = u32::try_from(i).unwrap_or(0).saturating_add(1);
            if is_session_handle(s.handle) && !self.sessions.is_owned_by(s.handle, owner) {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_session(pos));
            }
        }

        self.work.clear();
        self.work.try_extend_from_slice(cmd)?;

        match header.cc {
            TPM_CC_FLUSH_CONTEXT => return self.flush_context(space, tpm, &command, rsp),
            TPM_CC_GET_CAPABILITY => {
                if let Ok(req) = CapabilityRequest::parse(cmd, command.params_offset()) {
                    if req.capability == TPM_CAP_HANDLES
                        && handle_type(req.property) == TPM_HT_TRANSIENT
                        && header.tag == TPM_ST_NO_SESSIONS
                    {
                        return self.list_transient(space, req, rsp);
                    }
                }
            }
            TPM_CC_CONTEXT_LOAD => {
                if let Ok(ctx) = cmd
                    .get(command.params_offset()..)
                    .map_or(Err(super::codec::Truncated), parse_context)
                {
                    if is_session_handle(ctx.saved_handle)
                        && self
                            .sessions
                            .get(ctx.saved_handle)
                            .is_some_and(|e| e.owner != owner)
                    {
                        return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
                    }
                }
            }
            _ => {}
        }
        self.general(space, tpm, now, &command, rsp)
    }

    /// GetCapability(TPM_CAP_HANDLES) of transient handles: the space's own, synthesized.
    fn list_transient(
        &mut self,
        space: &Space,
        req: CapabilityRequest,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let objs = space.objects();
        let mut handles: Vec<u32> = Vec::try_with_capacity(objs.len())?;
        for o in objs {
            handles.try_push(o.vhandle)?;
        }
        bump(&mut self.io.stats.synthesized_responses);
        write_handles_response(rsp, &handles, req.property, req.property_count)
            .map_err(|_| RmError::BufferTooSmall)
    }

    /// TPM2_FlushContext: flushHandle is a parameter.
    fn flush_context(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let Some(h) = get_u32(&self.work, command.params_offset()) else {
            return send(&mut self.io.stats, tpm, &self.work, rsp);
        };
        if is_transient_handle(h) {
            return match space.remove_object(h) {
                Some(_) => synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS),
                None => Err(RmError::InvalidCommand),
            };
        }
        if is_session_handle(h) {
            if !self.sessions.is_owned_by(h, space.id()) {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
            }
            let n = send(&mut self.io.stats, tpm, &self.work, rsp)?;
            if get_u32(rsp, 6) == Some(TPM_RC_SUCCESS) {
                self.sessions.remove(h);
            }
            return Ok(n);
        }
        send(&mut self.io.stats, tpm, &self.work, rsp)
    }

    /// The general pipeline.
    fn general(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now: u64,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let Rm {
            config,
            sessions,
            io,
            work,
            pending_flushes,
            ..
        } = self;
        let mut x = Exec {
            config: *config,
            io,
            sessions,
            pending: pending_flushes,
            space,
            tpm,
            now,
            txn: Txn::new(),
        };
        match x.load_objects(command, work, rsp) {
            Ok(None) => {}
            r => return x.conclude(r.map(|n| n.unwrap_or(0))),
        }
        match x.load_sessions(command, rsp) {
            Ok(None) => {}
            r => return x.conclude(r.map(|n| n.unwrap_or(0))),
        }
        let n = match send(&mut x.io.stats, x.tpm, work, rsp) {
            Ok(n) => n,
            Err(e) => return x.conclude(Err(e)),
        };
        let r = Self::map_response(&mut x, command, work, rsp, n);
        x.conclude(r)
    }

    fn map_response(
        x: &mut Exec<'_>,
        command: &Command,
        work: &[u8],
        rsp: &mut [u8],
        n: usize,
    ) -> Result<usize, RmError> {
        let rc = get_u32(rsp, 6).ok_or(RmError::BadResponse)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(n);
        }
        let cc = command.cc();
        let attrs: CcAttrs = command.attrs;
        if attrs.flushed() {
            if let Some(&h) = command.handles().first() {
                if is_transient_handle(h) {
                    x.txn.mark_flushed(h);
                    x.space.remove_object(h);
                }
            }
        }
        for s in command.sessions() {
            if is_session_handle(s.handle) && s.attributes & TPMA_SESSION_CONTINUESESSION == 0 {
                // The TPM ended it.
                x.sessions.remove(s.handle);
            }
        }
        if cc == TPM_CC_CONTEXT_SAVE {
            if let Some(&h) = command.handles().first() {
                if let Some(e) = x.sessions.get_mut(h) {
                    e.state = SessionState::SavedByClient;
                }
            }
        }
        if cc == TPM_CC_GET_CAPABILITY {
            let owner = x.space.id();
            let sessions = &*x.sessions;
            return filter_handles_response(rsp, n, |h| {
                if is_transient_handle(h) {
                    false
                } else if is_session_handle(h) {
                    sessions.slot_owned_by(h, owner)
                } else {
                    true
                }
            })
            .map_err(|_| RmError::BadResponse);
        }
        if attrs.r_handle() {
            let h = get_u32(rsp, TPM_HEADER_SIZE).ok_or(RmError::BadResponse)?;
            if is_transient_handle(h) {
                let client_blob = if cc == TPM_CC_CONTEXT_LOAD {
                    let p = work.get(command.params_offset()..).unwrap_or(&[]);
                    parse_context(p).ok().and_then(|i| p.get(..i.len))
                } else {
                    None
                };
                return x.adopt_object(cc, h, client_blob, rsp, n);
            }
            if is_session_handle(h) {
                return x.adopt_session(h, rsp, n);
            }
        }
        Ok(n)
    }

    /// Close: flush everything the space holds from the TPM. Never fails; a flush that fails
    /// on the transport is queued and retried at the next execute/close.
    pub fn close_space(&mut self, space: &mut Space, tpm: &mut dyn Tpm) {
        self.retry_pending_flushes(tpm);
        while let Some(e) = self.sessions.remove_one_owned(space.id()) {
            // A TPM error means it is gone already.
            let _ = self
                .io
                .flush_or_queue(tpm, &mut self.pending_flushes, e.handle);
        }
        space.clear();
    }
}
