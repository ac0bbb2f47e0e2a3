// SPDX-License-Identifier: GPL-2.0
//! The resource-manager pipeline: one client command in, one response (or errno) out.
//!
//! Per command: check the framing, map the handle area, load only what the command uses
//! (objects from their saved blobs, sessions saved by us), send, map the response, then save
//! the sessions used and flush the objects loaded. Nothing of a space stays loaded in the TPM
//! between commands, so any number of spaces and objects fit.
//!
//! # Sessions
//!
//! * **Strict accounting.** FlushContext, continueSession = 0 and close are intercepted, so
//!   we know when one of our session slots is freed; a failed context save is the lazy
//!   backup (the session is forgotten, and flushed unless the TPM says it is gone).
//! * **Continuation.** At close, a session the client saved itself (TPM2_ContextSave) is not
//!   flushed: it joins a bounded list of *abandoned* sessions (`Config::max_abandoned`,
//!   oldest flushed first) that any space may TPM2_ContextLoad, which makes the session its
//!   own. This is what `tpm2 startauthsession -S s.ctx` followed by another process using
//!   `session:s.ctx` needs. Only the owner (or, for an abandoned session, a loader) may name
//!   a session; FlushContext of an abandoned session is refused (load it first).
//! * **Global exhaustion.** When the TPM has no session slot (TPM_RC_SESSION_HANDLES or
//!   TPM_RC_SESSION_MEMORY on StartAuthSession, on a client's ContextLoad of a session or on
//!   our own load of a session), the command is undone and fails with
//!   [`RmError::SessionsExhausted`]; the caller queues (see [`super::scheduler`] for the
//!   policy and [`Rm::wait_step`] for how to drive it).
//! * **Evicted sessions.** A session flushed by force (for a waiter, or to close a context
//!   gap) leaves a *tombstone* in its owner's name. The owner's first reference to that
//!   handle afterwards -- in the handle area or the authorization area -- is answered, without
//!   sending anything, `TPM_RC_EXPIRED` in the resource-manager layer with the position of
//!   the handle (e.g. 0x000B01A3 for handle 1, 0x000B09A3 for session 1); a FlushContext of
//!   it is answered success. Either consumes the tombstone. This holds even if the TPM has
//!   since handed the same handle number to another space: the owner's first reference
//!   after the eviction means the evicted session, never the other space's. If the number
//!   comes back to the *same* space before it was told (its own StartAuthSession, or the
//!   ContextLoad of an abandoned session, gets it), the space's new session is given an
//!   *alias* instead (the same handle type, an index with
//!   [`super::sessions::SESSION_ALIAS_BIT`] set): the old number still answers
//!   TPM_RC_EXPIRED once and the new one works, so a client holding both references never
//!   has its old reference reach the new session (with a stale nonce, an HMAC failure that
//!   counts against the dictionary-attack lockout). Aliases are rewritten to the TPM's handle
//!   in the handle area, the authorization area and FlushContext, and back in the
//!   StartAuthSession, ContextLoad and GetCapability(TPM_CAP_HANDLES) responses.
//!   The TPM never sees an alias. One limit: a session's Name is its handle, and a
//!   command that names an aliased session in its handle area (PolicySecret, PolicyNV, ...)
//!   while authorizing another handle with an HMAC session computes cpHash over the alias,
//!   so that HMAC fails; this needs an eviction, the number reissued to the same space and
//!   the old reference still unused, all at once.
//! * **Context gap.** When a ContextSave of a session (ours or the client's, or any other
//!   command) fails with TPM_RC_CONTEXT_GAP, the oldest saved session we track is loaded and
//!   saved again (renewing its sequence number) and the command retried; a session whose
//!   blob only the client holds cannot be renewed, so it is evicted instead. Clients never see
//!   TPM_RC_CONTEXT_GAP for sessions we hold the blob of.
//!
//!   GetCapability(TPM_PT_CONTEXT_GAP_MAX) is passed through unchanged (tpm2-abrmd reports
//!   UINT32_MAX instead): the TPM's value is still the truth for blobs a client holds itself,
//!   which we do not renew but evict, and rewriting TPM_CAP_TPM_PROPERTIES would add a parser
//!   for no client we know of that acts on it.

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
use super::scheduler::{choose_victim, Action, Scheduler, Ticket, WaitStep};
use super::sessions::{
    same_session, SessionEntry, SessionRegistry, SessionState, SESSION_ALIAS_BIT,
};
use super::space::{InsertError, Space};
use super::stats::{bump, OwnerCounts, Stats};
use super::tpm::Tpm;

/// Limits of the resource manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most transient objects one space may hold (default 64).
    pub max_objects: usize,
    /// Most sessions one space may own (default 64). Abandoned sessions count for nobody.
    pub max_sessions: usize,
    /// Most abandoned sessions kept for continuation (default 8, like tpm2-abrmd's 4-8;
    /// 0 flushes every session at close). Each holds one of the TPM's session slots
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_objects: 64,
            max_sessions: 64,
            max_abandoned: 8,
            session_timeout_ns: 2_000_000_000,
            retry_interval_ns: 100_000_000,
        }
    }
}

/// Most GetCapability(TPM_CAP_COMMANDS) round trips `init` makes.
const MAX_CAP_COMMANDS_ROUNDS: usize = 64;
/// Sessions one command can touch: its handle area, its authorization area, a new one.
const MAX_TXN_SESSIONS: usize = MAX_HANDLES + MAX_SESSIONS_PER_COMMAND + 1;
/// Most context-gap repairs (each renews or evicts one session) for one failed command or
/// save. More than one is needed only if a session outside tpmrs is the oldest.
const MAX_GAP_REPAIRS: usize = 4;

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
    evicted: OwnerCounts,
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
            evicted: OwnerCounts::new(),
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

    /// Flushes `handle`; if the flush is not over (the transport failed, or the TPM did not
    /// execute it), queues it in `pending`. Returns the transport error, if any.
    fn flush_or_queue(
        &mut self,
        tpm: &mut dyn Tpm,
        pending: &mut Vec<u32>,
        handle: u32,
    ) -> Result<(), RmError> {
        let r = self.flush(tpm, handle);
        if !flush_done(&r) {
            // Still there (transport down, or e.g. TPM_RC_RETRY): try again later. If even
            // the queue cannot grow, the handle leaks: nothing else can be done.
            let _ = pending.try_push(handle);
        }
        r.map(|_| ())
    }
}

/// Where a freed session slot goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// To the oldest waiter without a reservation (if any).
    Queue,
    /// To this waiter (it evicted for it).
    Waiter(u64),
}

/// How a session of ours ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The TPM ended it already (continueSession = 0, a handle error on save).
    Gone,
    /// Flush it.
    Flush,
}

/// A session evicted from space `owner`: its owner's next reference to `handle` gets
/// TPM_RC_EXPIRED (see the module documentation).
#[derive(Clone, Copy)]
struct Tombstone {
    owner: u64,
    handle: u32,
}

/// Global session bookkeeping, shared by every space.
struct State {
    sessions: SessionRegistry,
    /// Handles whose FlushContext failed on the transport, retried later.
    pending: Vec<u32>,
    tombstones: Vec<Tombstone>,
    sched: Scheduler,
    next_session_id: u64,
    abandon_tick: u64,
    /// The TPM's answer behind the last `SessionsExhausted`.
    exhaustion_rc: Option<u32>,
    /// (space, TPM answer) of the last `SessionsExhausted` that reached the TPM, for
    /// `wait_begin`.
    last_exhaustion: Option<(u64, u32)>,
}

/// Whether a FlushContext of ours is over: done, or answered with an error that says the
/// handle is gone. Not over: the transport failed, or the TPM did not execute it.
fn flush_done(r: &Result<TpmResult<()>, RmError>) -> bool {
    match r {
        Ok(Ok(())) => true,
        Ok(Err(rc)) => !is_not_executed_rc(*rc),
        Err(_) => false,
    }
}

/// `sequence` of a TPMS_CONTEXT.
fn blob_seq(blob: &[u8]) -> Option<u64> {
    parse_context(blob).ok().map(|i| i.sequence)
}

impl State {
    fn new() -> Result<Self, RmError> {
        Ok(State {
            sessions: SessionRegistry::new(),
            pending: Vec::try_with_capacity(16)?,
            tombstones: Vec::new(),
            sched: Scheduler::new(),
            next_session_id: 1,
            abandon_tick: 0,
            exhaustion_rc: None,
            last_exhaustion: None,
        })
    }

    fn new_session_id(&mut self) -> u64 {
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        id
    }

    fn grant(&mut self, g: Grant) {
        match g {
            Grant::Queue => self.sched.slot_freed(),
            Grant::Waiter(id) => self.sched.reserve(id),
        }
    }

    /// The TPM handed handle `h` to us (a new or loaded object or session): it was free, so a
    /// pending flush of it is stale and must never be sent.
    fn handed_out(&mut self, h: u32) {
        let session = is_session_handle(h);
        let mut i = 0;
        while let Some(&p) = self.pending.get(i) {
            if p == h || (session && is_session_handle(p) && same_session(p, h)) {
                self.pending.swap_remove(i);
            } else {
                // PANIC: i < pending.len() here.
                i += 1;
            }
        }
    }

    /// Queues a flush of session `h` that failed on the transport; `entry` is its registry
    /// entry (already removed). Never loses it: if the queue cannot grow, the entry stays in
    /// the registry as [`SessionState::FlushPending`] (its removal left room for it).
    fn queue_session_flush(&mut self, h: u32, entry: Option<SessionEntry>) {
        if self.pending.try_push(h).is_ok() {
            return;
        }
        let mut e = entry.unwrap_or_else(|| SessionEntry::new(h, 0, 0, 0));
        e.owner = None;
        e.state = SessionState::FlushPending;
        // If even this fails the handle leaks: nothing else can be done.
        let _ = self.sessions.insert(e);
    }

    /// Ends session `h` of ours: forgets it, flushes it if needed and hands the slot to
    /// `grant`. A flush that fails on the transport is queued (the slot is granted when it
    /// is retried) and its error returned.
    fn end_session(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        h: u32,
        end: End,
        grant: Grant,
    ) -> Result<(), RmError> {
        let entry = self.sessions.remove(h);
        if end == End::Flush {
            // Done, or another TPM error: a real TPM fails the flush of a session we hold
            // only when it is gone already (a handle error, or a reset). Otherwise it is
            // still there: the slot is granted when the queued flush goes through.
            let r = io.flush(tpm, h);
            if !flush_done(&r) {
                self.queue_session_flush(h, entry);
                return r.map(|_| ());
            }
        }
        self.grant(grant);
        Ok(())
    }

    /// Evicts session `h`: its owner (if any) gets a tombstone, the slot goes to `grant`.
    fn evict(
        &mut self,
        io: &mut Io,
        tpm: &mut dyn Tpm,
        h: u32,
        grant: Grant,
    ) -> Result<(), RmError> {
        let known = self
            .sessions
            .get(h)
            .and_then(|e| Some((e.owner?, e.vhandle)));
        if let Some((owner, v)) = known {
            io.evicted.bump(owner);
            // At most one per space and number, so they stay bounded. Without memory for
            // it, the owner gets the plain unknown-handle answer.
            let dup = self
                .tombstones
                .iter()
                .any(|t| t.owner == owner && same_session(t.handle, v));
            if !dup {
                let _ = self.tombstones.try_push(Tombstone { owner, handle: v });
            }
        }
        bump(&mut io.stats.evictions);
        self.end_session(io, tpm, h, End::Flush, grant)
    }

    /// The number space `owner` gets for its new session `h`: `h` itself, unless the space
    /// still holds a tombstone for that number (it has not yet been told that its old
    /// session of that number was evicted): then an alias that names neither a tombstone
    /// nor another session of the space.
    fn number_for(&self, owner: u64, h: u32) -> u32 {
        let taken = |v: u32| {
            self.tombstones
                .iter()
                .any(|t| t.owner == owner && same_session(t.handle, v))
                || self
                    .sessions
                    .entries()
                    .iter()
                    .any(|e| e.owner == Some(owner) && same_session(e.vhandle, v))
        };
        if !taken(h) {
            return h;
        }
        // Fewer tombstones and sessions than indices: one is free.
        (0..=0xFFFFu32)
            .map(|k| (h & 0xFF00_0000) | SESSION_ALIAS_BIT | k)
            .find(|&v| !taken(v))
            .unwrap_or(h)
    }

    /// Consumes the tombstone of space `owner` for the session slot of `h`, if any.
    fn take_tombstone(&mut self, owner: u64, h: u32) -> bool {
        let Some(i) = self
            .tombstones
            .iter()
            .position(|t| t.owner == owner && same_session(t.handle, h))
        else {
            return false;
        };
        self.tombstones.swap_remove(i);
        true
    }

    /// Drops every tombstone of space `owner`.
    fn drop_tombstones(&mut self, owner: u64) {
        while let Some(i) = self.tombstones.iter().position(|t| t.owner == owner) {
            self.tombstones.swap_remove(i);
        }
    }

    /// Retries queued flushes; those that fail on the transport stay queued.
    fn retry_pending(&mut self, io: &mut Io, tpm: &mut dyn Tpm) {
        let mut tries = self.pending.len();
        while tries > 0 {
            // PANIC: tries > 0 here.
            tries -= 1;
            let Some(h) = self.pending.pop() else {
                break;
            };
            if !flush_done(&io.flush(tpm, h)) {
                let _ = self.pending.try_push(h); // room: it was just popped
                return; // the transport is still down, or the TPM still busy
            }
            if is_session_handle(h) {
                self.sched.slot_freed();
            }
        }
        while let Some(h) = self.sessions.find_flush_pending() {
            if !flush_done(&io.flush(tpm, h)) {
                return;
            }
            self.sessions.remove(h);
            self.sched.slot_freed();
        }
    }

    /// Abandons session `h` (saved by its client, whose file is being closed).
    fn abandon(&mut self, h: u32) {
        self.abandon_tick = self.abandon_tick.wrapping_add(1);
        let tick = self.abandon_tick;
        if let Some(e) = self.sessions.get_mut(h) {
            e.owner = None;
            e.abandoned_at = tick;
        }
    }

    /// Flushes the oldest abandoned sessions while there are more than `max`.
    fn trim_abandoned(&mut self, io: &mut Io, tpm: &mut dyn Tpm, max: usize) {
        while self.sessions.abandoned_count() > max {
            let Some(h) = self.sessions.oldest_abandoned() else {
                break;
            };
            // A transport failure queues the flush; the entry is gone from the list either way.
            let _ = self.end_session(io, tpm, h, End::Flush, Grant::Queue);
        }
    }

    /// One context-gap repair: renews the oldest saved session we track (load, save), or
    /// evicts it if we cannot (its blob is the client's, or the TPM has no room to load it).
    /// Ok(false) if there is nothing to repair.
    fn repair_gap(&mut self, io: &mut Io, tpm: &mut dyn Tpm) -> Result<bool, RmError> {
        let Some(h) = self.sessions.oldest_saved() else {
            return Ok(false);
        };
        bump(&mut io.stats.gap_repairs);
        let loaded = match self.sessions.get(h).map(|e| &e.state) {
            Some(SessionState::SavedByRm(blob)) => io.context_load(tpm, blob),
            // The client holds the blob: it cannot be renewed.
            _ => return self.evict(io, tpm, h, Grant::Queue).map(|()| true),
        };
        match loaded {
            Ok(Ok(p)) if p == h => {}
            Ok(Ok(p)) => {
                // Restored under another handle: should never happen. Drop both.
                let _ = io.flush_or_queue(tpm, &mut self.pending, p);
                return self.evict(io, tpm, h, Grant::Queue).map(|()| true);
            }
            Ok(Err(rc)) if is_handle_rc(rc) => {
                self.end_session(io, tpm, h, End::Gone, Grant::Queue)?;
                return Ok(true);
            }
            // No room to load it (or a bad blob): flushing needs no room.
            Ok(Err(_)) => return self.evict(io, tpm, h, Grant::Queue).map(|()| true),
            Err(e) => {
                // Perhaps loaded, perhaps not: our blob may be spent. Forget it.
                let _ = self.evict(io, tpm, h, Grant::Queue);
                return Err(e);
            }
        }
        match io.context_save(tpm, h) {
            Ok(Ok(())) => {
                if let Ok(blob) = io.saved_blob() {
                    if let Some(e) = self.sessions.get_mut(h) {
                        e.saved_seq = blob_seq(&blob);
                        e.state = SessionState::SavedByRm(blob);
                        return Ok(true);
                    }
                }
                self.evict(io, tpm, h, Grant::Queue).map(|()| true)
            }
            Ok(Err(_)) => self.evict(io, tpm, h, Grant::Queue).map(|()| true),
            Err(e) => {
                let _ = self.evict(io, tpm, h, Grant::Queue);
                Err(e)
            }
        }
    }
}

/// The TPM 2.0 resource manager: global state shared by every space.
pub struct Rm {
    config: Config,
    cc: CcTable,
    st: State,
    io: Io,
    /// Copy of the client command, patched with physical handles.
    work: Vec<u8>,
    next_space_id: u64,
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

/// 1-based position `i + 1` as a response-code position.
fn pos(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(0).saturating_add(1)
}

/// The session handle saved in the context a TPM2_ContextLoad command loads, if it is one.
fn loaded_session(command: &Command, cmd: &[u8]) -> Option<u32> {
    if command.cc() != TPM_CC_CONTEXT_LOAD {
        return None;
    }
    let ctx = parse_context(cmd.get(command.params_offset()..)?).ok()?;
    is_session_handle(ctx.saved_handle).then_some(ctx.saved_handle)
}

/// One command in flight: disjoint borrows of the resource manager's state.
struct Exec<'a> {
    config: Config,
    io: &'a mut Io,
    st: &'a mut State,
    space: &'a mut Space,
    tpm: &'a mut dyn Tpm,
    now: u64,
    txn: Txn,
    /// The command's waiter gave up: a session shortage is answered, not waited for.
    gave_up: bool,
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
                            self.st.handed_out(p);
                            self.txn.objects.add(LoadedObject {
                                vhandle: h,
                                phandle: p,
                                resave: sequence || updates_sequence(cc),
                                alive: true,
                            });
                            p
                        }
                        // No room, or busy: the client sees the TPM's warning and the
                        // object stays as it was.
                        Err(rc) if is_not_executed_rc(rc) => {
                            return self.io.copy_last(rsp).map(Some);
                        }
                        Err(_) => {
                            self.space.remove_object(h);
                            return synth_rm(rsp, &mut self.io.stats, rc_handle_at_handle(pos(i)))
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
    ///
    /// # Errors
    /// [`RmError::SessionsExhausted`] if the TPM has no room to load one.
    fn load_sessions(
        &mut self,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<Option<usize>, RmError> {
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
            if !is_session_handle(h) || self.txn.sessions.contains(h) {
                continue;
            }
            let Some(entry) = self.st.sessions.get_mut(h) else {
                continue; // checked before: cannot happen
            };
            entry.last_used_ns = self.now;
            let result = match &entry.state {
                SessionState::Loaded => {
                    self.txn.sessions.add(h);
                    continue;
                }
                SessionState::SavedByClient | SessionState::FlushPending => continue,
                SessionState::SavedByRm(blob) => self.io.context_load(self.tpm, blob)?,
            };
            match result {
                Ok(p) if p == h => {
                    entry.state = SessionState::Loaded;
                    entry.saved_seq = None;
                    self.txn.sessions.add(h);
                }
                Ok(p) => {
                    // Restored under another handle: should never happen. Drop it.
                    self.st.sessions.remove(h);
                    let _ = self.io.flush_or_queue(self.tpm, &mut self.st.pending, p);
                    self.st.grant(Grant::Queue);
                    return synth_rm(rsp, &mut self.io.stats, err_rc).map(Some);
                }
                Err(rc) if is_session_exhaustion_rc(rc) && !self.gave_up => {
                    self.st.exhaustion_rc = Some(rc);
                    return Err(RmError::SessionsExhausted);
                }
                // No room, or busy (e.g. TPM_RC_RETRY): the session stays saved, the
                // client sees the TPM's warning.
                Err(rc) if is_not_executed_rc(rc) => return self.io.copy_last(rsp).map(Some),
                Err(_) => {
                    // Not flushed: a real TPM refuses our own untouched blob only when the
                    // context is no longer valid (a TPM reset changed the context key, or
                    // the session is gone), and then the handle may be someone else's.
                    self.st
                        .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)?;
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
        self.st.handed_out(phandle);
        let pending = &mut self.st.pending;
        if self.space.objects().len() >= self.config.max_objects {
            self.io.flush_or_queue(self.tpm, pending, phandle)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_OBJECT_MEMORY);
        }
        let (blob, sequence) = match client_blob {
            Some(b) => {
                let mut v = match Vec::try_with_capacity(b.len()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, pending, phandle)?;
                        return Err(e.into());
                    }
                };
                if v.try_extend_from_slice(b).is_err() {
                    self.io.flush_or_queue(self.tpm, pending, phandle)?;
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
                        let _ = pending.try_push(phandle);
                        return Err(e);
                    }
                };
                if let Err(rc) = saved {
                    self.io.flush_or_queue(self.tpm, pending, phandle)?;
                    return synth(rsp, &mut self.io.stats, rc);
                }
                let v = match self.io.saved_blob() {
                    Ok(v) => v,
                    Err(e) => {
                        self.io.flush_or_queue(self.tpm, pending, phandle)?;
                        return Err(e);
                    }
                };
                let seq = starts_sequence(cc)
                    || parse_context(&v).is_ok_and(|i| i.saved_handle == TPM_SAVED_HANDLE_SEQUENCE);
                (v, seq)
            }
        };
        self.io.flush_or_queue(self.tpm, pending, phandle)?;
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

    /// A successful command (StartAuthSession, ContextLoad) returned the session `handle`:
    /// register it as this space's. A ContextLoad of an abandoned session is a continuation:
    /// the session becomes this space's, protected from eviction for a new SESSION_TIMEOUT.
    fn adopt_session(
        &mut self,
        cc: u32,
        handle: u32,
        rsp: &mut [u8],
        len: usize,
    ) -> Result<usize, RmError> {
        let owner = self.space.id();
        self.st.handed_out(handle);
        let others = self
            .st
            .sessions
            .entries()
            .iter()
            .filter(|e| e.owner == Some(owner) && !same_session(e.handle, handle))
            .count();
        if others >= self.config.max_sessions {
            self.st
                .end_session(self.io, self.tpm, handle, End::Flush, Grant::Queue)?;
            return synth_rm(rsp, &mut self.io.stats, TPM_RC_SESSION_MEMORY);
        }
        let reload = cc == TPM_CC_CONTEXT_LOAD;
        let previous = self.st.sessions.get(handle);
        let (id, created_ns, owned_since_ns, continued, number) = match previous {
            Some(e) if reload && e.owner == Some(owner) => {
                (e.id, e.created_ns, e.owned_since_ns, false, Some(e.vhandle))
            }
            Some(e) if reload && e.is_abandoned() => (e.id, e.created_ns, self.now, true, None),
            _ => (self.st.new_session_id(), self.now, self.now, false, None),
        };
        let vhandle = number.unwrap_or_else(|| self.st.number_for(owner, handle));
        let mut entry = SessionEntry::new(handle, id, owner, self.now);
        entry.vhandle = vhandle;
        entry.created_ns = created_ns;
        entry.owned_since_ns = owned_since_ns;
        if self.st.sessions.insert(entry).is_err() {
            self.st
                .end_session(self.io, self.tpm, handle, End::Flush, Grant::Queue)?;
            return Err(RmError::OutOfMemory);
        }
        if continued {
            bump(&mut self.io.stats.continuation_hits);
        }
        self.txn.sessions.add(handle);
        if vhandle != handle {
            put_u32(rsp, TPM_HEADER_SIZE, vhandle).map_err(|_| RmError::BadResponse)?;
        }
        Ok(len)
    }

    /// Saves session `h` (loaded for this command) and records its blob. Ok(false) if the
    /// save failed with TPM_RC_CONTEXT_GAP (the session is still loaded).
    fn save_session(&mut self, h: u32) -> Result<bool, RmError> {
        match self.io.context_save(self.tpm, h) {
            Ok(Ok(())) => {
                let blob = self.io.saved_blob().ok();
                match (blob, self.st.sessions.get_mut(h)) {
                    (Some(blob), Some(entry)) => {
                        entry.saved_seq = blob_seq(&blob);
                        entry.state = SessionState::SavedByRm(blob);
                        Ok(true)
                    }
                    _ => self
                        .st
                        .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue)
                        .map(|()| true),
                }
            }
            Ok(Err(TPM_RC_CONTEXT_GAP)) => Ok(false),
            // Gone from the TPM (lazy backup of strict accounting): forget it.
            Ok(Err(rc)) if is_handle_rc(rc) => self
                .st
                .end_session(self.io, self.tpm, h, End::Gone, Grant::Queue)
                .map(|()| true),
            Ok(Err(_)) => self
                .st
                .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue)
                .map(|()| true),
            Err(e) => {
                let entry = self.st.sessions.remove(h);
                self.st.queue_session_flush(h, entry);
                Err(e)
            }
        }
    }

    /// Saves the sessions used and flushes the objects loaded. Never leaves anything of ours
    /// in the TPM that we do not track. Returns the first transport error, after trying all.
    fn finish(&mut self) -> Result<(), RmError> {
        let mut first_err = None;
        let mut gap: List<u32, MAX_TXN_SESSIONS> = List::new();
        let used = self.txn.sessions.items;
        for h in used.iter().flatten().copied() {
            let loaded = self.st.sessions.get(h).is_some_and(|e| e.state.is_loaded());
            if !loaded {
                continue;
            }
            match self.save_session(h) {
                Ok(true) => {}
                Ok(false) => {
                    gap.add(h);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Context gap: renew (or evict) the oldest saved sessions, with fewer of ours
        // loaded now, and try again.
        for h in gap.iter() {
            let mut saved = false;
            for _ in 0..MAX_GAP_REPAIRS {
                match self.st.repair_gap(self.io, self.tpm) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        break;
                    }
                }
                match self.save_session(h) {
                    Ok(true) => {
                        saved = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                        saved = true; // handled (queued)
                        break;
                    }
                }
            }
            if !saved {
                if let Err(e) = self
                    .st
                    .end_session(self.io, self.tpm, h, End::Flush, Grant::Queue)
                {
                    first_err.get_or_insert(e);
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
            if let Err(e) = self
                .io
                .flush_or_queue(self.tpm, &mut self.st.pending, o.phandle)
            {
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
            st: State::new()?,
            io: Io::new()?,
            work,
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
        &self.st.sessions
    }

    /// The wait queue.
    pub fn scheduler(&self) -> &Scheduler {
        &self.st.sched
    }

    /// Handles whose flush is still pending (transport failures).
    pub fn pending_flushes(&self) -> &[u32] {
        &self.st.pending
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    /// Sessions evicted from the open space `space_id` so far (0 once it is closed).
    pub fn evictions_of(&self, space_id: u64) -> u64 {
        self.io.evicted.get(space_id)
    }

    /// Updates the gauges of [`Stats`].
    fn sync_stats(&mut self) {
        let s = &mut self.io.stats;
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        s.sessions = n(self.st.sessions.live_count());
        s.abandoned = n(self.st.sessions.abandoned_count());
        s.waiting = n(self.st.sched.len());
        s.waits = self.st.sched.waits;
        s.longest_wait_ns = self.st.sched.longest_wait_ns;
        s.tombstones = n(self.st.tombstones.len());
        s.pending_flushes = n(self.st.pending.len());
    }

    /// A new, empty space with a unique id.
    ///
    /// # Errors
    /// None today; reserved for allocation failures.
    pub fn new_space(&mut self) -> Result<Space, RmError> {
        let id = self.next_space_id;
        // Never 0, never reused in practice (64 bits).
        self.next_space_id = self.next_space_id.wrapping_add(1).max(1);
        self.io.stats.open_spaces = self.io.stats.open_spaces.saturating_add(1);
        Ok(Space::new(id))
    }

    /// One client command for `space`, not waiting for a session slot: `execute_as` with no
    /// ticket.
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
        self.execute_as(space, tpm, now_ns, None, cmd, rsp)
    }

    /// One client command for `space`. `cmd` is exactly what the client wrote (the caller
    /// already rejected >4096 with E2BIG). `ticket` is the command's place in the wait queue
    /// if it is retried after [`RmError::SessionsExhausted`] (see [`Rm::wait_begin`]).
    /// Ok(n): a response of n bytes in `rsp` (from the TPM or synthesized in the RM layer).
    /// Err: the errno tpmrm0 would give.
    ///
    /// # Errors
    /// See [`RmError`]. [`RmError::SessionsExhausted`]: no session slot now (or others wait
    /// ahead of this command); nothing changed, wait and retry with a ticket.
    pub fn execute_as(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now_ns: u64,
        ticket: Option<&Ticket>,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        bump(&mut self.io.stats.client_commands);
        let id = ticket.map(Ticket::id);
        self.st.exhaustion_rc = None;
        let r = self.execute_inner(space, tpm, now_ns, id, cmd, rsp);
        if r == Err(RmError::SessionsExhausted) {
            let rc = self.st.exhaustion_rc.take();
            if let Some(rc) = rc {
                self.st.last_exhaustion = Some((space.id(), rc));
            }
            self.st.sched.exhausted(id, now_ns, rc);
        }
        if r.is_err() {
            bump(&mut self.io.stats.rejected_commands);
        }
        self.sync_stats();
        r
    }

    /// Queues a command of `space` that got [`RmError::SessionsExhausted`], at the tail.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`] if the queue cannot grow (fail the command).
    pub fn wait_begin(&mut self, space: &Space, now_ns: u64) -> Result<Ticket, RmError> {
        let rc = self
            .st
            .last_exhaustion
            .filter(|(s, _)| *s == space.id())
            .map(|(_, rc)| rc);
        let t = self.st.sched.begin(space.id(), now_ns, rc)?;
        self.sync_stats();
        Ok(t)
    }

    /// The command of `ticket` stops waiting (it got its answer, a signal, or its file is
    /// closing). An unused reservation passes to the next waiter: call
    /// [`Rm::take_wakeup`] afterwards.
    pub fn wait_end(&mut self, ticket: Ticket, now_ns: u64) {
        self.st.sched.end(ticket, now_ns);
        self.sync_stats();
    }

    /// Whether the command of `ticket` may retry now without being refused at once: it holds
    /// a reservation or heads the queue. ([`Rm::wait_step`] also says when.)
    pub fn may_retry(&self, ticket: &Ticket) -> bool {
        self.st.sched.may_take_slot(Some(ticket.id()))
    }

    /// Whether waiters must be woken since the last call (a slot was reserved for one, or
    /// the head changed). The glue then wakes every waiter (notify_all); each asks
    /// [`Rm::wait_step`].
    pub fn take_wakeup(&mut self) -> bool {
        self.st.sched.take_wakeup()
    }

    /// What the command of `ticket` should do now: retry, or sleep until woken or until the
    /// time given. Retries pending flushes, and evicts a session for this waiter when it is
    /// due (see [`Rm::evict_for`]).
    ///
    /// # Errors
    /// [`RmError::Transport`] if an eviction's flush failed on the transport (queued; the
    /// caller may keep waiting or fail the command).
    pub fn wait_step(
        &mut self,
        ticket: &Ticket,
        tpm: &mut dyn Tpm,
        now_ns: u64,
    ) -> Result<WaitStep, RmError> {
        self.st.retry_pending(&mut self.io, tpm);
        let (t, p) = (
            self.config.session_timeout_ns,
            self.config.retry_interval_ns,
        );
        let id = ticket.id();
        if !self.st.sched.contains(id) {
            // A stale ticket (its space was closed): never a busy loop.
            return Ok(WaitStep::Sleep {
                until_ns: now_ns.saturating_add(p.max(1)),
            });
        }
        let sched = &self.st.sched;
        if sched.waited(id, now_ns, t)
            && !sched.is_reserved(id)
            && (sched.is_memory(id) || self.st.sessions.live_count() == 0)
        {
            // Nothing of ours to evict would help: one last try, the TPM's answer.
            self.st.sched.give_up(id);
            self.sync_stats();
            return Ok(WaitStep::Retry);
        }
        let mut r = Ok(WaitStep::Retry);
        for _ in 0..2 {
            r = match self.st.sched.step(id, now_ns, t, p) {
                Action::Retry => Ok(WaitStep::Retry),
                Action::Sleep(until_ns) => Ok(WaitStep::Sleep { until_ns }),
                Action::Evict => match self.evict_inner(id, tpm, now_ns) {
                    Ok(true) => Ok(WaitStep::Retry),
                    Ok(false) => {
                        // Asked again: the attempt is recorded, so no second Evict.
                        r = Ok(WaitStep::Sleep {
                            until_ns: now_ns.saturating_add(p.max(1)),
                        });
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            break;
        }
        self.sync_stats();
        r
    }

    /// Evicts one of our sessions for the command of `ticket`, if it is due: it is the
    /// oldest waiter without a reservation and has waited `session_timeout_ns`. The victim
    /// ([`super::scheduler::choose_victim`]) is flushed, its owner gets a tombstone, and the
    /// slot is reserved for this waiter. Ok(true) if the waiter holds a reservation now;
    /// Ok(false) if nothing was eligible (keep waiting).
    ///
    /// # Errors
    /// [`RmError::Transport`] if the flush failed on the transport (it is queued).
    pub fn evict_for(
        &mut self,
        ticket: &Ticket,
        tpm: &mut dyn Tpm,
        now_ns: u64,
    ) -> Result<bool, RmError> {
        self.st.retry_pending(&mut self.io, tpm);
        let r = self.evict_inner(ticket.id(), tpm, now_ns);
        self.sync_stats();
        r
    }

    fn evict_inner(&mut self, id: u64, tpm: &mut dyn Tpm, now: u64) -> Result<bool, RmError> {
        let sched = &mut self.st.sched;
        if sched.is_reserved(id) {
            return Ok(true);
        }
        let timeout = self.config.session_timeout_ns;
        if !sched.is_first_unreserved(id) || !sched.waited(id, now, timeout) {
            return Ok(false);
        }
        sched.eviction_attempted(id, now);
        let space = sched.space_of(id);
        let Some(victim) = choose_victim(self.st.sessions.entries(), now, timeout, space) else {
            return Ok(false);
        };
        self.st
            .evict(&mut self.io, tpm, victim, Grant::Waiter(id))
            .map(|()| true)
    }

    fn execute_inner(
        &mut self,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now: u64,
        ticket: Option<u64>,
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
        self.st.retry_pending(&mut self.io, tpm);
        let owner = space.id();

        // Sessions this space lost to an eviction: its first reference to one is answered.
        for (i, &h) in command.handles().iter().enumerate() {
            if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                let rc = rc_at_handle(TPM_RC_EXPIRED, pos(i));
                return synth_rm(rsp, &mut self.io.stats, rc);
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            if is_session_handle(s.handle) && self.st.take_tombstone(owner, s.handle) {
                let rc = rc_at_session(TPM_RC_EXPIRED, pos(i));
                return synth_rm(rsp, &mut self.io.stats, rc);
            }
        }
        if header.cc == TPM_CC_FLUSH_CONTEXT {
            if let Some(h) = get_u32(cmd, command.params_offset()) {
                if is_session_handle(h) && self.st.take_tombstone(owner, h) {
                    return synth(rsp, &mut self.io.stats, TPM_RC_SUCCESS);
                }
            }
        }

        // Ownership checks, before anything is sent.
        for (i, &h) in command.handles().iter().enumerate() {
            if is_transient_handle(h) && space.object(h).is_none() {
                return Err(RmError::InvalidCommand);
            }
            if is_session_handle(h) && self.st.sessions.resolve(h, owner).is_none() {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_handle(pos(i)));
            }
        }
        for (i, s) in command.sessions().iter().enumerate() {
            if is_session_handle(s.handle) && self.st.sessions.resolve(s.handle, owner).is_none() {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_session(pos(i)));
            }
        }

        // FIFO: a new session slot only for the head of the queue or a reservation holder.
        if header.cc == TPM_CC_START_AUTH_SESSION
            && !self.st.sched.may_take_slot(ticket)
            && !self.st.sched.gave_up(ticket)
        {
            return Err(RmError::SessionsExhausted);
        }

        self.work.clear();
        self.work.try_extend_from_slice(cmd)?;
        // From here on, sessions by their TPM handles (a client number may be an alias).
        let sessions = &self.st.sessions;
        let command = command.map_session_handles(|v| sessions.resolve(v, owner).unwrap_or(v));
        for (i, &h) in command.handles().iter().enumerate() {
            if is_session_handle(h) {
                put_u32(&mut self.work, Command::handle_offset(i), h)
                    .map_err(|_| RmError::InvalidCommand)?;
            }
        }
        for s in command.sessions() {
            if is_session_handle(s.handle) {
                put_u32(&mut self.work, s.offset, s.handle).map_err(|_| RmError::InvalidCommand)?;
            }
        }

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
                // Another space's session may not be loaded; an abandoned one may.
                if let Some(h) = loaded_session(&command, cmd) {
                    if self
                        .st
                        .sessions
                        .get(h)
                        .is_some_and(|e| e.owner.is_some_and(|o| o != owner) || !e.is_live())
                    {
                        return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
                    }
                }
            }
            _ => {}
        }
        self.general(space, tpm, now, ticket, &command, rsp)
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
            let Some(h) = self.st.sessions.resolve(h, space.id()) else {
                return synth_rm(rsp, &mut self.io.stats, rc_handle_at_parameter(1));
            };
            put_u32(&mut self.work, command.params_offset(), h)
                .map_err(|_| RmError::InvalidCommand)?;
            let n = send(&mut self.io.stats, tpm, &self.work, rsp)?;
            let rc = get_u32(rsp, 6).unwrap_or(u32::MAX);
            // Flushed, or gone from the TPM already (strict accounting's lazy backup): a
            // handle error about flushHandle itself (parameter 1), not about a session of
            // the authorization area.
            if rc == TPM_RC_SUCCESS || rc == rc_handle_at_parameter(1) {
                self.st.sessions.remove(h);
                self.st.grant(Grant::Queue);
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
        ticket: Option<u64>,
        command: &Command,
        rsp: &mut [u8],
    ) -> Result<usize, RmError> {
        let Rm {
            config,
            st,
            io,
            work,
            ..
        } = self;
        let gave_up = st.sched.gave_up(ticket);
        let mut x = Exec {
            config: *config,
            io,
            st,
            space,
            tpm,
            now,
            txn: Txn::new(),
            gave_up,
        };
        match x.load_objects(command, work, rsp) {
            Ok(None) => {}
            r => return x.conclude(r.map(|n| n.unwrap_or(0))),
        }
        match x.load_sessions(command, rsp) {
            Ok(None) => {}
            r => return x.conclude(r.map(|n| n.unwrap_or(0))),
        }
        let mut n = match send(&mut x.io.stats, x.tpm, work, rsp) {
            Ok(n) => n,
            Err(e) => return x.conclude(Err(e)),
        };
        // TPM_RC_CONTEXT_GAP (a warning: the command was not executed): renew the oldest
        // saved session and send the command again.
        for _ in 0..MAX_GAP_REPAIRS {
            if get_u32(rsp, 6) != Some(TPM_RC_CONTEXT_GAP) {
                break;
            }
            match x.st.repair_gap(x.io, x.tpm) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return x.conclude(Err(e)),
            }
            n = match send(&mut x.io.stats, x.tpm, work, rsp) {
                Ok(n) => n,
                Err(e) => return x.conclude(Err(e)),
            };
        }
        let rc = get_u32(rsp, 6).unwrap_or(u32::MAX);
        let cc = command.cc();
        if is_session_exhaustion_rc(rc)
            && !x.gave_up
            && (cc == TPM_CC_START_AUTH_SESSION || loaded_session(command, work).is_some())
        {
            x.st.exhaustion_rc = Some(rc);
            return x.conclude(Err(RmError::SessionsExhausted));
        }
        let r = Self::map_response(&mut x, command, work, rsp, n);
        if cc == TPM_CC_START_AUTH_SESSION && rc == TPM_RC_SUCCESS {
            x.st.sched.took_slot(ticket);
        }
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
            if is_session_handle(s.handle)
                && s.attributes & TPMA_SESSION_CONTINUESESSION == 0
                && x.st.sessions.get(s.handle).is_some()
            {
                // The TPM ended it.
                x.st.end_session(x.io, x.tpm, s.handle, End::Gone, Grant::Queue)?;
            }
        }
        if cc == TPM_CC_CONTEXT_SAVE {
            if let Some(&h) = command.handles().first() {
                if let Some(e) = x.st.sessions.get_mut(h) {
                    e.state = SessionState::SavedByClient;
                    e.saved_seq = rsp
                        .get(..n)
                        .and_then(|r| context_save_blob(r).ok())
                        .and_then(blob_seq);
                }
            }
        }
        if cc == TPM_CC_GET_CAPABILITY {
            let owner = x.space.id();
            let sessions = &x.st.sessions;
            return filter_handles_response(rsp, n, |h| {
                if is_transient_handle(h) {
                    None
                } else if is_session_handle(h) {
                    sessions.client_number(h, owner)
                } else {
                    Some(h)
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
                return x.adopt_session(cc, h, rsp, n);
            }
        }
        Ok(n)
    }

    /// Close: flush everything the space holds from the TPM, except sessions its client
    /// saved itself, which are abandoned (kept for continuation; the oldest abandoned ones
    /// are flushed beyond `Config::max_abandoned`). The space's waiters leave the queue and
    /// its tombstones are dropped. Never fails; a flush that fails on the transport is queued
    /// and retried at the next execute/close. Call [`Rm::take_wakeup`] afterwards.
    pub fn close_space(&mut self, space: &mut Space, tpm: &mut dyn Tpm) {
        self.close_space_at(space, tpm, 0);
    }

    /// [`Rm::close_space`] at time `now_ns` (for the wait statistics of the space's
    /// waiters, if any are left). Tickets of the space's waiters become stale: `execute_as`
    /// treats a stale ticket as none and `wait_step` answers it `Sleep`; end such commands
    /// (and call `wait_end`) before closing.
    pub fn close_space_at(&mut self, space: &mut Space, tpm: &mut dyn Tpm, now_ns: u64) {
        let owner = space.id();
        self.st.retry_pending(&mut self.io, tpm);
        self.st.sched.remove_space(owner, now_ns);
        self.st.drop_tombstones(owner);
        self.io.evicted.forget(owner);
        let keep = self.config.max_abandoned > 0;
        while let Some(h) = self.st.sessions.find_owned(owner) {
            let client_saved = self
                .st
                .sessions
                .get(h)
                .is_some_and(|e| matches!(e.state, SessionState::SavedByClient));
            if client_saved && keep {
                self.st.abandon(h);
            } else {
                // A TPM error means it is gone already; a transport error queues the flush.
                let _ = self
                    .st
                    .end_session(&mut self.io, tpm, h, End::Flush, Grant::Queue);
            }
        }
        self.st
            .trim_abandoned(&mut self.io, tpm, self.config.max_abandoned);
        space.clear();
        self.io.stats.open_spaces = self.io.stats.open_spaces.saturating_sub(1);
        self.sync_stats();
    }
}
