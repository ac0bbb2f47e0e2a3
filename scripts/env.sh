# SPDX-License-Identifier: GPL-2.0
# Common settings for tpmrs scripts; sourced, not run.
TPMRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPMRS_CACHE=${TPMRS_CACHE:-$HOME/.cache/tpmrs}
KVER_SERIES=7.3
BINDGEN_VERSION=0.72.1
BINDGEN=$TPMRS_CACHE/bindgen/bin/bindgen
KSRC=${KSRC:-$TPMRS_CACHE/linux-source-$KVER_SERIES}
# The kernel's own toolchain: always explicit (rustup's rustc on PATH has no library sources).
KMAKE_VARS=(LLVM=-19 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc
	    BINDGEN="$BINDGEN")
mkdir -p "$TPMRS_CACHE"
# Third-party TSS suites (scripts/setup-thirdparty.sh, tests/thirdparty/).
TSS_ESAPI_VERSION=7.7.0
TPM2_PYTSS_VERSION=3.0.0
PYTEST_VERSION=8.3.4
