#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks that KDIR is a kernel tpmrs can be built against, with the toolchain given, before
# Kbuild runs: one line per problem, saying what to do, instead of a wall of compiler errors.
#
# usage: scripts/check-kernel.sh KDIR
# Environment (as passed to the kernel's make): LLVM, CC, RUSTC, BINDGEN, CLIPPY_DRIVER
# (checked only when set); TPMRS_KDIR_DEFAULT=1 when KDIR is the running kernel's tree because
# none was given (plain `make`). Prints nothing and exits 0 when everything is fine.
set -uo pipefail

kdir=${1:?usage: check-kernel.sh KDIR}
bad=0
fail() { printf 'tpmrs: %s\n' "$*" >&2; bad=1; }
warn() { printf 'tpmrs: warning: %s\n' "$*" >&2; }
conf() { sed -n "s/^$1=//p" "$kdir/.config" | sed 's/^"\(.*\)"$/\1/'; }

# --- the kernel build directory ------------------------------------------------------------
if [ "${TPMRS_KDIR_DEFAULT:-0}" = 1 ] && [ ! -d "$kdir" ]; then
	fail "no build tree for the running kernel $(uname -r) ($kdir is missing): install its headers (Debian: linux-headers-$(uname -r)), pass KDIR=/path/to/a/Rust-enabled/kernel/build, or 'make dev' for the cached dev kernel"
	exit 1
fi
if [ ! -d "$kdir" ]; then
	fail "KDIR=$kdir does not exist: point KDIR at a kernel build directory (e.g. /lib/modules/\$(uname -r)/build)"
	exit 1
fi
if [ ! -f "$kdir/.config" ] || [ ! -f "$kdir/Makefile" ]; then
	fail "KDIR=$kdir is not a configured kernel build (no .config or Makefile): use the kernel's build directory (O=...) or its headers package"
	exit 1
fi
# Rust first: without it nothing else matters (one line for a distribution kernel).
if [ "$(conf CONFIG_RUST)" != y ] && [ "${TPMRS_KDIR_DEFAULT:-0}" = 1 ]; then
	fail "the running kernel $(uname -r) has no Rust support (CONFIG_RUST is not y in $kdir/.config): tpmrs cannot be built for it; pass KDIR=/path/to/a/Rust-enabled/kernel/build, or 'make dev' for the cached dev kernel"
	exit 1
elif [ "$(conf CONFIG_RUST)" != y ]; then
	fail "the kernel has no Rust support (CONFIG_RUST is not y in $kdir/.config): rebuild it with CONFIG_RUST=y ('make rustavailable' in the kernel tree says what is missing)"
	exit 1
fi
if [ ! -f "$kdir/include/config/auto.conf" ] || [ ! -f "$kdir/include/generated/autoconf.h" ]; then
	fail "KDIR=$kdir is configured but not prepared (no include/config/auto.conf): run 'make modules_prepare' (better: a full 'make') in it"
fi
if [ ! -f "$kdir/Module.symvers" ]; then
	fail "KDIR=$kdir has no Module.symvers: build the kernel there first ('make all', not only bzImage) or use the kernel's headers package"
fi

[ "$(conf CONFIG_MODULES)" = y ] || fail "the kernel has CONFIG_MODULES off: it cannot load tpmrs.ko; enable CONFIG_MODULES and rebuild the kernel"
case "$(conf CONFIG_TCG_TPM)" in
y | m) ;;
*) fail "the kernel has no TPM support (CONFIG_TCG_TPM is not set): rebuild it with CONFIG_TCG_TPM=y (and the driver for your TPM: TCG_TIS, TCG_CRB, ...)" ;;
esac
if [ ! -f "$kdir/rust/libkernel.rmeta" ] || [ ! -f "$kdir/include/generated/rustc_cfg" ]; then
	fail "KDIR=$kdir lacks the kernel's compiled Rust crates (rust/libkernel.rmeta, include/generated/rustc_cfg): build the kernel there first ('make all')"
fi

# --- rustc: exactly the one the kernel was built with ---------------------------------------
want_rustc=$(conf CONFIG_RUSTC_VERSION_TEXT)
rustc=${RUSTC:-rustc}
if ! have_rustc=$("$rustc" --version 2>/dev/null); then
	fail "RUSTC=$rustc does not run: pass RUSTC=/path/to/the rustc the kernel was built with ($want_rustc)"
elif [ "$have_rustc" != "$want_rustc" ]; then
	hint=""
	for r in /usr/bin/rustc /usr/bin/rustc-* /usr/local/bin/rustc "$HOME"/.cargo/bin/rustc; do
		[ -x "$r" ] && [ "$("$r" --version 2>/dev/null)" = "$want_rustc" ] && { hint=" ($r is that one: pass RUSTC=$r)"; break; }
	done
	fail "RUSTC=$rustc is '$have_rustc' but the kernel was built with '$want_rustc': modules must use the same rustc$hint"
fi
if [ -n "${CLIPPY_DRIVER:-}" ]; then
	if ! have_clippy=$("$CLIPPY_DRIVER" --rustc --version 2>/dev/null); then
		fail "CLIPPY_DRIVER=$CLIPPY_DRIVER does not run: install clippy for the kernel's rustc (Debian: rust-web-clippy)"
	elif [ "$have_clippy" != "$want_rustc" ]; then
		fail "CLIPPY_DRIVER=$CLIPPY_DRIVER is built on '$have_clippy', the kernel on '$want_rustc': use the clippy-driver of the kernel's rustc"
	fi
fi

# --- C compiler: clang of the same version when the kernel was built with clang --------------
llvm=${LLVM:-}
if [ -n "${CC:-}" ]; then
	cc=$CC
elif [ -z "$llvm" ] || [ "$llvm" = 0 ]; then
	cc=gcc
elif [ "$llvm" = 1 ]; then
	cc=clang
elif [[ $llvm == */ ]]; then
	cc=${llvm}clang
else
	cc=clang$llvm
fi
want_cc=$(conf CONFIG_CC_VERSION_TEXT)
if [ "$(conf CONFIG_CC_IS_CLANG)" = y ]; then
	want_clang=$(conf CONFIG_CLANG_VERSION) # e.g. 190107 for 19.1.7
	major=$((want_clang / 10000))
	if [ "$cc" = gcc ]; then
		fail "the kernel was built with clang ($want_cc) but no LLVM= was given: pass LLVM=-$major (or LLVM=1 if 'clang' is version $major)"
	elif ! command -v "$cc" >/dev/null 2>&1; then
		if [ -n "${CC:-}" ]; then what="CC=$cc"; else what="LLVM=$llvm means the C compiler '$cc', which"; fi
		fail "$what is not installed: install clang $major (Debian: clang-$major lld-$major llvm-$major) or pass LLVM=-$major if it is installed as clang-$major"
	else
		# What scripts/cc-version.sh computes: major * 10000 + minor * 100 + patch.
		have_clang=$(echo __clang_major__ __clang_minor__ __clang_patchlevel__ |
			"$cc" -E -P -x c - 2>/dev/null | awk 'NF == 3 {print $1 * 10000 + $2 * 100 + $3}')
		if [ -z "$have_clang" ]; then
			warn "could not read the version of '$cc' (kernel: $want_cc)"
		elif [ "$have_clang" != "$want_clang" ]; then
			fail "'$cc' is clang $have_clang but the kernel was built with $want_cc (CONFIG_CLANG_VERSION=$want_clang): pass the LLVM= of that clang (LLVM=-$major)"
		fi
	fi
elif [ "$(conf CONFIG_CC_IS_GCC)" = y ]; then
	if [ "$cc" != gcc ] && [[ $cc != *gcc* ]]; then
		fail "the kernel was built with gcc ($want_cc) but LLVM=$llvm selects '$cc': drop LLVM= (or pass LLVM= to override it)"
	elif ! have_cc=$("$cc" --version 2>/dev/null | head -n1); then
		fail "the C compiler '$cc' is not installed: install $want_cc"
	elif [ "$have_cc" != "$want_cc" ]; then
		warn "'$cc' is '$have_cc', the kernel was built with '$want_cc'"
	fi
fi

# --- bindgen --------------------------------------------------------------------------------
# Out-of-tree modules use the kernel's pre-generated bindings (rust/libbindings.rmeta), so
# bindgen is not run to build tpmrs; it is needed only to (re)build the kernel itself.
want_bindgen=$(conf CONFIG_BINDGEN_VERSION_TEXT)
if [ -n "${BINDGEN:-}" ]; then
	if ! have_bindgen=$("$BINDGEN" --version 2>/dev/null); then
		warn "BINDGEN=$BINDGEN is not installed (only needed to build the kernel, not tpmrs; the kernel used $want_bindgen; scripts/setup.sh installs it)"
	elif [ -n "$want_bindgen" ] && [ "$have_bindgen" != "$want_bindgen" ]; then
		warn "BINDGEN=$BINDGEN is '$have_bindgen', the kernel was built with '$want_bindgen' (only matters for rebuilding the kernel)"
	fi
fi

exit "$bad"
