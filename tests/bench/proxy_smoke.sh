#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of one boot through the modeled hardware TPM, end to end (QEMU's emulator
# backend, tests/bench/tpm_proxy.py, swtpm):
#   TPMRS_TPM_MODEL=hw scripts/guest.sh KDIR tests/bench/proxy_smoke.sh OUTDIR
# tpm2 getrandom through /dev/tpm0 and /dev/tpmrm0, timed, twice each (the first run of a
# program pays for loading it over 9p; tpm2-tools sends several commands per run, each held
# for its modeled time); 20 raw TPM2_GetRandom through /dev/tpm0, timed, beside the model's
# figure; then a power cycle asked of the proxy between TPM2_Shutdown(STATE) and
# TPM2_Startup(STATE) through /dev/tpm0, and a GetRandom after it. Exits 0 if every step
# worked (the timings are shown, not checked); the proxy's log is OUTDIR/swtpm/proxy.log.
set -u
rc=0
for node in /dev/tpm0 /dev/tpm0 /dev/tpmrm0 /dev/tpmrm0; do
	t0=$(date +%s%N)
	if out=$(TPM2TOOLS_TCTI=device:$node tpm2 getrandom --hex 8 2>&1); then r=0; else r=$?; fi
	t1=$(date +%s%N)
	echo "[smoke] tpm2 getrandom --hex 8 on $node: exit $r, '$out', $(( (t1 - t0) / 1000000 )) ms"
	[ "$r" = 0 ] || rc=1
done
python3 - <<'EOF' || rc=1
import os, statistics, struct, sys, time
sys.path.insert(0, os.path.join(os.environ["TPMRS_ROOT"], "tests", "guest"))
sys.path.insert(0, os.path.join(os.environ["TPMRS_ROOT"], "tests", "bench"))
import tpm
import tpm_model

ctl = os.path.join(os.environ["TPMRS_OUT"], "ctl")


def raw(cmd):
    # /dev/tpm0 directly: the kernel adds nothing, and a command it fails (-errno) shows.
    return tpm.rc_of(tpm.direct(cmd))


took = []
for _ in range(20):
    a = time.perf_counter()
    assert raw(tpm.get_random(8)) == 0
    took.append((time.perf_counter() - a) * 1000)
print(f"[smoke] TPM2_GetRandom(8) x20 on /dev/tpm0: min {min(took):.1f} ms, median "
      f"{statistics.median(took):.1f} ms (model: {tpm_model.latency(tpm.get_random(8))[0]} ms)")

t0 = time.monotonic()
rc = raw(tpm.command(0x145, struct.pack(">H", 1)))  # TPM2_Shutdown(STATE)
print(f"[smoke] TPM2_Shutdown(STATE): {rc:#x}")
open(os.path.join(ctl, "tpm-power-cycle"), "w").close()
while not os.path.exists(os.path.join(ctl, "tpm-power-cycled")):
    assert time.monotonic() - t0 < 60, "no answer to the power cycle request"
    time.sleep(0.05)
print(f"[smoke] power cycle: CMD_INIT -> {open(os.path.join(ctl, 'tpm-power-cycled')).read().strip()}")
rc2 = raw(tpm.command(0x144, struct.pack(">H", 1)))  # TPM2_Startup(STATE)
print(f"[smoke] TPM2_Startup(STATE): {rc2:#x}")
rc3 = raw(tpm.get_random(8))
print(f"[smoke] GetRandom after the cycle: {rc3:#x} ({(time.monotonic() - t0) * 1000:.0f} ms for all four)")
sys.exit(0 if rc == rc2 == rc3 == 0 else 1)
EOF
log=$TPMRS_OUT/swtpm/proxy.log
relayed=$(grep -c ' tpm ' "$log")
echo "[smoke] proxy log: $relayed TPM commands, modeled time $(awk '$2 == "tpm" { s += $4 } END { printf "%.0f", s }' "$log") ms in all"
# With TPMRS_SWTPM_LOG=1 too, swtpm's own log must have seen every command the proxy relayed
# (on the bench kernel: the debug kernel's hwrng may send one between the two counts).
if [ -f "$TPMRS_OUT/swtpm/swtpm.log" ]; then
	seen=$(python3 "$TPMRS_ROOT/tests/tools/swtpm_count.py" "$TPMRS_OUT/swtpm/swtpm.log" | sed -n 's/^total //p')
	echo "[smoke] swtpm's command log: $seen TPM commands"
	[ "$seen" = "$relayed" ] || rc=1
fi
echo "[smoke] result: $([ "$rc" = 0 ] && echo ok || echo FAILED)"
exit "$rc"
