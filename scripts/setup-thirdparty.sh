#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Idempotent set-up of the third-party TSS test suites that `make test` runs in the guest
# (see tests/thirdparty/README.md), under $TPMRS_CACHE/thirdparty:
#   - tss-esapi (crates.io): its integration-test binary, built once per version against
#     Debian's libtss2-dev (tss-esapi 8.x needs tpm2-tss >= 4.1.3; bookworm has 3.2.1);
#   - tpm2-pytss (PyPI): a venv with the release built against the installed tpm2-tss, and
#     its sdist's test directory.
# Called by scripts/setup.sh; safe to run again (a finished step leaves a stamp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
log() { printf '[setup] %s\n' "$*"; }

dir=$TPMRS_CACHE/thirdparty
mkdir -p "$dir"

# --- tss-esapi ----------------------------------------------------------------------------
esapi=$dir/tss-esapi-$TSS_ESAPI_VERSION
if [ ! -x "$esapi/integration_tests" ]; then
	log "building the tss-esapi $TSS_ESAPI_VERSION integration tests into $esapi (a few minutes)"
	rm -rf "$esapi" && mkdir -p "$esapi/scratch/src"
	# The crate's source, fetched by cargo through a scratch project that depends on it.
	cat >"$esapi/scratch/Cargo.toml" <<-TOML
	[package]
	name = "fetch-tss-esapi"
	version = "0.0.0"
	edition = "2021"
	[dependencies]
	tss-esapi = "=$TSS_ESAPI_VERSION"
	TOML
	echo 'fn main() {}' >"$esapi/scratch/src/main.rs"
	(cd "$esapi/scratch" && cargo fetch --quiet)
	src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tss-esapi-"$TSS_ESAPI_VERSION" | head -n1)
	cp -r "$src" "$esapi/src"
	# The FFI bindings are generated from the installed tpm2-tss headers, as upstream CI does.
	(cd "$esapi/src" && LIBCLANG_PATH=/usr/lib/llvm-19/lib CARGO_TARGET_DIR="$esapi/target" \
		cargo test --locked --quiet --features generate-bindings --no-run \
		--test integration_tests --message-format=json) >"$esapi/build.json"
	bin=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "integration_tests" and m.get("executable"):
        print(m["executable"])' "$esapi/build.json" | tail -n1)
	[ -x "$bin" ] || { echo "tss-esapi: no integration_tests binary was built" >&2; exit 1; }
	cp "$bin" "$esapi/integration_tests.tmp"
	rm -rf "$esapi/target" "$esapi/scratch"   # 1-2 GB of build products; the binary is enough
	mv "$esapi/integration_tests.tmp" "$esapi/integration_tests"
else
	log "tss-esapi $TSS_ESAPI_VERSION integration tests present"
fi

# --- tpm2-pytss -----------------------------------------------------------------------------
# 3.0.0 is the newest release; it documents tpm2-tss >= 2.4.0 (bookworm has 3.2.1) and builds
# its CFFI bindings from the installed headers, so it is built from the sdist, never a wheel.
pytss=$dir/tpm2-pytss-$TPM2_PYTSS_VERSION
if [ ! -e "$pytss/.done" ]; then
	log "installing tpm2-pytss $TPM2_PYTSS_VERSION into a venv in $pytss (a few minutes)"
	rm -rf "$pytss" && mkdir -p "$pytss/sdist"
	# The guest runs the host's /usr/bin/python3: the venv must be made from it.
	/usr/bin/python3 -m venv "$pytss/venv"
	"$pytss/venv/bin/pip" download --quiet --no-deps --no-binary tpm2-pytss \
		"tpm2-pytss==$TPM2_PYTSS_VERSION" -d "$pytss/sdist"
	"$pytss/venv/bin/pip" install --quiet --no-binary tpm2-pytss \
		"$pytss"/sdist/tpm2_pytss-"$TPM2_PYTSS_VERSION".tar.gz "pytest==$PYTEST_VERSION"
	# The test suite is in the sdist only.
	tar -C "$pytss" -xzf "$pytss"/sdist/tpm2_pytss-"$TPM2_PYTSS_VERSION".tar.gz
	mv "$pytss/tpm2_pytss-$TPM2_PYTSS_VERSION/test" "$pytss/test"
	rm -rf "$pytss/tpm2_pytss-$TPM2_PYTSS_VERSION"
	"$pytss/venv/bin/python" -c 'import tpm2_pytss'
	touch "$pytss/.done"
else
	log "tpm2-pytss $TPM2_PYTSS_VERSION present"
fi
