#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Counts the commands that reached a swtpm, by command code, from its level-20 log
(`swtpm ... --log file=F,level=20`, see scripts/guest.sh TPMRS_SWTPM_LOG=1). This is the
measurement "from the swtpm side": independent of what tpmrs or tpmrm0 say about themselves.

usage: swtpm_count.py LOG [START_MARK_OFFSET]   prints "cc count name" lines and a total"""

import sys
from collections import Counter

NAMES = {
    0x161: "ContextLoad", 0x162: "ContextSave", 0x165: "FlushContext", 0x17B: "GetRandom",
    0x17A: "GetCapability", 0x176: "StartAuthSession", 0x15D: "Sign", 0x131: "CreatePrimary",
    0x157: "Load", 0x153: "Create", 0x144: "Startup", 0x143: "SelfTest", 0x173: "ReadPublic",
    0x155: "HMAC", 0x17E: "PCR_Read", 0x139: "DictionaryAttackLockReset",
}


def commands(lines):
    """Yields the command code of every command read by swtpm."""
    it = iter(lines)
    for line in it:
        if "SWTPM_IO_Read:" in line:
            data = next(it, "").split()
            if len(data) >= 10:
                yield int("".join(data[6:10]), 16)


def count(path, offset=0):
    with open(path, errors="replace") as f:
        f.seek(offset)
        return Counter(commands(f))


if __name__ == "__main__":
    c = count(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for cc, n in sorted(c.items(), key=lambda kv: -kv[1]):
        print(f"0x{cc:03x} {n:6d} {NAMES.get(cc, '')}")
    print(f"total {sum(c.values())}")
