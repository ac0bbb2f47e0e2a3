#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The guest half of `make test` (run by tests/guest/init.sh as PID 1's child): loads tpmrs,
# runs the KUnit suite (tpmrs_kunit.ko, results from debugfs), runs the user-space tests against /dev/tpmrs0 and, side
# by side, /dev/tpmrm0, unloads the module and asks kmemleak for leaks. Every result goes to
# $TPMRS_OUT as TAP (*.tap); the host (scripts/test.sh) parses them with the KTAP in the
# kernel log. From the kernel command line (scripts/guest.sh's TPMRS_EXTRA_ENV):
# TPMRS_RESIDENT=1 loads tpmrs with resident=1 (resident contexts) and adds
# tests/guest/test_resident.py; TPMRS_GUEST_EXCLUDE leaves tests out (tests/guest/tap.py).
set -u
out=$TPMRS_OUT
ksrc=${TPMRS_KSRC:-$TPMRS_CACHE/linux-source-7.3}
here=$TPMRS_ROOT/tests/guest
n=0
steps=$out/steps.tap
: >"$steps"
step() { # step NAME COMMAND...: one TAP line for a setup step of the suite
	local name=$1; shift
	n=$((n + 1))
	if "$@" >"$out/step-$n.log" 2>&1; then
		echo "ok $n - suite.$name" >>"$steps"
	else
		echo "not ok $n - suite.$name" >>"$steps"
		sed 's/^/# /' "$out/step-$n.log" >>"$steps"
	fi
}
reset_da() { # clear dictionary-attack failures the tests cause on purpose
	TPM2TOOLS_TCTI=device:/dev/tpmrm0 tpm2 dictionarylockout -c >/dev/null 2>&1 || true
}

# Chip selection (module parameter chip): a missing chip fails cleanly, tpm0 by number works.
step insmod_missing_chip_fails bash -c '! insmod "$TPMRS_KO" chip=7 && dmesg | grep -q "no TPM 2.0 chip tpm7" && test ! -e /dev/tpmrs0'
step insmod_chip_by_number bash -c 'insmod "$TPMRS_KO" chip=0 && dmesg | tail -n 3 | grep -q "/dev/tpmrs0 on tpm0" && test -c /dev/tpmrs0 && rmmod tpmrs'
resident=${TPMRS_RESIDENT:-0}
step insmod insmod "$TPMRS_KO" "resident=$resident"
step node_is_char_device test -c /dev/tpmrs0
# KUnit is opt-in: loading tpmrs.ko ran no suite. tpmrs_kunit.ko runs it; its results stay in
# debugfs while it is loaded, and the host parses them with kunit.py (scripts/test.sh).
step insmod_runs_no_test bash -c '! test -e /sys/kernel/debug/kunit/tpmrs && ! dmesg | grep -q "# Subtest: tpmrs"'
step kunit_insmod insmod "${TPMRS_KO%/*}/tpmrs_kunit.ko"
step kunit_results cp /sys/kernel/debug/kunit/tpmrs/results "$out/kunit-tpmrs.ktap"
step kunit_rmmod rmmod tpmrs_kunit

reset_da
echo "[suite] user-space tests"
tests=()
for t in "$here"/test_*.py; do
	# Resident contexts have their own tests, in the guest that turns them on.
	[ "${t##*/}" = test_resident.py ] && [ "$resident" != 1 ] && continue
	tests+=("$t")
done
if [ "$resident" = 1 ]; then
	# The tests of /dev/tpmrm0 alone (the baseline beside each tpmrs0 test) do not depend on
	# tpmrs' setting: the guest with resident=0 runs them. This guest shares the cores with
	# the third-party guests, so it also gets longer.
	export TPMRS_GUEST_EXCLUDE="${TPMRS_GUEST_EXCLUDE:+$TPMRS_GUEST_EXCLUDE,}*_tpmrm0"
fi
timeout -k 5 2400 python3 "$here/tap.py" "${tests[@]}" >"$out/guest.tap" 2>&1

for node in /dev/tpmrm0 /dev/tpmrs0; do
	reset_da
	echo "[suite] kernel tpm2 selftests on $node"
	timeout -k 5 600 python3 "$here/selftests.py" "$ksrc" "$node" >"$out/selftest-${node##*/}.tap" 2>&1
done
reset_da

# Last: the TPM goes away (swtpm killed by the host); nothing after this needs it.
echo "[suite] swtpm killed under clients"
timeout -k 5 400 python3 "$here/tap.py" "$here/swtpm_gone.py" >"$out/swtpm-gone.tap" 2>&1

step rmmod rmmod tpmrs
step no_tpmrs0_after_rmmod test ! -e /dev/tpmrs0

if [ -e /sys/kernel/debug/kmemleak ]; then
	echo "[suite] kmemleak scan"
	echo scan >/sys/kernel/debug/kmemleak; sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak >"$out/kmemleak.txt"
fi
echo "1..$n" >>"$steps"
