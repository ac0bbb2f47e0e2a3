// SPDX-License-Identifier: GPL-2.0
//! tpmrs_kunit: the KUnit suite `tpmrs` ([`tests`]), in a module of its own.
//!
//! KUnit runs the suites of a module when it is loaded. Kept in `tpmrs.ko`, the suite would
//! run against the machine's real TPM at every `insmod tpmrs`; as a separate module (the
//! out-of-tree equivalent of `CONFIG_TCG_TPMRS_KUNIT_TEST`, see `Kconfig`) a production
//! `insmod tpmrs.ko` runs no test, and `insmod tpmrs_kunit.ko` runs the suite on demand. The
//! results are then in `/sys/kernel/debug/kunit/tpmrs/results` (KTAP, for `kunit.py parse`)
//! until the module is removed.
//!
//! The suite tests the glue's transport and the protocol core compiled for the kernel, so
//! this crate compiles the same [`chip`] and [`proto`] sources as `tpmrs.ko` (and its own
//! copy of the C shim, `tpmrs_kunit_shim.c`).

use kernel::prelude::*;

// Only the chip transport is exercised, not the workqueue the module uses.
#[allow(dead_code)]
mod chip;
// The core's kernel platform allocates through it.
#[allow(dead_code)]
mod memcg;
#[path = "proto/src/lib.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod proto;
mod tests;

module! {
    type: TpmrsKunit,
    name: "tpmrs_kunit",
    authors: ["tpmrs developers"],
    description: "KUnit tests of tpmrs against the machine's TPM (run when loaded)",
    license: "GPL",
}

/// Nothing to set up: KUnit runs the suite from the module's `.kunit_test_suites` section.
struct TpmrsKunit;

impl kernel::Module for TpmrsKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}
