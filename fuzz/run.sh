#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# fuzz/run.sh [SECONDS_PER_TARGET]: fuzz the host core (tpmrs-proto) with cargo-fuzz.
#
#   1. installs cargo-fuzz from crates.io into $TPMRS_CACHE/cargo-fuzz if it is not there
#      (TPMRS_CACHE defaults to $HOME/.cache/tpmrs);
#   2. builds the targets on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
#      its -Z flags; --sanitizer none: the core is safe Rust, #![forbid(unsafe_code)], and
#      debug assertions and overflow checks stay on, as in the kernel);
#   3. replays fuzz/regressions/<target>/* and fuzz/corpus/<target>/* (none may crash);
#   4. fuzzes each target for SECONDS (default 20) from its seeds plus the corpus kept
#      in fuzz/work/<target>/ by earlier runs (not committed), with dict/tpm.dict.
#
# Prints one line per target, "fuzz: <target>: <execs> execs, <corpus> corpus, <n> crashes",
# then "N passed, M failed" (a target passes if nothing crashed). Exits non-zero on a crash;
# the input is then in fuzz/artifacts/<target>/ (explain it with TPMRS_FUZZ_TRACE=1, see
# fuzz/README.md).
#
# Environment: TPMRS_FUZZ_TARGETS="a b" (a subset), TPMRS_FUZZ_SANITIZER (default none;
# address works too, about 10x slower).
set -euo pipefail

SECONDS_PER_TARGET=${1:-20}
case $SECONDS_PER_TARGET in
'' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

FUZZ=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TPMRS_CACHE:-$HOME/.cache/tpmrs}
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ_ROOT=$CACHE/cargo-fuzz
SANITIZER=${TPMRS_FUZZ_SANITIZER:-none}
TARGETS=${TPMRS_FUZZ_TARGETS:-command_parser response_mapper space_state_machine}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=$FUZZ/target
BIN=$TARGET_DIR/$TRIPLE/release
export RUSTC_BOOTSTRAP=1
export PATH=$CARGO_FUZZ_ROOT/bin:$PATH

log() { echo "fuzz: $*" >&2; }

# The lines of a libFuzzer log that say what crashed and where the input is.
show_crash() {
	grep -E -A1 "panicked at" "$1" | head -n 4 >&2 || true
	grep -E "^Running: |ERROR: libFuzzer|Test unit written|^==[0-9]+== ERROR" "$1" | tail -n 4 >&2 || true
}

# 1. cargo-fuzz.
if ! cargo-fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
	log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CARGO_FUZZ_ROOT"
	cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
		--root "$CARGO_FUZZ_ROOT"
fi

# 2. Build.
cd "$FUZZ"
log "building ($(rustc --version), sanitizer $SANITIZER)"
for t in $TARGETS; do
	cargo fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t" >&2
done

passed=0
failed=0
declare -A broken=()

# 3. Replay: regressions first (inputs that crashed once), then the seeds.
for t in $TARGETS; do
	inputs=()
	for f in "$FUZZ/regressions/$t"/* "$FUZZ/corpus/$t"/*; do
		[ -f "$f" ] && inputs+=("$f")
	done
	[ ${#inputs[@]} -gt 0 ] || continue
	out=$(mktemp)
	if "$BIN/$t" -timeout=10 "${inputs[@]}" >"$out" 2>&1; then
		log "$t: replayed ${#inputs[@]} inputs"
	else
		show_crash "$out"
		log "$t: replay crashed (see above; full log $out)"
		broken[$t]=1
		continue
	fi
	rm -f "$out"
done

# 4. Fuzz.
for t in $TARGETS; do
	if [ -n "${broken[$t]:-}" ]; then
		echo "fuzz: $t: 0 execs, 0 corpus, 1 crashes (replay)"
		failed=$((failed + 1))
		continue
	fi
	work=$FUZZ/work/$t
	artifacts=$FUZZ/artifacts/$t
	mkdir -p "$work" "$artifacts"
	out=$(mktemp)
	status=0
	"$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
		-dict="$FUZZ/dict/tpm.dict" -artifact_prefix="$artifacts/" \
		"$work" "$FUZZ/corpus/$t" >"$out" 2>&1 || status=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
	[ -n "$execs" ] || execs=$( (grep -oE '^#[0-9]+' "$out" || true) | tail -n 1 | tr -d '#')
	corpus=$( (grep -oE 'corp: [0-9]+' "$out" || true) | tail -n 1 | grep -oE '[0-9]+' || true)
	crashes=0
	if [ "$status" -ne 0 ]; then
		crashes=1
		show_crash "$out"
		log "$t: crashed (full log $out)"
		failed=$((failed + 1))
	else
		passed=$((passed + 1))
		rm -f "$out"
	fi
	echo "fuzz: $t: ${execs:-0} execs, ${corpus:-0} corpus, $crashes crashes"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
