// SPDX-License-Identifier: GPL-2.0
/*
 * tpmrs_shim.c - the thinnest C layer between tpmrs and the TPM chip API.
 *
 * The kernel crate has no TPM bindings (rust/bindings/bindings_helper.h does not include
 * <linux/tpm.h>), and an out-of-tree module cannot add any, so the few exported TPM
 * functions tpmrs needs are wrapped here with plain types, and only this file looks inside
 * struct tpm_chip and struct tpm_buf.
 */

#include <linux/device.h>
#include <linux/errno.h>
#include <linux/memcontrol.h>
#include <linux/sprintf.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/tpm.h>
#include <linux/unaligned.h>
#include <linux/workqueue.h>

#include "tpmrs_shim.h"

/* Matches TPM_BUFSIZE in drivers/char/tpm/tpm.h (a private header). */
#define TPMRS_BUFSIZE 4096

/* class_for_each_device() callback: the lowest-numbered TPM 2.0 chip so far in @data. */
static int tpmrs_lowest_tpm2(struct device *dev, void *data)
{
	struct tpm_chip *chip = container_of(dev, struct tpm_chip, dev);
	int *lowest = data;

	if ((chip->flags & TPM_CHIP_FLAG_TPM2) && (*lowest < 0 || chip->dev_num < *lowest))
		*lowest = chip->dev_num;
	return 0;
}

/**
 * tpmrs_chip_get() - take a reference on the lowest-numbered TPM 2.0 chip
 *
 * tpm_default_chip() returns the lowest-numbered chip of any version: on a machine whose
 * tpm0 is a TPM 1.2 (a second, firmware or virtual TPM 2.0 beside it), that is not the one
 * to serve. Every chip's device is in the default chip's class ("tpm"): walk it for the
 * lowest-numbered TPM 2.0, then take it by name, which takes the reference.
 *
 * Return: the chip, or NULL when there is no TPM 2.0.
 */
struct tpm_chip *tpmrs_chip_get(void)
{
	struct tpm_chip *def = tpm_default_chip();
	int lowest = -1;

	if (!def)
		return NULL;
	if (def->flags & TPM_CHIP_FLAG_TPM2)
		return def;
	class_for_each_device(def->dev.class, NULL, &lowest, tpmrs_lowest_tpm2);
	put_device(&def->dev);
	return lowest < 0 ? NULL : tpmrs_chip_get_num(lowest);
}

/**
 * tpmrs_chip_get_num() - take a reference on the TPM 2.0 chip tpm<num>
 * @num: the chip's number (the N of /dev/tpmN)
 *
 * No lookup by number is exported, but every chip's device is in the same class ("tpm"),
 * which the default chip's device names: search that class by device name.
 *
 * Return: the chip, or NULL when there is none of that number or it is not a TPM 2.0.
 */
struct tpm_chip *tpmrs_chip_get_num(int num)
{
	struct tpm_chip *def = tpm_default_chip();
	struct tpm_chip *chip;
	struct device *dev;
	char name[16];

	if (!def)
		return NULL;
	snprintf(name, sizeof(name), "tpm%d", num);
	dev = class_find_device_by_name(def->dev.class, name);
	put_device(&def->dev);
	if (!dev)
		return NULL;
	chip = container_of(dev, struct tpm_chip, dev);
	if (!(chip->flags & TPM_CHIP_FLAG_TPM2)) {
		put_device(dev);
		return NULL;
	}
	return chip;
}

/**
 * tpmrs_chip_put() - drop the reference taken by tpmrs_chip_get() or tpmrs_chip_get_num()
 * @chip: the chip
 */
void tpmrs_chip_put(struct tpm_chip *chip)
{
	put_device(&chip->dev);
}

/**
 * tpmrs_chip_name() - the chip's device name, e.g. "tpm0"
 * @chip: the chip
 *
 * Return: a NUL-terminated string that lives as long as the chip reference.
 */
const char *tpmrs_chip_name(struct tpm_chip *chip)
{
	return dev_name(&chip->dev);
}

/**
 * tpmrs_chip_lock() - take the chip's ops lock (tpm_try_get_ops)
 * @chip: the chip
 *
 * Sleeps. Serializes with every other user of the chip (/dev/tpm0, /dev/tpmrm0, the kernel).
 *
 * With CONFIG_TCG_TPM2_HMAC the kernel keeps its own HMAC session loaded between its own
 * commands (hwrng, IMA, trusted keys): it holds one of the TPM's few loaded-session slots,
 * and a command that names three sessions would find no room for the third. End it, as
 * tpm_dev_transmit() does before every /dev/tpm0 and /dev/tpmrm0 command; the kernel starts
 * a new one at its next use. Without CONFIG_TCG_TPM2_HMAC this is a no-op.
 *
 * Return: 0, or -errno when the chip is going away.
 */
int tpmrs_chip_lock(struct tpm_chip *chip)
{
	int rc = tpm_try_get_ops(chip);

	if (rc)
		return rc;
	if (chip->flags & TPM_CHIP_FLAG_TPM2)
		tpm2_end_auth_session(chip);
	return 0;
}

/**
 * tpmrs_chip_unlock() - release the ops lock taken by tpmrs_chip_lock()
 * @chip: the chip
 */
void tpmrs_chip_unlock(struct tpm_chip *chip)
{
	tpm_put_ops(chip);
}

/**
 * tpmrs_xfer_alloc() - the buffer every command of tpmrs goes through
 *
 * Allocated once, at load: a command never fails for want of memory after the resource
 * manager decided to send it (a failed allocation there was indistinguishable from a
 * transport error, which may cost a client a valid session). tpm_buf_init() caps the whole
 * allocation at TPM_BUFSIZE, which leaves no room for a full 4096-byte command: the buffer
 * is set up by hand with a full TPMRS_BUFSIZE of data.
 *
 * Return: the buffer, or NULL.
 */
struct tpm_buf *tpmrs_xfer_alloc(void)
{
	struct tpm_buf *buf = kzalloc(sizeof(*buf) + TPMRS_BUFSIZE, GFP_KERNEL);

	if (buf)
		buf->capacity = TPMRS_BUFSIZE;
	return buf;
}

/**
 * tpmrs_xfer_free() - free the buffer of tpmrs_xfer_alloc()
 * @buf: the buffer, or NULL
 */
void tpmrs_xfer_free(struct tpm_buf *buf)
{
	kfree(buf);
}

/**
 * tpmrs_transmit() - send one command and receive the response
 * @chip: the chip, locked with tpmrs_chip_lock()
 * @buf: the buffer of tpmrs_xfer_alloc(), used by no one else while @chip is locked
 * @cmd: the command, @cmd_len bytes (its header's size field must match)
 * @cmd_len: length of @cmd, at most TPMRS_BUFSIZE
 * @rsp: where the response goes
 * @rsp_size: size of @rsp
 * @sent: set to false when the command surely did not reach the TPM (rejected here, before
 *	anything is sent), true otherwise, also on success
 *
 * A TPM error code is not a failure here: the response carries it.
 *
 * Return: the response length, or -errno on a transport failure.
 */
ssize_t tpmrs_transmit(struct tpm_chip *chip, struct tpm_buf *buf, const u8 *cmd,
		       size_t cmd_len, u8 *rsp, size_t rsp_size, bool *sent)
{
	ssize_t rc;
	u32 len;

	*sent = false;
	/* What tpm_try_transmit() would refuse before sending, refused here, visibly unsent. */
	if (cmd_len < 10 || cmd_len > TPMRS_BUFSIZE)
		return -EINVAL;
	len = get_unaligned_be32(&cmd[2]);
	if (len < 10 || len > cmd_len)
		return -EINVAL;

	buf->flags = 0;
	buf->handles = 0;
	buf->length = cmd_len;
	memcpy(buf->data, cmd, cmd_len);

	*sent = true;
	/* desc = NULL: TPM error codes are answers for the client, not log noise. */
	rc = tpm_transmit_cmd(chip, buf, 0, NULL);
	if (rc < 0)
		return rc;

	/* On a TPM error, buf->length is not updated: the header says how long it is. */
	len = get_unaligned_be32(&buf->data[2]);
	if (len < 10 || len > TPMRS_BUFSIZE || len > rsp_size)
		return -EIO;
	memcpy(rsp, buf->data, len);
	return len;
}

/**
 * tpmrs_wq_alloc() - the module's own workqueue for O_NONBLOCK commands
 *
 * Owned by the module so that module exit can drain it (destroy_workqueue) before the code of
 * a queued work item goes away.
 *
 * Return: the workqueue or NULL.
 */
struct workqueue_struct *tpmrs_wq_alloc(void)
{
	return alloc_workqueue("tpmrs", WQ_MEM_RECLAIM | WQ_UNBOUND, 0);
}

/**
 * tpmrs_wq_destroy() - drain and free the workqueue from tpmrs_wq_alloc()
 * @wq: the workqueue
 */
void tpmrs_wq_destroy(struct workqueue_struct *wq)
{
	destroy_workqueue(wq);
}

/**
 * tpmrs_current_comm() - the command name of the current task
 * @buf: where it goes, NUL-terminated and padded
 * @len: size of @buf (TASK_COMM_LEN is 16)
 */
void tpmrs_current_comm(char *buf, size_t len)
{
	strscpy_pad(buf, current->comm, len);
}

/**
 * tpmrs_memcg_get() - a reference on the current task's memory cgroup (at open)
 *
 * The remote charging scope of the caller if one is active, else the cgroup of current->mm,
 * else the root cgroup (get_mem_cgroup_from_mm(NULL)).
 *
 * Return: the memory cgroup, with a reference for tpmrs_memcg_put(); NULL without
 * CONFIG_MEMCG or when memory cgroups are disabled.
 */
struct mem_cgroup *tpmrs_memcg_get(void)
{
	return get_mem_cgroup_from_mm(NULL);
}

/**
 * tpmrs_memcg_put() - drop the reference from tpmrs_memcg_get()
 * @memcg: the memory cgroup, or NULL
 */
void tpmrs_memcg_put(struct mem_cgroup *memcg)
{
	mem_cgroup_put(memcg);
}

/**
 * tpmrs_memcg_enter() - charge __GFP_ACCOUNT allocations of the current task to @memcg
 * @memcg: the memory cgroup (the caller holds a reference until tpmrs_memcg_leave()), or NULL
 *
 * set_active_memcg(): an O_NONBLOCK command runs in a kworker, whose own allocations would be
 * charged to no one; within this scope they go to the opener's cgroup.
 *
 * Return: the previous scope, for tpmrs_memcg_leave().
 */
struct mem_cgroup *tpmrs_memcg_enter(struct mem_cgroup *memcg)
{
	return set_active_memcg(memcg);
}

/**
 * tpmrs_memcg_leave() - end the scope of tpmrs_memcg_enter()
 * @old: what tpmrs_memcg_enter() returned
 */
void tpmrs_memcg_leave(struct mem_cgroup *old)
{
	set_active_memcg(old);
}

/**
 * tpmrs_krealloc_charged() - krealloc() charged to the active memory cgroup, failing cleanly
 * @p: the allocation to grow or shrink (from kmalloc or this function), or NULL
 * @size: its new size, > 0
 * @align: the alignment it needs (a power of two)
 *
 * GFP_KERNEL_ACCOUNT charges the allocation to the task's (or the active) memory cgroup.
 * __GFP_RETRY_MAYFAIL makes a charge over memory.max fail with NULL after reclaim instead of
 * invoking the cgroup's OOM killer, so a client over its limit gets ENOMEM, and __GFP_NOWARN
 * keeps that expected failure out of the kernel log. The Rust kernel crate offers neither
 * flag, hence this function (rust/memcg.rs, the allocator of the charged buffers).
 *
 * Return: the allocation, or NULL (then @p is unchanged).
 */
void *tpmrs_krealloc_charged(void *p, size_t size, unsigned long align)
{
	return krealloc_node_align(p, size, align,
				   GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN,
				   NUMA_NO_NODE);
}
