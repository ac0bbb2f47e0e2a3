// SPDX-License-Identifier: GPL-2.0
//! Counters of the resource manager's work.

/// What the resource manager did since it was created. Every counter only grows (wrapping),
/// except the gauges (`sessions`, `abandoned`, `waiting`, `open_spaces`, `tombstones`,
/// `pending_flushes`), which say how things are now, and
/// `longest_wait_ns`, a maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client commands given to `execute` (including rejected ones).
    pub client_commands: u64,
    /// Commands sent to the TPM, of any origin (every transmit is counted here, in one place).
    pub tpm_commands: u64,
    /// TPM2_ContextLoad commands sent by the resource manager itself.
    pub context_loads: u64,
    /// TPM2_ContextSave commands sent by the resource manager itself.
    pub context_saves: u64,
    /// TPM2_FlushContext commands sent by the resource manager itself.
    pub flushes: u64,
    /// Responses synthesized in the resource manager (nothing of the client command sent).
    pub synthesized_responses: u64,
    /// Client commands refused with an errno.
    pub rejected_commands: u64,
    /// Transport failures.
    pub transport_errors: u64,
    /// Gauge: sessions the resource manager tracks now (owned by a space or abandoned).
    pub sessions: u64,
    /// Gauge: abandoned sessions now (saved by a client whose file was closed; loadable by
    /// any space).
    pub abandoned: u64,
    /// Gauge: commands waiting for a session slot now.
    pub waiting: u64,
    /// Waits for a session slot begun (`Rm::wait_begin`).
    pub waits: u64,
    /// Longest wait for a session slot, from `Rm::wait_begin` to `Rm::wait_end` (ns).
    pub longest_wait_ns: u64,
    /// Sessions flushed by force while their owner (or a later loader) still wanted them:
    /// for a waiter (`Rm::evict_for`) or to close a context gap.
    pub evictions: u64,
    /// Context-gap repairs (one per session re-saved or evicted because of
    /// TPM_RC_CONTEXT_GAP).
    pub gap_repairs: u64,
    /// Abandoned sessions loaded again by a space (session continuation).
    pub continuation_hits: u64,
    /// Gauge: spaces created and not closed yet (open files).
    pub open_spaces: u64,
    /// Gauge: evicted sessions whose owner has not been told yet (see `rm.rs`).
    pub tombstones: u64,
    /// Gauge: FlushContexts of ours not known to be done: the TPM did not run them (sent
    /// again), or the transport failed and the TPM could not be asked (looked for).
    pub pending_flushes: u64,
    /// Handles whose flush failed on the transport, could not be checked at once, and were
    /// still in the TPM when it answered again: given up, never flushed, because by then
    /// another user of the TPM may hold the same handle.
    pub flushes_given_up: u64,
}

/// Adds one to `c`, wrapping.
pub(super) fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}
