# SPDX-License-Identifier: GPL-2.0
#
# tpmrs: out-of-tree build and developer entry points.
#
#   make                 build tpmrs.ko against KDIR (default: the cached debug dev kernel,
#                        built on first use by scripts/kernel.sh)
#   make KDIR=/path      build against any other Rust-enabled kernel build tree
#   make clippy          the same build with clippy as the Rust compiler
#   make fmt-check       rustfmt (kernel .rustfmt.toml) over every Rust source
#   make setup|run|test  scripts/setup.sh, scripts/run.sh, scripts/test.sh
#
# The kernel's own toolchain is always passed explicitly: rustup's rustc on PATH has no
# library sources and cannot build kernel code (see ../shared/docs/toolchain.md).

TPMRS_CACHE ?= $(HOME)/.cache/tpmrs
LLVM ?= -19
RUSTC ?= /usr/bin/rustc
KMAKE_VARS ?= LLVM=$(LLVM) RUSTC=$(RUSTC) RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc \
	BINDGEN=$(TPMRS_CACHE)/bindgen/bin/bindgen
FLAVOR ?= debug
# KDIR is resolved in the recipes, so that targets which do not need a kernel never build one.
kdir = $${KDIR:-$$(scripts/kernel.sh $(FLAVOR))}

.PHONY: all modules clippy fmt fmt-check clean setup kernel run test bench
all: modules

modules:
	@k=$(kdir) && $(MAKE) -C "$$k" M=$(CURDIR) $(KMAKE_VARS) modules

clippy:
	@k=$(kdir) && $(MAKE) -C "$$k" M=$(CURDIR) $(KMAKE_VARS) CLIPPY=1 \
		CLIPPY_DRIVER=/usr/bin/clippy-driver modules

RUST_SOURCES = $(shell find rust tests -name '*.rs' -not -path '*/target/*')
fmt:
	@/usr/bin/rustfmt --edition 2021 --config-path scripts/rustfmt.toml $(RUST_SOURCES)
fmt-check:
	@/usr/bin/rustfmt --check --edition 2021 --config-path scripts/rustfmt.toml $(RUST_SOURCES)

clean:
	@if [ -n "$$KDIR" ] || ls -d $(TPMRS_CACHE)/build/*/ >/dev/null 2>&1; then \
		k=$${KDIR:-$$(ls -d $(TPMRS_CACHE)/build/*/ | head -n1)}; \
		$(MAKE) -C "$$k" M=$(CURDIR) $(KMAKE_VARS) clean; fi
	@rm -rf target

setup:
	@scripts/setup.sh
kernel:
	@scripts/kernel.sh $(FLAVOR)
run:
	@scripts/run.sh
test:
	@scripts/test.sh
