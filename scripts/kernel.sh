#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the tpmrs dev kernel (flavor "debug": lockdep, KASAN, kmemleak, and the kernel's own
# TPM users of distribution kernels: HMAC sessions, hwrng, IMA; flavor "bench": the base
# config without either) into a cache outside the checkout, keyed by kernel version,
# toolchain and config hash, and prints the build directory (usable as KDIR). A second run
# with the same inputs reuses the cached build.
#
# usage: scripts/kernel.sh [debug|bench]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

flavor=${1:-debug}
frags=("$TPMRS_ROOT/kernel/base.config")
case "$flavor" in
debug) frags+=("$TPMRS_ROOT/kernel/debug.config") ;;
bench) frags+=("$TPMRS_ROOT/kernel/bench.config") ;;
*) echo "kernel.sh: unknown flavor '$flavor' (debug|bench)" >&2; exit 2 ;;
esac

kver=$(make -s -C "$KSRC" kernelversion)
key=$( { echo "$kver"; /usr/bin/rustc --version; clang-19 --version | head -n1; "$BINDGEN" --version;
	 cat "${frags[@]}"; } | sha256sum | cut -c1-16)
out=$TPMRS_CACHE/build/linux-$kver-$flavor-$key

if [ -f "$out/.tpmrs-built" ]; then
	echo "$out"
	exit 0
fi

log() { printf '[kernel] %s\n' "$*" >&2; }
log "building Linux $kver ($flavor) in $out"
rm -rf "$out" && mkdir -p "$out"
mk() { make -s -C "$KSRC" O="$out" "${KMAKE_VARS[@]}" "$@"; }
mk tinyconfig >/dev/null
(cd "$out" && KCONFIG_CONFIG=.config "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$out" .config "${frags[@]}" >/dev/null)
mk olddefconfig >/dev/null

# merge_config drops options whose dependencies are unmet without failing: check every one.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qxF "$line" "$out/.config" || { log "config: wanted '$line', got '$(grep "^${line%%=*}=" "$out/.config" || echo unset)'"; bad=1; } ;;
	"# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}; ! grep -q "^$opt=" "$out/.config" || { log "config: wanted $opt off"; bad=1; } ;;
	esac
done < <(cat "${frags[@]}")
[ "$bad" = 0 ] || { log "config fragment not honoured"; exit 1; }

start=$(date +%s)
mk -j"$(nproc)" all >"$out/build.log" 2>&1 || { tail -n 50 "$out/build.log" >&2; log "kernel build failed (log: $out/build.log)"; exit 1; }
log "built in $(( $(date +%s) - start ))s"
touch "$out/.tpmrs-built"
echo "$out"
