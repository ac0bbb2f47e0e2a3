// SPDX-License-Identifier: GPL-2.0
/*
 * tpmrs_pm.c - the PM notifier of tpmrs.ko (rust/pm.rs): before the system suspends or
 * hibernates, every context tpmrs keeps loaded in the TPM between commands (resident
 * contexts) is saved or flushed, because the TPM loses what is loaded across a power cycle
 * (TPM2_Shutdown(STATE) keeps only what is saved). PM notifiers run before tasks are frozen
 * and before any device suspends, the TPM driver's tpm_pm_suspend() included.
 *
 * Not in tpmrs_shim.c: tpmrs_kunit.ko compiles that file too, and has no handler.
 */

#include <linux/notifier.h>
#include <linux/suspend.h>

#include "tpmrs_shim.h"

static void (*tpmrs_pm_handler)(void *data, int prepare);
static void *tpmrs_pm_data;

/* PM notifier callback: "prepare" (1) before a suspend, a hibernation or a restore, "post"
 * (0) after it, or after it failed. */
static int tpmrs_pm_call(struct notifier_block *nb, unsigned long action, void *unused)
{
	switch (action) {
	case PM_SUSPEND_PREPARE:
	case PM_HIBERNATION_PREPARE:
	case PM_RESTORE_PREPARE:
		tpmrs_pm_handler(tpmrs_pm_data, 1);
		break;
	case PM_POST_SUSPEND:
	case PM_POST_HIBERNATION:
	case PM_POST_RESTORE:
		tpmrs_pm_handler(tpmrs_pm_data, 0);
		break;
	}
	return NOTIFY_DONE;
}

static struct notifier_block tpmrs_pm_nb = {
	.notifier_call = tpmrs_pm_call,
};

/**
 * tpmrs_pm_register() - call @handler around every system sleep transition
 * @handler: called with @data and 1 before a suspend, hibernation or restore, with 0 after
 *	it (or after it failed); in process context, may sleep
 * @data: passed to @handler
 *
 * Once only, until tpmrs_pm_unregister().
 *
 * Return: 0, or -errno.
 */
int tpmrs_pm_register(void (*handler)(void *data, int prepare), void *data)
{
	tpmrs_pm_handler = handler;
	tpmrs_pm_data = data;
	return register_pm_notifier(&tpmrs_pm_nb);
}

/**
 * tpmrs_pm_unregister() - undo tpmrs_pm_register()
 *
 * Returns once no call of the handler is running (the notifier chain's lock).
 */
void tpmrs_pm_unregister(void)
{
	unregister_pm_notifier(&tpmrs_pm_nb);
}
