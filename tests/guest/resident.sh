#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest script of the resident-contexts guest of `make test` (scripts/test.sh runs it beside
# the host checks, swtpm behind the TPM proxy with its command log: TPMRS_TPM_PROXY=1,
# TPMRS_SWTPM_LOG=1): loads tpmrs with resident=1, as `make install-tcti` sets it, and runs
# the tests of resident contexts (tests/guest/test_resident.py: the reserve, the PM
# notifier, TPM power cycles) and the traffic test with its resident=1 limits (1.2 and 1.3
# TPM commands per client command), then unloads it and asks kmemleak. TAP in $TPMRS_OUT.
set -u
out=$TPMRS_OUT
here=$TPMRS_ROOT/tests/guest
export TPMRS_RESIDENT=1
TPM2TOOLS_TCTI=device:/dev/tpmrm0 tpm2 dictionarylockout -c >/dev/null 2>&1 || true
if ! insmod "$TPMRS_KO" resident=1; then
	echo "insmod $TPMRS_KO resident=1 failed" >&2
	exit 1
fi
timeout -k 5 1200 python3 "$here/tap.py" "$here/test_resident.py" "$here/test_traffic.py" \
	>"$out/resident.tap" 2>&1
rmmod tpmrs
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak; sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak >"$out/kmemleak.txt"
fi
