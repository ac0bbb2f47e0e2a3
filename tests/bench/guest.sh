#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, in the guest: load tpmrs (built for the bench kernel) and run bench.py.
set -u
insmod "$TPMRS_ROOT/$TPMRS_BENCH_KO" || { echo "insmod failed"; exit 1; }
TPM2TOOLS_TCTI=device:/dev/tpmrm0 tpm2 dictionarylockout -c >/dev/null 2>&1 || true
# TPMRS_BENCH_SECTIONS: comma-separated sections (scripts/bench.sh); all if empty.
sections=${TPMRS_BENCH_SECTIONS:-}
# shellcheck disable=SC2086 # one word per section
python3 "$TPMRS_ROOT/tests/bench/bench.py" ${sections//,/ } 2>&1 | tee "$TPMRS_OUT/bench.log"
