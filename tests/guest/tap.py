#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A minimal TAP runner for the guest tests (standard library only: it runs on the host's
python3 inside the guest). Every function named test_* in the given modules is a test; a test
passes when it returns without raising. Output: TAP version 13 on stdout. TPMRS_GUEST_EXCLUDE
(comma-separated `module.test` names or shell patterns, `*_tpmrm0`) leaves tests out of the
plan: they are not run, and not counted."""

import fnmatch
import importlib.util
import os
import sys
import time
import traceback


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(paths):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tpm  # noqa: PLC0415 - from this directory, on the path set just above
    excluded = {n for n in os.environ.get("TPMRS_GUEST_EXCLUDE", "").split(",") if n}
    # Only these (fnmatch patterns, comma-separated), when set: for a developer's run.
    only = {n for n in os.environ.get("TPMRS_GUEST_ONLY", "").split(",") if n}
    tests = []
    for path in paths:
        mod = load(path)
        for name, fn in vars(mod).items():
            full = f"{mod.__name__}.{name}"
            def matches(patterns, full=full, name=name):
                return any(fnmatch.fnmatchcase(full, x) or fnmatch.fnmatchcase(name, x) for x in patterns)
            if name.startswith("test_") and callable(fn) and not matches(excluded) and (
                    not only or matches(only)):
                tests.append((f"{mod.__name__}.{name}", fn, getattr(mod, "setup_each", None)))
    print("TAP version 13", flush=True)
    print(f"1..{len(tests)}", flush=True)
    failed = 0
    for i, (name, fn, setup) in enumerate(tests, 1):
        start = time.monotonic()
        # Closes are done on tpmrs' workqueue: let the last test's finish first.
        tpm.settle()
        try:
            if setup:
                setup()
            fn()
        except Exception:  # noqa: BLE001 - any exception fails the test
            failed += 1
            print(f"not ok {i} - {name}", flush=True)
            for line in traceback.format_exc().rstrip().splitlines():
                print(f"# {line}", flush=True)
        else:
            print(f"ok {i} - {name} # {time.monotonic() - start:.2f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
