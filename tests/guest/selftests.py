#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Runs the kernel's own TPM 2.0 selftests (tools/testing/selftests/tpm2/tpm2_tests.py:
SmokeTest, SpaceTest, AsyncTest) against one node, printing TAP.

The selftests name their device nodes as literals in tpm2.py ('/dev/tpm0' for SmokeTest,
'/dev/tpmrm0' for the space tests); both are pointed at NODE in a private copy.

usage: selftests.py KSRC NODE"""

import os
import shutil
import sys
import tempfile
import unittest


class TapResult(unittest.TextTestResult):
    def __init__(self, node, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.node = node
        self.n = 0

    def _line(self, ok, test, note=""):
        self.n += 1
        name = f"selftest[{self.node}].{test.__class__.__name__}.{test._testMethodName}"
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}{note}", flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(True, test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(False, test)
        for line in self._exc_info_to_string(err, test).rstrip().splitlines():
            print(f"# {line}", flush=True)

    def addError(self, test, err):
        super().addError(test, err)
        self._line(False, test)
        for line in self._exc_info_to_string(err, test).rstrip().splitlines():
            print(f"# {line}", flush=True)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line(True, test, f" # SKIP {reason}")


def main(ksrc, node):
    src = os.path.join(ksrc, "tools/testing/selftests/tpm2")
    work = tempfile.mkdtemp(prefix="selftest-")
    for name in ("tpm2.py", "tpm2_tests.py"):
        with open(os.path.join(src, name)) as f:
            text = f.read()
        text = text.replace("'/dev/tpmrm0'", f"'{node}'").replace("'/dev/tpm0'", f"'{node}'")
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    sys.path.insert(0, work)
    import tpm2_tests  # noqa: E402 - the patched copy

    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for cls in ("SmokeTest", "SpaceTest", "AsyncTest"):
        suite.addTests(loader.loadTestsFromTestCase(getattr(tpm2_tests, cls)))
    print("TAP version 13", flush=True)
    print(f"1..{suite.countTestCases()}", flush=True)
    runner = unittest.TextTestRunner(
        stream=open(os.devnull, "w"),
        resultclass=lambda *a, **k: TapResult(os.path.basename(node), *a, **k),
    )
    result = runner.run(suite)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
