#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make thirdparty-baseline`: runs the third-party TSS suites (tests/thirdparty/) on
# /dev/tpmrm0 and on /dev/tpmrs0 side by side, in two guests booted in parallel (each with
# its own swtpm), prints the comparison and rewrites the tpmrm0 baselines that `make test`
# compares tpmrs0 with: tests/thirdparty/baseline-tpmrm0-SUITE.txt. Review and commit them.
# TPMRS_THIRDPARTY_SUITES=tss-esapi (comma-separated) limits the suites.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
cd "$TPMRS_ROOT"
"$here/setup.sh" >/dev/null || { echo "thirdparty-baseline: scripts/setup.sh failed" >&2; exit 1; }
kdir=$("$here/kernel.sh" debug) || exit 1
make -s KDIR="$kdir" modules || exit 1
suites=${TPMRS_THIRDPARTY_SUITES:-tss-esapi,tpm2-pytss}
out=$TPMRS_ROOT/target/thirdparty-baseline
rm -rf "$out" && mkdir -p "$out"
t0=$(date +%s)
pids=()
for node in tpmrm0 tpmrs0; do
	echo "[baseline] guest for /dev/$node: $out/$node"
	TPMRS_EXTRA_ENV="TPMRS_THIRDPARTY_NODES=$node TPMRS_THIRDPARTY_SUITES=$suites" \
		"$here/guest.sh" "$kdir" tests/thirdparty/guest.sh "$out/$node" "${TPMRS_THIRDPARTY_TIMEOUT:-5400}" &
	pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
echo "[baseline] both guests done after $(( $(date +%s) - t0 )) s"
cat "$out"/*/times.txt 2>/dev/null | sed 's/^\([^ ]*\) \([^ ]*\) \(.*\)/[baseline] \1 on \2 took \3 s/'
for s in ${suites//,/ }; do
	rm_res=$out/tpmrm0/$s-tpmrm0.txt rs_res=$out/tpmrs0/$s-tpmrs0.txt
	if [ ! -s "$rm_res" ] || [ ! -s "$rs_res" ]; then
		echo "[baseline] $s: results missing (see $out/*/console.log and $out/*/$s-*.txt.log)"; rc=1; continue
	fi
	python3 tests/thirdparty/compare.py "$s" "$rm_res" "$rs_res" || rc=1
	{
		echo "# SPDX-License-Identifier: GPL-2.0"
		echo "# $s on /dev/tpmrm0 in the debug guest: one line per test, PASS, FAIL or SKIP."
		echo "# Written by \`make thirdparty-baseline\` ($(date -u +%Y-%m-%d), tpmrs $(git rev-parse --short HEAD))."
		cat "$rm_res"
	} >"tests/thirdparty/baseline-tpmrm0-$s.txt"
	echo "[baseline] wrote tests/thirdparty/baseline-tpmrm0-$s.txt"
done
exit $rc
