/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tpmrs_trace.h - the trace events of tpmrs (trace system "tpmrs"), for perf, trace-cmd,
 * bpftrace and /sys/kernel/tracing/events/tpmrs/.
 *
 * Defined here, in C, because the Rust side has no tracepoint abstraction an out-of-tree
 * module can use (the kernel crate's `declare_trace!` only binds tracepoints that C already
 * defines, from headers listed in rust/bindings/bindings_helper.h at kernel build time).
 * tpmrs_trace.c creates them and exports one small function per event to Rust
 * (rust/trace.rs).
 *
 * Space ids are those of /sys/kernel/debug/tpmrs/clients ("space="); 0 means none.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM tpmrs

#if !defined(_TPMRS_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TPMRS_TRACE_H

#include <linux/tracepoint.h>

/* How a wait for a session slot ended (enum WaitEnd in rust/proto/src/event.rs). */
#define TPMRS_WAIT_ANSWERED	0
#define TPMRS_WAIT_FAILED	1
#define TPMRS_WAIT_INTERRUPTED	2

/* Why a session was evicted (tpmrs_evict's @reason). */
#define TPMRS_EVICT_WAITER	0
#define TPMRS_EVICT_CONTEXT_GAP	1
#define TPMRS_EVICT_UNSAVED	2
#define TPMRS_EVICT_REFUSED_LOAD	3

/*
 * One client command, when it ends: its space, command code, the TPM commands sent for it
 * (its own and tpmrs' loads, saves, flushes and evictions), how long it waited for a session
 * slot, and its result: the response's length in bytes and its response code, or a negative
 * errno (then rc is 0: there is no response).
 */
TRACE_EVENT(tpmrs_command,
	TP_PROTO(u64 space, u32 cc, u64 tpm_commands, u64 waited_ns, s64 result, u32 rc),
	TP_ARGS(space, cc, tpm_commands, waited_ns, result, rc),
	TP_STRUCT__entry(
		__field(u64, space)
		__field(u32, cc)
		__field(u64, tpm_commands)
		__field(u64, waited_ns)
		__field(s64, result)
		__field(u32, rc)
	),
	TP_fast_assign(
		__entry->space = space;
		__entry->cc = cc;
		__entry->tpm_commands = tpm_commands;
		__entry->waited_ns = waited_ns;
		__entry->result = result;
		__entry->rc = rc;
	),
	TP_printk("space=%llu cc=0x%x tpm_commands=%llu waited_ns=%llu result=%lld rc=0x%x",
		  __entry->space, __entry->cc, __entry->tpm_commands, __entry->waited_ns,
		  __entry->result, __entry->rc)
);

/*
 * A session flushed by force: for the waiter of space @waiter (reason=waiter), to repair a
 * context gap (reason=context_gap, waiter 0), or because its context could not be saved after
 * its owner's command (reason=unsaved, waiter 0). @victim is the space it was taken from, 0
 * for an abandoned session.
 */
TRACE_EVENT(tpmrs_evict,
	TP_PROTO(u32 handle, u64 victim, u64 waiter, int reason),
	TP_ARGS(handle, victim, waiter, reason),
	TP_STRUCT__entry(
		__field(u32, handle)
		__field(u64, victim)
		__field(u64, waiter)
		__field(int, reason)
	),
	TP_fast_assign(
		__entry->handle = handle;
		__entry->victim = victim;
		__entry->waiter = waiter;
		__entry->reason = reason;
	),
	TP_printk("handle=0x%08x victim=%llu waiter=%llu reason=%s", __entry->handle,
		  __entry->victim, __entry->waiter,
		  __print_symbolic(__entry->reason,
				   { TPMRS_EVICT_WAITER, "waiter" },
				   { TPMRS_EVICT_CONTEXT_GAP, "context_gap" },
				   { TPMRS_EVICT_UNSAVED, "unsaved" },
				   { TPMRS_EVICT_REFUSED_LOAD, "refused_load" }))
);

/*
 * One context-gap repair: the oldest saved session (of space @owner, 0: abandoned) renewed,
 * or, if that was impossible, evicted (a tpmrs_evict with reason=context_gap before it).
 */
TRACE_EVENT(tpmrs_gap_repair,
	TP_PROTO(u32 handle, u64 owner, bool renewed),
	TP_ARGS(handle, owner, renewed),
	TP_STRUCT__entry(
		__field(u32, handle)
		__field(u64, owner)
		__field(bool, renewed)
	),
	TP_fast_assign(
		__entry->handle = handle;
		__entry->owner = owner;
		__entry->renewed = renewed;
	),
	TP_printk("handle=0x%08x owner=%llu renewed=%d", __entry->handle, __entry->owner,
		  __entry->renewed)
);

/* A command of @space begins to wait for a session slot. */
TRACE_EVENT(tpmrs_wait_begin,
	TP_PROTO(u64 space),
	TP_ARGS(space),
	TP_STRUCT__entry(
		__field(u64, space)
	),
	TP_fast_assign(
		__entry->space = space;
	),
	TP_printk("space=%llu", __entry->space)
);

/*
 * That wait ends after @waited_ns: answered (a response, possibly the TPM's own refusal),
 * failed (errno @err), or interrupted (a signal, or the file was closed).
 */
TRACE_EVENT(tpmrs_wait_end,
	TP_PROTO(u64 space, u64 waited_ns, int how, int err),
	TP_ARGS(space, waited_ns, how, err),
	TP_STRUCT__entry(
		__field(u64, space)
		__field(u64, waited_ns)
		__field(int, how)
		__field(int, err)
	),
	TP_fast_assign(
		__entry->space = space;
		__entry->waited_ns = waited_ns;
		__entry->how = how;
		__entry->err = err;
	),
	TP_printk("space=%llu waited_ns=%llu end=%s err=%d", __entry->space, __entry->waited_ns,
		  __print_symbolic(__entry->how,
				   { TPMRS_WAIT_ANSWERED, "answered" },
				   { TPMRS_WAIT_FAILED, "failed" },
				   { TPMRS_WAIT_INTERRUPTED, "interrupted" }),
		  __entry->err)
);

#endif /* _TPMRS_TRACE_H */

/* Out of tree: this directory (rust/, on the include path through Kbuild's ccflags-y). */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE tpmrs_trace
#include <trace/define_trace.h>
