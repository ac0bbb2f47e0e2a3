#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Idempotent set-up of everything tpmrs needs on a Debian 12 (bookworm) machine:
# Debian packages, bindgen-cli (pinned, from crates.io) and the Linux 7.3 sources taken from
# Debian's linux-source-7.3 package through a *private* apt configuration (the system's apt
# sources are never changed).
#
# Everything that is downloaded or built lives under $TPMRS_CACHE (default ~/.cache/tpmrs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

log() { printf '[setup] %s\n' "$*"; }

PKGS=(rustc-web rust-web-src libstd-rust-web-dev rust-web-clippy rustfmt-web
      clang-19 lld-19 llvm-19 libclang-19-dev flex bison bc libelf-dev libssl-dev
      cpio kmod python3 xz-utils qemu-system-x86 swtpm swtpm-tools tpm2-tools
      libtss2-tcti-device0 libtss2-tcti-swtpm0 python3-docutils
      libtss2-dev pkg-config gcc python3-dev python3-venv)  # the third-party TSS suites

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	log "Debian packages present"
fi

# bindgen-cli, pinned; the kernel needs >= 0.71.1.
if [ ! -x "$BINDGEN" ]; then
	log "installing bindgen-cli $BINDGEN_VERSION into $TPMRS_CACHE/bindgen"
	cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION" \
		--root "$TPMRS_CACHE/bindgen"
else
	log "bindgen present: $("$BINDGEN" --version)"
fi

# Linux sources from Debian's linux-source-7.3 (trixie-backports), via a private apt config.
if [ ! -f "$KSRC/Makefile" ]; then
	apt_dir="$TPMRS_CACHE/apt"
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
	# The same Debian mirror the system uses, another suite, in a private sources.list.
	mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=$(awk '/^deb / && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie-backports main" \
		>"$apt_dir/sources.list"
	aptopts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/nonexistent
		 -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
		 -o APT::Get::List-Cleanup=0)
	log "fetching linux-source-$KVER_SERIES through a private apt configuration"
	apt-get "${aptopts[@]}" update -qq
	(cd "$apt_dir/deb" && apt-get "${aptopts[@]}" download "linux-source-$KVER_SERIES")
	deb=$(ls "$apt_dir"/deb/linux-source-"$KVER_SERIES"_*.deb | tail -n1)
	log "unpacking $(basename "$deb")"
	rm -rf "$apt_dir/x" && mkdir -p "$apt_dir/x"
	dpkg -x "$deb" "$apt_dir/x"
	rm -rf "$KSRC.tmp" && mkdir -p "$KSRC.tmp"
	tar -C "$KSRC.tmp" --strip-components=1 -xf "$apt_dir/x/usr/src/linux-source-$KVER_SERIES.tar.xz"
	rm -rf "$apt_dir/x" "$KSRC" && mv "$KSRC.tmp" "$KSRC"
else
	log "kernel sources present: $KSRC"
fi

make -C "$KSRC" "${KMAKE_VARS[@]}" rustavailable >/dev/null
# The third-party TSS test suites (tss-esapi, tpm2-pytss), built once under $TPMRS_CACHE.
"$here/setup-thirdparty.sh"
log "done"
