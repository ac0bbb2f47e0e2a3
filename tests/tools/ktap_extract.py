#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Prints the KTAP document of one KUnit suite from a kernel log.

The log holds several top-level KTAP documents: the built-in suites' at boot, then one per
module insmod. kunit.py parse reads only the first, so the document whose suite is SUITE is
cut out here and handed to it.

usage: ktap_extract.py KERNEL_LOG SUITE"""

import re
import sys

TS = re.compile(r"^\[\s*\d+\.\d+\] ")


def main(path, suite):
    lines = [TS.sub("", line.rstrip("\n")) for line in open(path, errors="replace")]
    starts = [i for i, line in enumerate(lines) if line == "KTAP version 1"] + [len(lines)]
    for a, b in zip(starts, starts[1:]):
        doc = lines[a:b]
        if any(line.strip() == f"# Subtest: {suite}" for line in doc):
            print("\n".join(doc))
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
