// SPDX-License-Identifier: GPL-2.0
//! The trace events of tpmrs (trace system `tpmrs`: `tpmrs_command`, `tpmrs_evict`,
//! `tpmrs_gap_repair`, `tpmrs_wait_begin`, `tpmrs_wait_end`), for perf, trace-cmd and
//! bpftrace.
//!
//! The kernel crate has no tracepoint abstraction an out-of-tree module can use (its
//! `declare_trace!` binds only tracepoints that C defines in headers the kernel's bindings were
//! generated from), so the events are defined in C with `TRACE_EVENT` (`tpmrs_trace.h`,
//! created in `tpmrs_trace.c`) and each is fired through one small C function. A disabled
//! event costs one call and a static branch.

use crate::proto::{Event, EvictReason, Rm, WaitEnd};
use kernel::ffi::c_int;

extern "C" {
    fn tpmrs_trace_command(
        space: u64,
        cc: u32,
        tpm_commands: u64,
        waited_ns: u64,
        result: i64,
        rc: u32,
    );
    fn tpmrs_trace_evict(handle: u32, victim: u64, waiter: u64, reason: c_int);
    fn tpmrs_trace_gap_repair(handle: u32, owner: u64, renewed: bool);
    fn tpmrs_trace_wait_begin(space: u64);
    fn tpmrs_trace_wait_end(space: u64, waited_ns: u64, how: c_int, err: c_int);
}

/// `TPMRS_WAIT_*` of `tpmrs_trace.h`.
const WAIT_ANSWERED: c_int = 0;
const WAIT_FAILED: c_int = 1;
const WAIT_INTERRUPTED: c_int = 2;

/// `TPMRS_EVICT_*` of `tpmrs_trace.h`.
const EVICT_WAITER: c_int = 0;
const EVICT_CONTEXT_GAP: c_int = 1;
const EVICT_UNSAVED: c_int = 2;
const EVICT_REFUSED_LOAD: c_int = 3;

/// Big-endian u32 at `off`, 0 if short.
fn be32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Event `tpmrs_command`: the client command `cmd` of `space` ended with `result` (the
/// response's length in `rsp`, or the error), after `tpm_commands` TPM commands and a wait of
/// `waited_ns` for a session slot (0: none).
pub(crate) fn command(
    space: u64,
    cmd: &[u8],
    rsp: &[u8],
    result: &kernel::error::Result<usize>,
    tpm_commands: u64,
    waited_ns: u64,
) {
    let (res, rc) = match result {
        Ok(n) => (
            i64::try_from(*n).unwrap_or(i64::MAX),
            be32(rsp.get(..*n).unwrap_or(&[]), 6),
        ),
        Err(e) => (i64::from(e.to_errno()), 0),
    };
    // SAFETY: Plain values; the function only records them.
    unsafe { tpmrs_trace_command(space, be32(cmd, 6), tpm_commands, waited_ns, res, rc) };
}

/// Fires the events the resource manager recorded during its last calls (evictions,
/// context-gap repairs, waits begun and ended), oldest first, and empties its log.
pub(crate) fn drain_events(rm: &mut Rm) {
    for e in rm.events() {
        match *e {
            Event::Evict {
                handle,
                victim,
                waiter,
                reason,
            } => {
                let reason = match reason {
                    EvictReason::Waiter => EVICT_WAITER,
                    EvictReason::ContextGap => EVICT_CONTEXT_GAP,
                    EvictReason::Unsaved => EVICT_UNSAVED,
                    EvictReason::RefusedLoad => EVICT_REFUSED_LOAD,
                };
                // SAFETY: Plain values; the function only records them.
                unsafe { tpmrs_trace_evict(handle, victim, waiter, reason) }
            }
            Event::GapRepair {
                handle,
                owner,
                renewed,
            } => {
                // SAFETY: Plain values; the function only records them.
                unsafe { tpmrs_trace_gap_repair(handle, owner, renewed) }
            }
            Event::WaitBegin { space } => {
                // SAFETY: Plain values; the function only records them.
                unsafe { tpmrs_trace_wait_begin(space) }
            }
            Event::WaitEnd {
                space,
                waited_ns,
                end,
            } => {
                let (how, err) = match end {
                    WaitEnd::Answered => (WAIT_ANSWERED, 0),
                    WaitEnd::Failed(e) => (WAIT_FAILED, e),
                    WaitEnd::Interrupted => (WAIT_INTERRUPTED, 0),
                };
                // SAFETY: Plain values; the function only records them.
                unsafe { tpmrs_trace_wait_end(space, waited_ns, how, err) }
            }
        }
    }
    rm.clear_events();
}
