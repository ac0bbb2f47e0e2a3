/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tpmrs_shim.h - the C shim's functions, called from Rust (rust/chip.rs declares them again
 * as `extern "C"`; keep both in step).
 */
#ifndef TPMRS_SHIM_H
#define TPMRS_SHIM_H

#include <linux/types.h>

struct tpm_chip;
struct workqueue_struct;

struct tpm_chip *tpmrs_chip_get(void);
struct tpm_chip *tpmrs_chip_get_num(int num);
void tpmrs_chip_put(struct tpm_chip *chip);
const char *tpmrs_chip_name(struct tpm_chip *chip);
int tpmrs_chip_lock(struct tpm_chip *chip);
void tpmrs_chip_unlock(struct tpm_chip *chip);
ssize_t tpmrs_transmit(struct tpm_chip *chip, const u8 *cmd, size_t cmd_len, u8 *rsp,
		       size_t rsp_size);
struct workqueue_struct *tpmrs_wq_alloc(void);
void tpmrs_wq_destroy(struct workqueue_struct *wq);
void tpmrs_current_comm(char *buf, size_t len);

#endif /* TPMRS_SHIM_H */
