#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Sets up, builds and runs tpmrs: installs what is missing, builds the dev kernel (cached) and
# the module, boots the guest with a fresh swtpm, loads tpmrs and drives /dev/tpmrs0 with
# tpm2-tools (tests/guest/demo.sh), showing the console. TPMRS_INTERACTIVE=1 leaves you a
# root shell in the guest afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
cd "$TPMRS_ROOT"

"$here/setup.sh"
kdir=$("$here/kernel.sh" "${FLAVOR:-debug}")
make -s KDIR="$kdir" modules
out=$TPMRS_ROOT/target/run
TPMRS_SHOW_CONSOLE=1 "$here/guest.sh" "$kdir" tests/guest/demo.sh "$out"
rc=$(cat "$out/script.rc" 2>/dev/null || echo 1)
echo "[run] demo exited with $rc (console log: $out/console.log)"
exit "$rc"
