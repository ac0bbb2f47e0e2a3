#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# DKMS POST_INSTALL (run from the tpmrs source tree after each `dkms install`): installs the
# udev rule for /dev/tpmrs0 and applies it to a node that already exists.
set -e
rules=/etc/udev/rules.d/60-tpmrs.rules
if ! cmp -s udev/60-tpmrs.rules "$rules"; then
	install -D -m 0644 udev/60-tpmrs.rules "$rules"
	echo "tpmrs: installed $rules"
fi
if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
	udevadm control --reload-rules || :
	udevadm trigger --action=add --subsystem-match=misc --sysname-match='tpmrs[0-9]*' || :
fi
getent group tss >/dev/null 2>&1 ||
	echo "tpmrs: note: no 'tss' group: /dev/tpmrs0 stays root-only until one exists (Debian: apt install tpm-udev)"
exit 0
