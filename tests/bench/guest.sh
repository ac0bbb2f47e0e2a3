#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, in the guest: load tpmrs (built for the bench kernel) and run bench.py.
set -u
insmod "$TPMRS_ROOT/$TPMRS_BENCH_KO" || { echo "insmod failed"; exit 1; }
TPM2TOOLS_TCTI=device:/dev/tpmrm0 tpm2 dictionarylockout -c >/dev/null 2>&1 || true
python3 "$TPMRS_ROOT/tests/bench/bench.py" 2>&1 | tee "$TPMRS_OUT/bench.log"
