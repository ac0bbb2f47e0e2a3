#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Compares a third-party suite's results on /dev/tpmrs0 with its /dev/tpmrm0 results (a run
of the same guest, or the baseline kept in tests/thirdparty/).

usage: compare.py SUITE TPMRM0_RESULTS TPMRS0_RESULTS
Prints the counts per node and the tests that fail only on tpmrs0 (a failure that tpmrm0
does not have, or a failing test tpmrm0's results do not list), and the other way round.
Exit status: 0 when nothing fails only on tpmrs0 and both lists name the same tests, 1
otherwise."""

import sys


def load(path):
    res = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        outcome, name = line.split(None, 1)
        if outcome not in ("PASS", "FAIL", "SKIP"):
            raise SystemExit(f"{path}: bad line {line!r}")
        res[name] = outcome
    return res


def counts(res):
    return ", ".join(f"{sum(1 for v in res.values() if v == k)} {k.lower()}" for k in ("PASS", "FAIL", "SKIP"))


def main(suite, rm_path, rs_path):
    rm, rs = load(rm_path), load(rs_path)
    print(f"thirdparty: {suite} on tpmrm0: {counts(rm)}  ({rm_path})")
    print(f"thirdparty: {suite} on tpmrs0: {counts(rs)}  ({rs_path})")
    only_rs = sorted(n for n, v in rs.items() if v == "FAIL" and rm.get(n) != "FAIL")
    only_rm = sorted(n for n, v in rm.items() if v == "FAIL" and rs.get(n) == "PASS")
    both = sorted(n for n, v in rs.items() if v == "FAIL" and rm.get(n) == "FAIL")
    missing = sorted(set(rm) - set(rs))
    print(f"thirdparty: {suite}: fail on both nodes: {len(both)}")
    for n in both:
        print(f"    both:         {n}")
    print(f"thirdparty: {suite}: only on tpmrs0: {len(only_rs)}")
    for n in only_rs:
        print(f"    only tpmrs0:  {n}{'' if n in rm else '  (not in the tpmrm0 list)'}")
    if only_rm:
        print(f"thirdparty: {suite}: only on tpmrm0 (the baseline may be stale): {len(only_rm)}")
        for n in only_rm:
            print(f"    only tpmrm0:  {n}")
    if missing:
        print(f"thirdparty: {suite}: {len(missing)} tests of the tpmrm0 list did not run on tpmrs0")
        for n in missing[:20]:
            print(f"    not run:      {n}")
    return 0 if not only_rs and not missing else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
