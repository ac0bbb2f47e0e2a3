// SPDX-License-Identifier: GPL-2.0
/*
 * tpmrs_kunit_shim.c - the C shim of tpmrs_kunit.ko: the same code as tpmrs_shim.c, compiled
 * again, because Kbuild links one object into one module only.
 */
#include "tpmrs_shim.c"
