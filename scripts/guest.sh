#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots a tpmrs dev kernel in QEMU (TCG) with a fresh swtpm behind tpm-tis and the host's root
# shared read-only over virtio-9p (the virtme-ng approach: every host program runs in the
# guest as it is), runs one guest script as part of PID 1, and powers off.
#
# usage: scripts/guest.sh KDIR GUEST_SCRIPT OUTDIR [TIMEOUT_SECONDS]
#   GUEST_SCRIPT  a path relative to the checkout (e.g. tests/guest/suite.sh), run as root in
#                 the guest with TPMRS_ROOT (the checkout), TPMRS_OUT (a writable share that
#                 is OUTDIR on the host) and TPMRS_KO (the module) in its environment.
#   OUTDIR        receives console.log, the guest script's files and the swtpm state/log.
# The guest script can have swtpm killed under it: see ctl/ below.
# Environment: TPMRS_SWTPM_LOG=1 makes swtpm log every command (for counting TPM traffic);
#              TPMRS_TPM_VERSION=1.2 gives the machine a TPM 1.2 instead of a TPM 2.0;
#              TPMRS_INTERACTIVE=1 gives a shell on the console after the script;
#              TPMRS_GUEST_MEM: the guest's memory (default 2G);
#              TPMRS_SHOW_CONSOLE=1 shows the console while it runs (and logs it);
#              TPMRS_TPM_MODEL=hw puts the modeled hardware TPM between QEMU and swtpm
#              (tests/bench/tpm_proxy.py: each response held for a discrete TPM's time,
#              tests/bench/tpm_model.py), TPMRS_TPM_PROXY=1 the same proxy without delays;
#              with either, the guest can ask for TPM power cycles (ctl/ below) and OUTDIR
#              gets swtpm/proxy.log, a line per TPM command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

kdir=$1 script=$2 out=$3 timeout=${4:-1500}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tpmdir=$out/swtpm
rm -rf "$tpmdir" && mkdir -p "$tpmdir"

swtpm_args=(socket --tpmstate "dir=$tpmdir" --ctrl "type=unixio,path=$tpmdir/ctrl.sock"
	    --terminate --daemon --pid "file=$tpmdir/pid")
# TPMRS_TPM_VERSION=1.2 makes the machine's TPM (tpm0) a TPM 1.2 (the chip-selection test).
[ "${TPMRS_TPM_VERSION:-2}" = 1.2 ] || swtpm_args+=(--tpm2)
if [ "${TPMRS_SWTPM_LOG:-0}" = 1 ]; then
	swtpm_args+=(--log "file=$tpmdir/swtpm.log,level=20")
fi
swtpm "${swtpm_args[@]}"
# The guest may ask for swtpm to die under it (tests/guest/swtpm_gone.py): it creates
# ctl/kill-swtpm on the results share, and the host answers with ctl/swtpm-killed.
# Through the proxy it may also ask for a TPM power cycle: ctl/tpm-power-cycle (or
# ctl/tpm-power-cycle.TAG), answered with ctl/tpm-power-cycled(.TAG) holding CMD_INIT's
# result (tests/bench/tpm_proxy.py).
rm -rf "$out/ctl" && mkdir -p "$out/ctl"
chardev=$tpmdir/ctrl.sock proxy=
(
	while sleep 0.2; do
		# Once, and the request stays: removed at once, it made the guest's open() of
		# it fail with ENOENT over 9p (the file went away before the open returned).
		if [ -e "$out/ctl/kill-swtpm" ] && [ ! -e "$out/ctl/swtpm-killed" ]; then
			kill -9 "$(cat "$tpmdir/pid")" 2>/dev/null || true
			touch "$out/ctl/swtpm-killed"
		fi
	done
) &
watcher=$!
cleanup() {
	kill "$watcher" 2>/dev/null || true
	[ -z "$proxy" ] || kill "$proxy" 2>/dev/null || true
	[ -f "$tpmdir/pid" ] && kill "$(cat "$tpmdir/pid")" 2>/dev/null || true
}
trap cleanup EXIT
model=${TPMRS_TPM_MODEL:-}
[ -n "$model" ] || [ "${TPMRS_TPM_PROXY:-0}" != 1 ] || model=none
if [ -n "$model" ]; then
	chardev=$tpmdir/proxy.sock
	/usr/bin/python3 "$TPMRS_ROOT/tests/bench/tpm_proxy.py" --listen "$chardev" \
		--swtpm "$tpmdir/ctrl.sock" --model "$model" --ctl-dir "$out/ctl" \
		--log "$tpmdir/proxy.log" 2>"$tpmdir/proxy.err" &
	proxy=$!
	# QEMU connects at start: the socket must be there (the proxy renames it into place
	# once it listens).
	for _ in $(seq 100); do
		[ ! -S "$chardev" ] && kill -0 "$proxy" 2>/dev/null || break
		sleep 0.1
	done
	[ -S "$chardev" ] || { echo "[guest] the TPM proxy did not start:" >&2; cat "$tpmdir/proxy.err" >&2; exit 1; }
fi

append="console=ttyS0 printk.time=1 panic=-1 root=/dev/root rootfstype=9p"
append+=" rootflags=trans=virtio,version=9p2000.L,cache=loose,msize=262144 ro"
append+=" init=$TPMRS_ROOT/tests/guest/init.sh"
append+=" TPMRS_ROOT=$TPMRS_ROOT TPMRS_CACHE=$TPMRS_CACHE TPMRS_SCRIPT=$script TPMRS_INTERACTIVE=${TPMRS_INTERACTIVE:-0}"
# no5lvl: QEMU's "max" CPU has LA57, and the debug kernel then fails to boot cleanly now and then.
# identify_cpu() zeroes boot_cpu_data's capabilities with interrupts on; while they are zero,
# pgtable_l5_enabled() is false, and KASAN takes a timer interrupt's per-CPU access (a 5-level
# direct-map address) for a wild one: "BUG: KASAN: wild-memory-access in rcu_is_watching" at
# 0.005 s, before tpmrs is loaded. Seen in 2 of about 15 make test runs (stop 17's CI included).
# 4-level paging has no such window.
append+=" kmemleak=on no5lvl ${TPMRS_EXTRA_ENV:-}"

qemu=(qemu-system-x86_64 -M q35 -accel tcg -cpu "${TPMRS_QEMU_CPU:-max}" -m "${TPMRS_GUEST_MEM:-2G}" -smp 2 -nographic -no-reboot
      -kernel "$kdir/arch/x86/boot/bzImage" -append "$append"
      -fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
      -device virtio-9p-pci,fsdev=hostroot,mount_tag=/dev/root
      -fsdev "local,id=out,path=$out,security_model=none,multidevs=remap"
      -device virtio-9p-pci,fsdev=out,mount_tag=tpmrs_out
      -chardev "socket,id=chrtpm,path=$chardev"
      -tpmdev emulator,id=tpm0,chardev=chrtpm -device "${TPMRS_TPM_DEVICE:-tpm-tis}",tpmdev=tpm0)

if [ "${TPMRS_INTERACTIVE:-0}" = 1 ]; then
	"${qemu[@]}"
else
	rc=0
	if [ "${TPMRS_SHOW_CONSOLE:-0}" = 1 ]; then
		timeout --foreground -k 10 "$timeout" "${qemu[@]}" </dev/null 2>&1 | tee "$out/console.log" || rc=$?
	else
		timeout --foreground -k 10 "$timeout" "${qemu[@]}" </dev/null >"$out/console.log" 2>&1 || rc=$?
	fi
	[ "$rc" = 124 ] && echo "[guest] timed out after ${timeout}s" >&2
	exit "$rc"
fi
