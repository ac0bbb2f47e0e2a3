#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make run`: load tpmrs and use /dev/tpmrs0 with an unmodified TSS client (tpm2-tools over
# tpm2-tss's device TCTI): random numbers, a primary key, a signing key, a signature that
# verifies, an HMAC session, and the handles the space sees.
set -euo pipefail
export TPM2TOOLS_TCTI=device:/dev/tpmrs0
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

insmod "$TPMRS_KO"
dmesg | grep -E 'tpmrs|KTAP|ok [0-9]+ ' | tail -n 12
ls -l /dev/tpmrs0 /dev/tpmrm0
cd "$(mktemp -d)"
say tpm2 getrandom --hex 16; echo
say tpm2 createprimary -C o -g sha256 -G ecc256 -c primary.ctx
say tpm2 create -C primary.ctx -G ecc256 -u key.pub -r key.priv
say tpm2 load -C primary.ctx -u key.pub -r key.priv -c key.ctx
echo "hello from tpmrs" >msg.txt
say tpm2 startauthsession -S session.ctx --hmac-session
say tpm2 sign -c key.ctx -g sha256 -o sig.bin -p session:session.ctx msg.txt
say tpm2 flushcontext session.ctx
say tpm2 verifysignature -c key.ctx -g sha256 -m msg.txt -s sig.bin
echo "signature verified"
say tpm2 getcap handles-transient
say tpm2 getcap handles-loaded-session
echo
echo "tpmrs demo: all commands succeeded through /dev/tpmrs0"
