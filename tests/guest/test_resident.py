# SPDX-License-Identifier: GPL-2.0
"""Resident contexts (module parameter resident=1, issue 21), in the guest whose tpmrs was
loaded with it (tests/guest/suite.sh runs this file only there): contexts stay loaded between
commands within the reserve, the PM notifier saves them before a suspend (pm_test=freezer
runs the notifiers without sleeping), and a TPM power cycle -- TPM2_Shutdown(STATE) through
/dev/tpm0, a power cycle of swtpm through the proxy of scripts/guest.sh (TPMRS_TPM_PROXY=1),
TPM2_Startup(STATE) -- keeps clients working when the notifier ran first, and is detected
and handled when it did not (contexts resident across it)."""

import os
import struct
import time

import tpm
from tpm import Node

CTL = os.path.join(os.environ.get("TPMRS_OUT", "/run/out"), "ctl")
LAYER = 0xB0000
TPM_CC_SHUTDOWN = 0x145
TPM_CC_STARTUP = 0x144
TPM_SU_STATE = 1


class Client:
    """One open file of /dev/tpmrs0 with an ECC signing key and an HMAC session."""

    def __init__(self):
        self.node = Node("/dev/tpmrs0")
        rsp = self.node.transact(tpm.create_primary(tpm.ECC_SIGNING_TEMPLATE))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        self.key = tpm.response_handle(rsp)
        self.name = tpm.read_public_name(self.node, self.key)
        self.session = tpm.HmacSession(self.node)

    def sign(self):
        return tpm.rc_of(tpm.sign_with_session(self.node, self.key, self.name, self.session))

    def close(self):
        self.node.close()


def stats():
    return tpm.tpmrs_stats()


def loaded_of(clients):
    """(transient objects loaded in the TPM, our clients' sessions loaded, our clients'
    sessions saved), asked through /dev/tpm0."""
    found = tpm.census()
    ours = {c.session.handle & 0xFFFFFF for c in clients}
    objects = [h for h in found if h >> 24 == 0x80]
    loaded = [h for h in found if h >> 24 in (0x02, 0x03) and h & 0xFFFFFF in ours]
    saved = [h for h in found if h >> 24 in (0x12, 0x13) and h & 0xFFFFFF in ours]
    return len(objects), len(loaded), len(saved)


def suspend_freezer():
    """A suspend to RAM that stops after freezing tasks (pm_test=freezer): the PM notifiers
    run (PM_SUSPEND_PREPARE, then PM_POST_SUSPEND), no device suspends, nothing sleeps."""
    with open("/sys/power/pm_test") as f:
        assert "freezer" in f.read(), "CONFIG_PM_DEBUG without the freezer test level"
    with open("/sys/power/pm_test", "w") as f:
        f.write("freezer")
    try:
        for attempt in range(3):
            try:
                with open("/sys/power/state", "w") as f:
                    f.write("mem")
                return
            except OSError:
                # Freezing can fail when a task will not freeze in time: try again.
                if attempt == 2:
                    raise
                time.sleep(1)
    finally:
        with open("/sys/power/pm_test", "w") as f:
            f.write("none")


def raw(cmd):
    """One command through /dev/tpm0, no resource manager; its response code."""
    return tpm.rc_of(tpm.direct(cmd))


def power_cycle(tag):
    """TPM2_Shutdown(STATE), a power cycle of swtpm (asked of the proxy between QEMU and
    swtpm: TPMRS_TPM_PROXY=1 in scripts/guest.sh) and TPM2_Startup(STATE): a suspend to RAM
    as the TPM sees it. Whatever is loaded in the TPM is lost, whatever is saved stays."""
    assert os.path.isdir(CTL), f"no {CTL}: not booted by scripts/guest.sh"
    assert raw(tpm.command(TPM_CC_SHUTDOWN, struct.pack(">H", TPM_SU_STATE))) == 0
    asked = os.path.join(CTL, f"tpm-power-cycle.{tag}")
    done = os.path.join(CTL, f"tpm-power-cycled.{tag}")
    open(asked, "w").close()
    t0 = time.monotonic()
    while not os.path.exists(done):
        assert time.monotonic() - t0 < 60, (
            "no answer to the power cycle request: is the TPM proxy on (TPMRS_TPM_PROXY=1)?")
        time.sleep(0.05)
    with open(done) as f:
        assert f.read().strip() == "0", "CMD_INIT failed"
    assert raw(tpm.command(TPM_CC_STARTUP, struct.pack(">H", TPM_SU_STATE))) == 0


def test_resident_contexts_stay_loaded_within_the_reserve():
    clients = [Client() for _ in range(3)]
    try:
        for c in clients:
            assert c.sign() == 0
        # swtpm: 3 object and 3 session slots, 1 of each kept free: two clients resident.
        objects, loaded, saved = loaded_of(clients)
        assert (objects, loaded, saved) == (2, 2, 1), (objects, loaded, saved)
        s = stats()
        assert (s["resident_objects"], s["resident_sessions"]) == (2, 2), s
        # The last two signers sign again at one TPM command each.
        before = stats()["tpm_commands"]
        for _ in range(10):
            for c in clients[1:]:
                assert c.sign() == 0
        assert stats()["tpm_commands"] - before == 20
    finally:
        for c in clients:
            c.close()
    # Closes are done on tpmrs' workqueue: wait for them before looking.
    tpm.settle()
    s = stats()
    assert (s["resident_objects"], s["resident_sessions"]) == (0, 0), s


def test_the_pm_notifier_saves_resident_contexts_before_a_suspend():
    clients = [Client() for _ in range(2)]
    try:
        for c in clients:
            assert c.sign() == 0
        assert loaded_of(clients) == (2, 2, 0), loaded_of(clients)
        before = stats()
        suspend_freezer()
        after = stats()
        assert after["suspends"] == before["suspends"] + 1, (before, after)
        assert after["resident_evictions"] - before["resident_evictions"] == 4, (before, after)
        # Nothing of tpmrs' is left loaded by the notifier (no tpmrs command has run since):
        # the sessions are saved, the keys flushed (their spaces keep their blobs).
        assert loaded_of(clients) == (0, 0, 2), loaded_of(clients)
        assert (after["resident_objects"], after["resident_sessions"]) == (0, 0), after
        # After PM_POST_SUSPEND contexts are resident again from the next command.
        for c in clients:
            assert c.sign() == 0
            assert c.sign() == 0
        assert loaded_of(clients) == (2, 2, 0), loaded_of(clients)
    finally:
        for c in clients:
            c.close()


def test_a_power_cycle_after_the_notifier_keeps_clients_working():
    clients = [Client() for _ in range(2)]
    try:
        for c in clients:
            assert c.sign() == 0
        suspend_freezer()
        assert loaded_of(clients) == (0, 0, 2), loaded_of(clients)
        lost = stats()["resident_lost"]
        power_cycle("notified")
        # The sessions come back from their saved contexts, nonces and all: the HMACs of
        # the next signatures verify; the keys load from their blobs.
        for c in clients:
            assert c.sign() == 0
            assert c.sign() == 0
        assert stats()["resident_lost"] == lost
    finally:
        for c in clients:
            c.close()
    tpm.settle()
    assert stats()["resident_objects"] == 0


def test_a_power_cycle_without_the_notifier_is_detected_and_handled():
    clients = [Client() for _ in range(2)]
    try:
        for c in clients:
            assert c.sign() == 0
        assert loaded_of(clients) == (2, 2, 0), loaded_of(clients)
        lost = stats()["resident_lost"]
        power_cycle("unnotified")
        for c in clients:
            # The key, lost, is loaded again from its blob; the session existed only in the
            # TPM: its owner is told at once (RM-layer TPM_RC_HANDLE at session 1), and the
            # command is not run.
            rc = c.sign()
            assert rc == LAYER | 0x98B, hex(rc)
        assert stats()["resident_lost"] - lost == 4, stats()
        for c in clients:
            c.session = tpm.HmacSession(c.node)
            assert c.sign() == 0
            assert c.sign() == 0
        assert loaded_of(clients) == (2, 2, 0), loaded_of(clients)
    finally:
        for c in clients:
            c.close()
