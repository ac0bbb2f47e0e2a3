// SPDX-License-Identifier: GPL-2.0
//! Counters of the resource manager's work.

/// What the resource manager did since it was created. Every counter only grows (wrapping).
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
}

/// Adds one to `c`, wrapping.
pub(super) fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}
