#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: /dev/tpmrs0 against /dev/tpmrm0 (and /dev/tpm0 where it applies) on the same
# guest and swtpm, in the same run, on the bench kernel (the debug config without lockdep,
# KASAN and kmemleak, which distort timings). Prints progress, then writes and prints
# target/bench/bench.md and plots target/bench/bench.png, from two guest boots (see below).
# About 20 minutes on these machines (8 of them section 6, fair share),
# 9 of them section 5, the context gap (TPM_PT_CONTEXT_GAP_MAX + 1000 session saves on
# tpmrs0; tpmrm0 fails halfway); TPMRS_BENCH_GAP=0 leaves it out. TPMRS_BENCH_QUICK=1: a short run
# (fewer samples, 2000 context-gap cycles instead of TPM_PT_CONTEXT_GAP_MAX + 1000: the gap
# is not reached).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
cd "$TPMRS_ROOT"

"$here/setup.sh"
dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q 'install ok installed' ||
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
# TPMRS_BENCH_FLAVOR=debug runs on the debug kernel (a smoke test of the bench itself:
# its timings are distorted by KASAN and lockdep).
kdir=$("$here/kernel.sh" "${TPMRS_BENCH_FLAVOR:-bench}")
out=$TPMRS_ROOT/target/bench
build=$TPMRS_ROOT/target/bench-module
rm -rf "$out" && mkdir -p "$out" "$build"
# Build the module for the bench kernel in a copy, so the debug build in the checkout stays.
cp -r Kbuild rust "$build/"
make -s -C "$kdir" M="$build" "${KMAKE_VARS[@]}" modules
export TPMRS_BENCH_KO=target/bench-module/tpmrs.ko  # relative: the guest sees the checkout elsewhere
# Two boots: swtpm's command log (which section 1 counts from) slows every TPM command, so
# the timed sections run in a second boot without it. Each boot gets a fresh swtpm.
env="TPMRS_BENCH_KO=$TPMRS_BENCH_KO TPMRS_BENCH_QUICK=${TPMRS_BENCH_QUICK:-0}"
timed=latency,throughput,exhaustion,fairshare_runs
[ "${TPMRS_BENCH_GAP:-1}" = 0 ] || timed+=,context_gap
echo "[bench] guest 1 of 2 (QEMU TCG, swtpm with its command log, bench kernel): TPM traffic"
TPMRS_SWTPM_LOG=1 TPMRS_SHOW_CONSOLE=1 TPMRS_EXTRA_ENV="$env TPMRS_BENCH_SECTIONS=traffic" \
	"$here/guest.sh" "$kdir" tests/bench/guest.sh "$out/traffic" 1200 | grep --line-buffered -E '^\[bench|^\[guest' || true
echo "[bench] guest 2 of 2 (swtpm without a log): $timed"
TPMRS_SHOW_CONSOLE=1 TPMRS_EXTRA_ENV="$env TPMRS_BENCH_SECTIONS=$timed" \
	"$here/guest.sh" "$kdir" tests/bench/guest.sh "$out/timed" 3600 | grep --line-buffered -E '^\[bench|^\[guest' || true
for part in traffic timed; do
	[ -s "$out/$part/bench.json" ] || { echo "[bench] no results (see $out/$part/console.log)"; exit 1; }
done
/usr/bin/python3 -c 'import json, sys
r = {}
for p in sys.argv[1:-1]:
    r.update(json.load(open(p)))
json.dump(r, open(sys.argv[-1], "w"), indent=1)' "$out/traffic/bench.json" "$out/timed/bench.json" "$out/bench.json"
/usr/bin/python3 tests/bench/report.py "$out/bench.json" "$out/bench.md" "$out/bench.png"
cat "$out/bench.md"
echo "[bench] plot: $out/bench.png"
