#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest script (scripts/guest.sh) for the third-party TSS suites: loads tpmrs and runs each
# suite in $TPMRS_THIRDPARTY_SUITES (default: tss-esapi,tpm2-pytss) on each node in
# $TPMRS_THIRDPARTY_NODES (default: tpmrs0), one after the other (both lists separated by
# commas: they come through the kernel command line), into
# $TPMRS_OUT/SUITE-NODE.txt (tests/thirdparty/run.py). The host compares them
# (tests/thirdparty/compare.py).
set -u
out=$TPMRS_OUT
: "${TPMRS_THIRDPARTY_NODES:=tpmrs0}" "${TPMRS_THIRDPARTY_SUITES:=tss-esapi,tpm2-pytss}"
here=$TPMRS_ROOT/tests/thirdparty
# The host may hand over its own copy of the module (scripts/test.sh does).
ko=$TPMRS_KO
[ -f "$out/tpmrs.ko" ] && ko=$out/tpmrs.ko
# TPMRS_RESIDENT=1 (kernel command line): resident contexts, as make install-tcti sets.
insmod "$ko" "resident=${TPMRS_RESIDENT:-0}" || { echo "[thirdparty] insmod failed"; exit 1; }
test -c /dev/tpmrs0 || { echo "[thirdparty] no /dev/tpmrs0"; exit 1; }
rc=0
TPM2TOOLS_TCTI=device:/dev/tpm0 tpm2 dictionarylockout -c >/dev/null 2>&1
for node in ${TPMRS_THIRDPARTY_NODES//,/ }; do
	for suite in ${TPMRS_THIRDPARTY_SUITES//,/ }; do
		echo "[thirdparty] $suite on /dev/$node"
		start=$(date +%s)
		timeout -k 10 3000 python3 "$here/run.py" "$suite" "/dev/$node" "$out/$suite-$node.txt" || rc=1
		echo "$suite $node $(( $(date +%s) - start ))" >>"$out/times.txt"
	done
done
rmmod tpmrs || rc=1
exit $rc
