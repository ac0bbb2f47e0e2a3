# SPDX-License-Identifier: GPL-2.0
# Shared by scripts/check.sh and scripts/test.sh; sourced, not run. Counts results and runs
# the host-only checks (no kernel build, no guest), so that `make check` and `make test`
# run exactly the same host part.
#
# The sourcing script sets $out (its results directory) before calling host_checks.
passed=0 failed=0
t0=$(date +%s)
log() { printf '[test %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
pass() { passed=$((passed + 1)); printf 'ok     %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL   %s\n' "$1"; }
# check NAME LOGFILE COMMAND...: one test that passes when COMMAND succeeds.
check() {
	local name=$1 logf=$2; shift 2
	if "$@" >"$logf" 2>&1; then pass "$name"; else fail "$name"; tail -n 40 "$logf" | sed 's/^/    | /'; fi
}
summary() { echo "$passed passed, $failed failed"; }

# host_checks: rustfmt of every Rust source, the docs lint, the kernel/toolchain check, cargo test (the core's unit, mock
# and swtpm tests), cargo clippy -D warnings, cargo fmt, cargo doc -D warnings, the tests of
# make bench's modeled hardware TPM (tests/bench/test_tpm_proxy.py, with swtpm) and a short
# fuzz run of every target (TPMRS_FUZZ_SECONDS per target).
host_checks() {
	log "host: formatting and docs"
	check "module: rustfmt (kernel .rustfmt.toml)" "$out/rustfmt.log" make -s fmt-check
	check "docs: Documentation/*.rst (docutils) and C kernel-doc" "$out/doc-check.log" make -s doc-check
	check "build: plain make explains a missing or Rust-less running kernel in one line" \
		"$out/check-kernel.log" tests/tools/check_kernel_test.sh
	check "docs: cargo doc of the core (-D warnings)" "$out/cargo-doc.log" \
		env RUSTDOCFLAGS=-Dwarnings cargo doc -q -p tpmrs-proto --no-deps --color never

	log "host tests (cargo)"
	cargo test --workspace --color never >"$out/cargo-test.log" 2>&1
	local cargo_rc=$? p f
	while read -r p f; do
		passed=$((passed + p)); failed=$((failed + f))
	done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$out/cargo-test.log")
	if [ "$cargo_rc" != 0 ]; then
		grep -E '^(test .* FAILED|failures:|error)' "$out/cargo-test.log" | head -n 40 | sed 's/^/    | /'
		grep -q '^test result:' "$out/cargo-test.log" || fail "host: cargo test ran"
	fi
	echo "host: $(grep -c '^test .* ok$' "$out/cargo-test.log") cargo tests passed, $(grep -c '^test .* FAILED$' "$out/cargo-test.log") failed"
	check "host: cargo clippy -D warnings" "$out/cargo-clippy.log" \
		cargo clippy --workspace --all-targets --color never -- -D warnings
	check "host: cargo fmt --check" "$out/cargo-fmt.log" cargo fmt --all --check
	check "host: core files under 500 lines, no import circle in the core" "$out/core-shape.log" \
		python3 "$TPMRS_ROOT/scripts/core_shape.py" "$TPMRS_ROOT/rust/proto/src" "$TPMRS_ROOT/rust"

	# The modeled hardware TPM of make bench (tests/bench/tpm_proxy.py) against swtpm, with
	# this script as QEMU: one result per test.
	log "host tests (the modeled hardware TPM's proxy)"
	/usr/bin/python3 tests/bench/test_tpm_proxy.py >"$out/tpm-proxy.log" 2>&1
	local proxy_rc=$? psum
	grep -E '^(ok|FAIL) ' "$out/tpm-proxy.log"
	psum=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/tpm-proxy.log" | tail -n1)
	if [ -n "$psum" ]; then
		passed=$((passed + $(cut -d' ' -f1 <<<"$psum"))); failed=$((failed + $(cut -d' ' -f3 <<<"$psum")))
	fi
	if [ "$proxy_rc" != 0 ] || [ -z "$psum" ]; then
		[ -n "$psum" ] || fail "host: tests/bench/test_tpm_proxy.py ran (see $out/tpm-proxy.log)"
		grep -E '^    \| ' "$out/tpm-proxy.log" | head -n 40
	fi

	log "host fuzzing (${TPMRS_FUZZ_SECONDS}s per target; fuzz/README.md for longer runs)"
	fuzz/run.sh "$TPMRS_FUZZ_SECONDS" >"$out/fuzz.log" 2>&1
	local fuzz_rc=$? fsum
	grep -E '^fuzz: ' "$out/fuzz.log"
	fsum=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/fuzz.log" | tail -n1)
	if [ -n "$fsum" ]; then
		passed=$((passed + $(cut -d' ' -f1 <<<"$fsum"))); failed=$((failed + $(cut -d' ' -f3 <<<"$fsum")))
	fi
	if [ "$fuzz_rc" != 0 ] || [ -z "$fsum" ]; then
		fail "host: fuzz/run.sh (see $out/fuzz.log)"; tail -n 20 "$out/fuzz.log" | sed 's/^/    | /'
	fi
}
