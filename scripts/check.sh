#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: the host-only checks, with no kernel build and no guest: rustfmt of every Rust
# source, the docs lint, cargo test of the protocol core (unit, mock-TPM and swtpm tests),
# cargo clippy -D warnings, cargo fmt, cargo doc -D warnings, and a short fuzz smoke run
# (TPMRS_FUZZ_SECONDS per target, default 5; the first run installs cargo-fuzz, about 3.5
# minutes). Needs what scripts/setup.sh installs (cargo, swtpm, docutils). `make test` runs
# the same checks (scripts/testlib.sh) with the kernel and guest parts around them.
#
# Ends with "N passed, N failed"; exit status 0 only if nothing failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
. "$here/testlib.sh"
cd "$TPMRS_ROOT"

out=$TPMRS_ROOT/target/check-results
rm -rf "$out" && mkdir -p "$out"
TPMRS_FUZZ_SECONDS=${TPMRS_FUZZ_SECONDS:-5}
host_checks
log "done (results in $out)"
summary
[ "$failed" = 0 ]
