#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest script of the chip-selection test (scripts/test.sh runs it in a guest whose own TPM,
# tpm0, is a TPM 1.2: TPMRS_TPM_VERSION=1.2). A TPM 2.0 is added as tpm1 through the vTPM
# proxy (swtpm chardev --vtpm-proxy, inside the guest), and tpmrs must serve it: the default
# chip is the lowest-numbered TPM 2.0, not the lowest-numbered chip. TAP in $TPMRS_OUT.
set -u
# The module copied beside the results (scripts/test.sh), else the checkout's.
[ -f "$TPMRS_OUT/tpmrs.ko" ] && TPMRS_KO=$TPMRS_OUT/tpmrs.ko
export TPMRS_KO
out=$TPMRS_OUT/chip-select.tap
n=0
: >"$out"
t() { # t NAME COMMAND... (each step gets 120 s: a hang is a named failure, not a guest timeout)
	local name=$1; shift
	n=$((n + 1))
	echo "chip_select: $n $name" >/dev/kmsg
	if timeout -k 5 120 "$@" >"$TPMRS_OUT/chip-select-$n.log" 2>&1; then
		echo "ok $n - chip_select.$name" >>"$out"
	else
		echo "not ok $n - chip_select.$name" >>"$out"
		sed 's/^/# /' "$TPMRS_OUT/chip-select-$n.log" >>"$out"
	fi
}
version() { cat "/sys/class/tpm/$1/tpm_version_major" 2>/dev/null; }

t tpm0_is_tpm12 test "$(version tpm0)" = 1
# The guest is slow (a debug kernel under TCG, beside other guests on a loaded host), and the
# kernel gives the vTPM's first commands under a second: a starved swtpm makes the chip's
# registration time out ("tpm tpm1: Operation Timed out"). So swtpm runs at a real-time
# priority, kmemleak's automatic scans (seconds of CPU each) stay off in this guest, and a
# chip that did not come up is tried once more. swtpm runs in the background rather than
# with --daemon, which did not return once the registration timed out (a guest timeout).
echo scan=off >/sys/kernel/debug/kmemleak 2>/dev/null
vtpm_pid=
start_vtpm() {
	[ -n "$vtpm_pid" ] && kill -9 "$vtpm_pid" 2>/dev/null && wait "$vtpm_pid" 2>/dev/null
	rm -rf /tmp/vtpm && mkdir -p /tmp/vtpm
	chrt -f 50 swtpm chardev --vtpm-proxy --tpm2 --flags not-need-init,startup-clear \
		--seccomp action=none --tpmstate dir=/tmp/vtpm \
		>>"$TPMRS_OUT/swtpm-vtpm.log" 2>&1 &
	vtpm_pid=$!
	for _ in $(seq 1 600); do
		[ -e /sys/class/tpm/tpm1/tpm_version_major ] && return 0
		kill -0 "$vtpm_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
start_vtpm || { echo "chip_select: no tpm1 at the first try" >/dev/kmsg; start_vtpm; }
echo "chip_select: swtpm --vtpm-proxy started; tpm1: $(version tpm1)" >/dev/kmsg
t tpm1_is_a_vtpm_tpm2 test "$(version tpm1)" = 2
t insmod_takes_tpm1 bash -c 'insmod "$TPMRS_KO" && dmesg | grep "tpmrs:" | tail -n 1 | grep -q "/dev/tpmrs0 on tpm1"'
t tpm2_tools_through_tpmrs0 env TPM2TOOLS_TCTI=device:/dev/tpmrs0 tpm2 getrandom --hex 8
t rmmod rmmod tpmrs
t chip0_is_refused bash -c '! insmod "$TPMRS_KO" chip=0 && dmesg | grep "tpmrs:" | tail -n 1 | grep -q "no TPM 2.0 chip tpm0"'
kill "$vtpm_pid" 2>/dev/null
echo "1..$n" >>"$out"
