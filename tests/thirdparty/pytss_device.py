# SPDX-License-Identifier: GPL-2.0
"""pytest plugin (-p pytss_device) that points tpm2-pytss's own test suite at a device node
instead of the simulator each of its tests would start, and records every test's outcome.

Environment: TPMRS_PYTSS_NODE (e.g. /dev/tpmrs0), TPMRS_PYTSS_RESULTS (the outcome file:
"PASS|FAIL|SKIP nodeid" per line). The TPM is put back through /dev/tpm0 after every test
(tpmclean.py); FAPI tests share a provisioned key store per class, so for them only after
the class's last test."""

import os
import sys

import pytest

NODE = os.environ["TPMRS_PYTSS_NODE"]
RESULTS = os.environ["TPMRS_PYTSS_RESULTS"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tpmclean  # noqa: E402

_cleaner = None
_outcome = {}

# Tests that leave the TPM in a state that only platform authorization, which the guest's
# firmware holds, could undo: on one shared TPM every later test would inherit it (the suite
# expects a fresh simulator per test). They are reported as SKIP.
IRREVERSIBLE = {
    "test/test_esapi.py::TestEsys::test_clearcontrol":
        "sets disableClear through lockout; only the platform can clear it again",
}


class DeviceTpm:
    """Stands in for TSS2_BaseTest's SwtpmSimulator: the TPM behind NODE, already started."""

    exe = "device"

    def start(self):
        pass

    def close(self):
        pass

    @property
    def tcti_name_conf(self):
        return f"device:{NODE}"

    def get_tcti(self):
        from tpm2_pytss import TCTILdr

        return TCTILdr("device", NODE)


def _esapi_setup(self):
    """TSS2_EsapiTest.setUp without TPM2_Startup (the kernel already started the TPM)."""
    from tpm2_pytss import ESAPI, TPM2_CAP
    from tpm2_pytss.constants import lib

    self.tpm = DeviceTpm()
    self.tcti = self.tpm.get_tcti()
    self.ectx = ESAPI(self.tcti)
    self._supported_algs = []
    more = True
    while more:
        more, data = self.ectx.get_capability(TPM2_CAP.ALGS, 0, lib.TPM2_MAX_CAP_ALGS)
        self._supported_algs += [x.alg for x in data.data.algorithms]
    self._supported_commands = []
    more = True
    while more:
        more, data = self.ectx.get_capability(TPM2_CAP.ALGS, 0, lib.TPM2_MAX_CAP_CC)
        self._supported_commands += list(data.data.command)


def pytest_configure(config):
    global _cleaner
    # The suite is the package "test" in the sdist's directory (the working directory), not
    # the standard library's "test".
    sys.path.insert(0, os.getcwd())
    from test import TSS2_BaseTest as base

    base.TpmSimulator.getSimulator = staticmethod(DeviceTpm)
    base.TSS2_BaseTest.setUp = lambda self: setattr(self, "tpm", DeviceTpm())
    base.TSS2_EsapiTest.setUp = _esapi_setup
    _cleaner = tpmclean.Cleaner()


def pytest_collection_modifyitems(config, items):
    for item in items:
        why = IRREVERSIBLE.get(item.nodeid)
        if why:
            item.add_marker(pytest.mark.skip(reason=f"tpmrs: not run on a shared TPM: {why}"))


def _is_fapi(item):
    return item is not None and item.module.__name__.endswith("test_fapi")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if _is_fapi(item) and _is_fapi(nextitem) and nextitem.cls is item.cls:
        return
    try:
        for note in _cleaner.clean():
            print(f"\n[clean-up after {item.nodeid}] {note}")
    except Exception as e:  # noqa: BLE001 - logged; the next tests will show its effect
        # Not the test's failure: under load a TPM command through /dev/tpm0 can time out
        # (ETIME) whatever the test did.
        print(f"\n[clean-up after {item.nodeid}] FAILED: {e}", file=sys.stderr)


def pytest_runtest_logreport(report):
    prev = _outcome.get(report.nodeid)
    if report.failed:
        _outcome[report.nodeid] = "FAIL"
    elif report.skipped and prev != "FAIL":
        _outcome[report.nodeid] = "SKIP"
    elif report.when == "call" and prev is None:
        _outcome[report.nodeid] = "PASS"


def pytest_sessionfinish(session):
    with open(RESULTS, "w") as f:
        for nodeid, outcome in sorted(_outcome.items()):
            f.write(f"{outcome} {nodeid}\n")
