#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host test of scripts/check-kernel.sh, the check plain `make` runs first: on a machine whose
# running kernel has no build tree, or one without Rust support, it must print exactly one
# line saying so and fail, before Kbuild runs. Uses fake kernel trees; builds nothing.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0

# expect NAME PATTERN KDIR: check-kernel.sh with KDIR as the default tree fails with exactly
# one line, which matches PATTERN.
expect() {
	local name=$1 pattern=$2 kdir=$3 out rc
	out=$(TPMRS_KDIR_DEFAULT=1 RUSTC=/usr/bin/rustc "$root/scripts/check-kernel.sh" "$kdir" 2>&1)
	rc=$?
	if [ "$rc" = 0 ] || [ "$(printf '%s\n' "$out" | wc -l)" != 1 ] || ! grep -qE "$pattern" <<<"$out"; then
		echo "FAIL $name: rc=$rc, output:"; printf '%s\n' "$out" | sed 's/^/  /'; bad=1
	else
		echo "ok   $name: $out"
	fi
}

expect "missing build tree" "^tpmrs: no build tree for the running kernel .*make dev" "$tmp/missing"

# A distribution kernel's headers without Rust: prepared, Module.symvers, no CONFIG_RUST.
k=$tmp/norust
mkdir -p "$k/include/config" "$k/include/generated"
printf 'CONFIG_MODULES=y\nCONFIG_TCG_TPM=y\nCONFIG_CC_IS_GCC=y\n' >"$k/.config"
touch "$k/Makefile" "$k/include/config/auto.conf" "$k/include/generated/autoconf.h" "$k/Module.symvers"
expect "kernel without Rust" "^tpmrs: the running kernel .* has no Rust support" "$k"
exit "$bad"
