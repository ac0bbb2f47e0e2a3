/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tpmrs_shim.h - the C shim's functions, called from Rust (rust/chip.rs declares them again
 * as `extern "C"`; keep both in step).
 */
#ifndef TPMRS_SHIM_H
#define TPMRS_SHIM_H

#include <linux/types.h>

struct mem_cgroup;
struct tpm_buf;
struct tpm_chip;
struct workqueue_struct;

struct tpm_chip *tpmrs_chip_get(void);
struct tpm_chip *tpmrs_chip_get_num(int num);
void tpmrs_chip_put(struct tpm_chip *chip);
const char *tpmrs_chip_name(struct tpm_chip *chip);
int tpmrs_chip_lock(struct tpm_chip *chip);
void tpmrs_chip_unlock(struct tpm_chip *chip);
struct tpm_buf *tpmrs_xfer_alloc(void);
void tpmrs_xfer_free(struct tpm_buf *buf);
ssize_t tpmrs_transmit(struct tpm_chip *chip, struct tpm_buf *buf, const u8 *cmd,
		       size_t cmd_len, u8 *rsp, size_t rsp_size, bool *sent);
struct workqueue_struct *tpmrs_wq_alloc(void);
void tpmrs_wq_destroy(struct workqueue_struct *wq);
void tpmrs_current_comm(char *buf, size_t len);

/* Memory charged to the opener's memory cgroup (rust/memcg.rs). */
struct mem_cgroup *tpmrs_memcg_get(void);
void tpmrs_memcg_put(struct mem_cgroup *memcg);
struct mem_cgroup *tpmrs_memcg_enter(struct mem_cgroup *memcg);
void tpmrs_memcg_leave(struct mem_cgroup *old);
void *tpmrs_krealloc_charged(void *p, size_t size, unsigned long align);

/* The PM notifier (tpmrs_pm.c, tpmrs.ko only; rust/pm.rs). */
int tpmrs_pm_register(void (*handler)(void *data, int prepare), void *data);
void tpmrs_pm_unregister(void);

/* Trace events (tpmrs_trace.c, tpmrs.ko only; rust/trace.rs). */
void tpmrs_trace_command(u64 space, u32 cc, u64 tpm_commands, u64 waited_ns, s64 result, u32 rc);
void tpmrs_trace_evict(u32 handle, u64 victim, u64 waiter, int reason);
void tpmrs_trace_gap_repair(u32 handle, u64 owner, bool renewed);
void tpmrs_trace_wait_begin(u64 space);
void tpmrs_trace_wait_end(u64 space, u64 waited_ns, int how, int err);

#endif /* TPMRS_SHIM_H */
