# SPDX-License-Identifier: GPL-2.0
#
# tpmrs: out-of-tree build and developer entry points.
#
#   make                 build tpmrs.ko against the running kernel, like every out-of-tree
#                        module: KDIR defaults to /lib/modules/$(uname -r)/build; if that tree
#                        is missing, has no Rust support or needs another toolchain, one line
#                        per problem says so (scripts/check-kernel.sh) and nothing is built
#   make KDIR=/path      build against any other Rust-enabled kernel build tree
#   make dev             build against the cached debug dev kernel (scripts/kernel.sh builds it
#                        on first use, about 25 minutes); run, test and bench use it too
#   make clippy          the same build with clippy as the Rust compiler
#   make check-kernel    only check KDIR and the toolchain (done before every build)
#   make check           host-only checks, no kernel and no guest: rustfmt, docs, cargo test
#                        (with swtpm), clippy and doc of the core, a short fuzz run
#   make install         build, then install tpmrs.ko into /lib/modules/<KDIR's release>/updates,
#                        run depmod and install the udev rule (DESTDIR=... for packaging)
#   make uninstall       remove what install installed
#   make dkms-source     copy the module sources and dkms.conf to /usr/src/tpmrs-<version>
#   make install-tcti    make /dev/tpmrs0 every TSS client's TPM: environment.d, profile.d,
#                        systemd DefaultEnvironment, FAPI's fapi-config.json, and resident
#                        contexts (modprobe.d: resident=1) (uninstall-tcti)
#   make install-close-tpmrm   opt-in udev rule: /dev/tpmrm0 root-only (uninstall-close-tpmrm)
#   make rustdoc         rustdoc of the protocol core (cargo) and of the module (kernel flags)
#   make doc-check       lint Documentation/*.rst (docutils) and the C kernel-doc comments
#   make fmt-check       rustfmt (kernel .rustfmt.toml) over every Rust source
#   make setup|run|test  scripts/setup.sh, scripts/run.sh, scripts/test.sh
#   make bench           scripts/bench.sh (tpmrs0 against tpmrm0 on the bench kernel)
#   make thirdparty-baseline  the third-party TSS suites on tpmrm0 and tpmrs0 side by side;
#                        rewrites the tpmrm0 baselines make test compares with
#
# The kernel's own toolchain is always passed explicitly: rustup's rustc on PATH has no
# library sources and cannot build kernel code (RUSTC defaults to /usr/bin/rustc, Debian's
# rustc-web; pass the one your kernel was built with).

TPMRS_CACHE ?= $(HOME)/.cache/tpmrs
LLVM ?= -19
RUSTC ?= /usr/bin/rustc
KMAKE_VARS ?= LLVM=$(LLVM) RUSTC=$(RUSTC) RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc \
	BINDGEN=$(TPMRS_CACHE)/bindgen/bin/bindgen
FLAVOR ?= debug

# DKMS 3.0 appends CC=clang LD=ld.lld to the MAKE line of a kernel built with clang: those name
# the unversioned tools, which Debian's clang-19 does not provide. LLVM= already selects the
# kernel's clang and lld, so when LLVM is given these two are dropped (here and for Kbuild).
ifneq ($(filter-out 0,$(LLVM)),)
ifeq ($(origin CC) $(CC),command line clang)
override CC :=
endif
ifeq ($(origin LD) $(LD),command line ld.lld)
override LD :=
endif
MAKEOVERRIDES := $(filter-out CC=clang LD=ld.lld,$(MAKEOVERRIDES))
endif
# KDIR is resolved in the recipes (from the make command line or the environment): the
# running kernel's build tree unless given. scripts/run.sh, test.sh and bench.sh pass the dev
# kernel's. TPMRS_KDIR_DEFAULT tells check-kernel.sh that KDIR was not chosen by the user.
kdir = $${KDIR:-/lib/modules/$$(uname -r)/build}
kdir_default = $(if $(KDIR),,TPMRS_KDIR_DEFAULT=1)
# The cached dev kernel. kernel.sh runs its own make: it must not inherit ours (under
# `make -n`, its `make kernelversion` would only print the command).
devkdir = $$(MAKEFLAGS= MFLAGS= MAKELEVEL= scripts/kernel.sh $(FLAVOR))
submake := $(MAKE)
# scripts/check-kernel.sh "$$k": one line per problem with KDIR or the toolchain, then fail.
check = LLVM='$(LLVM)' RUSTC='$(RUSTC)' BINDGEN='$(TPMRS_CACHE)/bindgen/bin/bindgen' \
	$(kdir_default) scripts/check-kernel.sh "$$k"

# Installation. DESTDIR is a staging root for packages: nothing outside it is touched and
# depmod/udevadm are left to the package's scripts.
VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' dkms.conf)
DESTDIR ?=
# Kbuild's modules_install runs in KDIR: a relative DESTDIR must be made absolute first.
destdir = $(if $(DESTDIR),$(abspath $(DESTDIR)))
INSTALL_MOD_DIR ?= updates
UDEVRULESDIR ?= /etc/udev/rules.d
DKMS_SRCDIR ?= /usr/src/tpmrs-$(VERSION)
KSRC ?= $(TPMRS_CACHE)/linux-source-7.3

.PHONY: all modules dev clippy check-kernel check fmt fmt-check clean setup kernel run test \
	bench thirdparty-baseline install uninstall dkms-source rustdoc doc-check install-tcti \
	uninstall-tcti install-close-tpmrm uninstall-close-tpmrm
all: modules

modules:
	@k=$(kdir) && $(check) && $(MAKE) -C "$$k" M=$(CURDIR) $(KMAKE_VARS) modules

# Not $(MAKE) here: a recipe line that names it runs even under `make -n`, and this one may
# build a kernel.
dev:
	@k=$(devkdir) && $(submake) --no-print-directory KDIR="$$k" modules

clippy:
	@k=$(kdir) && CLIPPY_DRIVER=/usr/bin/clippy-driver $(check) && \
		$(MAKE) -C "$$k" M=$(CURDIR) $(KMAKE_VARS) CLIPPY=1 \
		CLIPPY_DRIVER=/usr/bin/clippy-driver modules

check-kernel:
	@k=$(kdir) && $(check) && echo "tpmrs: $$k is usable ($$(cat "$$k/include/config/kernel.release"))"

install: modules
	@k=$(kdir) && $(MAKE) -s -C "$$k" M=$(CURDIR) $(KMAKE_VARS) INSTALL_MOD_PATH=$(destdir) \
		INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) DEPMOD=true modules_install
	@install -D -m 0644 udev/60-tpmrs.rules $(DESTDIR)$(UDEVRULESDIR)/60-tpmrs.rules
	@set -e; k=$(kdir); kver=$$(cat "$$k/include/config/kernel.release"); \
	echo "tpmrs: installed $(DESTDIR)/lib/modules/$$kver/$(INSTALL_MOD_DIR)/tpmrs.ko and $(DESTDIR)$(UDEVRULESDIR)/60-tpmrs.rules"; \
	if [ -z "$(DESTDIR)" ]; then \
		depmod -a "$$kver"; \
		if command -v udevadm >/dev/null && [ -d /run/udev ]; then \
			udevadm control --reload-rules || true; \
			udevadm trigger --action=add --subsystem-match=misc --sysname-match='tpmrs[0-9]*' || true; \
		fi; \
		getent group tss >/dev/null || echo "tpmrs: note: there is no 'tss' group yet: /dev/tpmrs0 stays root-only until one exists (Debian: apt install tpm-udev)"; \
		[ "$$kver" = "$$(uname -r)" ] || echo "tpmrs: note: installed for $$kver, the running kernel is $$(uname -r)"; \
		echo "tpmrs: load it with: modprobe tpmrs"; \
	fi

uninstall:
	@set -e; k=$(kdir); kver=$$(cat "$$k/include/config/kernel.release"); \
	rm -f $(DESTDIR)/lib/modules/$$kver/$(INSTALL_MOD_DIR)/tpmrs.ko* \
		$(DESTDIR)/lib/modules/$$kver/$(INSTALL_MOD_DIR)/tpmrs_kunit.ko*; \
	rm -f $(DESTDIR)$(UDEVRULESDIR)/60-tpmrs.rules; \
	if [ -z "$(DESTDIR)" ]; then depmod -a "$$kver"; \
		command -v udevadm >/dev/null && [ -d /run/udev ] && udevadm control --reload-rules || true; fi; \
	echo "tpmrs: removed tpmrs.ko for $$kver and the udev rule"

# tpmrs as the machine's TPM for TSS clients (Documentation/tpmrs.rst, "The machine's default
# TPM"). FAPI's config is edited in place (its "tcti" only), keeping the original once as
# fapi-config.json.tpmrs-orig; with DESTDIR the system's copy is staged first.
FAPICONF ?= /etc/tpm2-tss/fapi-config.json
# The module's options: resident=1 (kept beside an existing file's own options, whose original
# is kept as tpmrs.conf.tpmrs-orig).
MODPROBECONF ?= /etc/modprobe.d/tpmrs.conf
install-tcti:
	@set -e; install -D -m 0644 tcti/tpmrs.env $(DESTDIR)/etc/environment.d/60-tpmrs.conf; \
	install -D -m 0644 tcti/profile.sh $(DESTDIR)/etc/profile.d/tpmrs.sh; \
	install -D -m 0644 tcti/system.conf $(DESTDIR)/etc/systemd/system.conf.d/60-tpmrs.conf; \
	f=$(DESTDIR)$(FAPICONF); \
	if [ ! -e "$$f" ] && [ -e "$(FAPICONF)" ]; then install -D -m 0644 "$(FAPICONF)" "$$f"; fi; \
	if [ -e "$$f" ]; then [ -e "$$f.tpmrs-orig" ] || cp "$$f" "$$f.tpmrs-orig"; \
		sed -i 's#"tcti": *"[^"]*"#"tcti": "device:/dev/tpmrs0"#' "$$f"; \
	else echo "tpmrs: no $(FAPICONF) (FAPI not installed): skipped"; fi; \
	m=$(DESTDIR)$(MODPROBECONF); \
	if [ ! -e "$$m" ]; then install -D -m 0644 tcti/modprobe.conf "$$m"; \
	elif ! grep -q '^options tpmrs resident=1' "$$m"; then \
		[ -e "$$m.tpmrs-orig" ] || cp "$$m" "$$m.tpmrs-orig"; cat tcti/modprobe.conf >>"$$m"; fi; \
	echo "tpmrs: TSS clients now default to /dev/tpmrs0 (new logins; services after systemctl daemon-reexec)"; \
	echo "tpmrs: resident contexts on from the next load of the module ($(MODPROBECONF))"
uninstall-tcti:
	@rm -f $(DESTDIR)/etc/environment.d/60-tpmrs.conf $(DESTDIR)/etc/profile.d/tpmrs.sh \
		$(DESTDIR)/etc/systemd/system.conf.d/60-tpmrs.conf
	@f=$(DESTDIR)$(FAPICONF); [ ! -e "$$f.tpmrs-orig" ] || mv "$$f.tpmrs-orig" "$$f"
	@m=$(DESTDIR)$(MODPROBECONF); \
	if [ -e "$$m.tpmrs-orig" ]; then mv "$$m.tpmrs-orig" "$$m"; \
	elif [ -e "$$m" ] && cmp -s tcti/modprobe.conf "$$m"; then rm -f "$$m"; fi
install-close-tpmrm:
	@install -D -m 0644 udev/90-tpmrs-close-tpmrm.rules $(DESTDIR)$(UDEVRULESDIR)/90-tpmrs-close-tpmrm.rules
	@if [ -z "$(DESTDIR)" ] && command -v udevadm >/dev/null && [ -d /run/udev ]; then \
		udevadm control --reload-rules; udevadm trigger --action=change --subsystem-match=tpmrm; fi
uninstall-close-tpmrm:
	@rm -f $(DESTDIR)$(UDEVRULESDIR)/90-tpmrs-close-tpmrm.rules
	@if [ -z "$(DESTDIR)" ] && command -v udevadm >/dev/null && [ -d /run/udev ]; then \
		udevadm control --reload-rules; udevadm trigger --action=change --subsystem-match=tpmrm; fi

# What DKMS needs to build the module: no tests, no build products, no cargo target/.
dkms-source:
	@set -e; d=$(DESTDIR)$(DKMS_SRCDIR); rm -rf "$$d"; mkdir -p "$$d"; \
	tar -cf - Makefile Kbuild Kconfig dkms.conf README.md Documentation udev \
		scripts/check-kernel.sh \
		$$(find rust -path rust/proto/tests -prune -o -type f \( -name '*.rs' -o -name '*.c' \
			-o -name '*.h' -o -name Cargo.toml \) -print) | tar -C "$$d" -xf -; \
	echo "tpmrs: sources in $$d; now: dkms add tpmrs/$(VERSION) && dkms build tpmrs/$(VERSION) && dkms install tpmrs/$(VERSION)"

# Rust API documentation, warnings are errors. The protocol core through cargo; the module
# (which includes the core as `proto`) with the kernel's own rustdoc and the exact flags Kbuild
# compiled it with (read back from rust/.tpmrs_main.o.cmd): Kbuild has no rustdoc target for
# external modules (`make -C KDIR M=... rustdoc`: "No rule to make target"). Private items are
# documented because a module crate has no public API.
rustdoc: modules
	@RUSTDOCFLAGS=-Dwarnings cargo doc -q -p tpmrs-proto --no-deps --color never
	@cmd=$$(sed -n 's|^savedcmd_rust/tpmrs_main.o := ||p' rust/.tpmrs_main.o.cmd) && \
	doc=$$(printf '%s' "$$cmd" | sed -e 's#^\(\([A-Z_]*=[^ ]* \)*\)[^ ]*rustc #\1/usr/bin/rustdoc #' \
		-e 's/ --emit=[^ ]*//g' -e 's/ --out-dir [^ ]*//') && \
	rm -rf target/kernel-doc && \
	eval "RUSTC_BOOTSTRAP=1 $$doc -o target/kernel-doc --document-private-items \
		-Arustdoc::private_intra_doc_links -Dwarnings \
		-Zunstable-options --generate-link-to-definition"
	@echo "rustdoc: protocol core: $(CURDIR)/target/doc/tpmrs_proto/index.html"
	@echo "rustdoc: module:        $(CURDIR)/target/kernel-doc/tpmrs_main/index.html"

# docutils is what Sphinx parses reStructuredText with; kernel-doc is the kernel's checker for
# C doc comments and needs no Sphinx. The kernel's Sphinx build itself (make htmldocs) is not
# run: it needs python3-sphinx and covers only files inside the kernel tree.
doc-check:
	@rc=0; for f in Documentation/*.rst; do \
		/usr/bin/python3 -m docutils --report=warning --exit-status=warning "$$f" /dev/null || rc=1; \
	done; \
	if [ -x "$(KSRC)/scripts/kernel-doc" ]; then \
		out=$$("$(KSRC)/scripts/kernel-doc" -none -Wall rust/*.c 2>&1); \
		[ -z "$$out" ] || { echo "$$out"; rc=1; }; \
	else echo "doc-check: $(KSRC)/scripts/kernel-doc not found, C doc comments not checked (make setup)"; fi; \
	[ $$rc = 0 ] && echo "doc-check: Documentation/*.rst and rust/*.c kernel-doc: no warnings"; exit $$rc

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
check:
	@scripts/check.sh
bench:
	@scripts/bench.sh
thirdparty-baseline:
	@scripts/thirdparty-baseline.sh
