// SPDX-License-Identifier: GPL-2.0
/*
 * tpmrs_trace.c - creates the trace events of tpmrs_trace.h and gives Rust one function per
 * event (rust/trace.rs declares them as `extern "C"`).
 *
 * A file of its own, linked into tpmrs.ko only: tpmrs_kunit.ko compiles tpmrs_shim.c again
 * and must not define the same events a second time.
 */

#include <linux/types.h>

#define CREATE_TRACE_POINTS
#include "tpmrs_trace.h"

#include "tpmrs_shim.h"

/**
 * tpmrs_trace_command() - trace event tpmrs_command
 * @space: the space (open file) id
 * @cc: the command code
 * @tpm_commands: TPM commands sent for it
 * @waited_ns: time it waited for a session slot (0 if it did not)
 * @result: response length, or negative errno
 * @rc: the response code (0 when @result < 0)
 */
void tpmrs_trace_command(u64 space, u32 cc, u64 tpm_commands, u64 waited_ns, s64 result, u32 rc)
{
	trace_tpmrs_command(space, cc, tpm_commands, waited_ns, result, rc);
}

/**
 * tpmrs_trace_evict() - trace event tpmrs_evict
 * @handle: the session's TPM handle
 * @victim: the space it was taken from (0: abandoned)
 * @waiter: the space it was evicted for (0: none)
 * @reason: why (TPMRS_EVICT_WAITER, TPMRS_EVICT_CONTEXT_GAP, TPMRS_EVICT_UNSAVED or
 *	    TPMRS_EVICT_REFUSED_LOAD)
 */
void tpmrs_trace_evict(u32 handle, u64 victim, u64 waiter, int reason)
{
	trace_tpmrs_evict(handle, victim, waiter, reason);
}

/**
 * tpmrs_trace_gap_repair() - trace event tpmrs_gap_repair
 * @handle: the oldest saved session's TPM handle
 * @owner: its space (0: abandoned)
 * @renewed: renewed rather than evicted
 */
void tpmrs_trace_gap_repair(u32 handle, u64 owner, bool renewed)
{
	trace_tpmrs_gap_repair(handle, owner, renewed);
}

/**
 * tpmrs_trace_wait_begin() - trace event tpmrs_wait_begin
 * @space: the waiting space
 */
void tpmrs_trace_wait_begin(u64 space)
{
	trace_tpmrs_wait_begin(space);
}

/**
 * tpmrs_trace_wait_end() - trace event tpmrs_wait_end
 * @space: the waiting space
 * @waited_ns: how long it waited
 * @how: TPMRS_WAIT_ANSWERED, TPMRS_WAIT_FAILED or TPMRS_WAIT_INTERRUPTED
 * @err: the negative errno when @how is TPMRS_WAIT_FAILED, else 0
 */
void tpmrs_trace_wait_end(u64 space, u64 waited_ns, int how, int err)
{
	trace_tpmrs_wait_end(space, waited_ns, how, err);
}
