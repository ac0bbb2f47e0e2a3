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
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/tpm.h>
#include <linux/unaligned.h>
#include <linux/workqueue.h>

#include "tpmrs_shim.h"

/* Matches TPM_BUFSIZE in drivers/char/tpm/tpm.h (a private header). */
#define TPMRS_BUFSIZE 4096

/**
 * tpmrs_chip_get() - take a reference on the default TPM 2.0 chip
 *
 * Return: the chip, or NULL when there is none or it is not a TPM 2.0.
 */
struct tpm_chip *tpmrs_chip_get(void)
{
	struct tpm_chip *chip = tpm_default_chip();

	if (chip && !(chip->flags & TPM_CHIP_FLAG_TPM2)) {
		put_device(&chip->dev);
		return NULL;
	}
	return chip;
}

/**
 * tpmrs_chip_put() - drop the reference taken by tpmrs_chip_get()
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
 * Return: 0, or -errno when the chip is going away.
 */
int tpmrs_chip_lock(struct tpm_chip *chip)
{
	return tpm_try_get_ops(chip);
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
 * tpmrs_transmit() - send one command and receive the response
 * @chip: the chip, locked with tpmrs_chip_lock()
 * @cmd: the command, @cmd_len bytes (its header's size field must match)
 * @cmd_len: length of @cmd, at most TPMRS_BUFSIZE
 * @rsp: where the response goes
 * @rsp_size: size of @rsp
 *
 * A TPM error code is not a failure here: the response carries it.
 *
 * Return: the response length, or -errno on a transport failure.
 */
ssize_t tpmrs_transmit(struct tpm_chip *chip, const u8 *cmd, size_t cmd_len, u8 *rsp,
		       size_t rsp_size)
{
	struct tpm_buf *buf;
	ssize_t rc;
	u32 len;

	if (cmd_len < 10 || cmd_len > TPMRS_BUFSIZE)
		return -EINVAL;

	/*
	 * tpm_buf_init() caps the whole allocation at TPM_BUFSIZE, which leaves no room for a
	 * full 4096-byte command: set the buffer up by hand with a full TPM_BUFSIZE of data.
	 */
	buf = kzalloc(sizeof(*buf) + TPMRS_BUFSIZE, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	buf->capacity = TPMRS_BUFSIZE;
	buf->length = cmd_len;
	memcpy(buf->data, cmd, cmd_len);

	/* desc = NULL: TPM error codes are answers for the client, not log noise. */
	rc = tpm_transmit_cmd(chip, buf, 0, NULL);
	if (rc < 0)
		goto out;

	/* On a TPM error, buf->length is not updated: the header says how long it is. */
	len = get_unaligned_be32(&buf->data[2]);
	if (len < 10 || len > TPMRS_BUFSIZE || len > rsp_size) {
		rc = -EIO;
		goto out;
	}
	memcpy(rsp, buf->data, len);
	rc = len;
out:
	kfree(buf);
	return rc;
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
