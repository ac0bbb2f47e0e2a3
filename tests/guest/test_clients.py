# SPDX-License-Identifier: GPL-2.0
"""/sys/kernel/debug/tpmrs/clients: one line per open file of /dev/tpmrs0, read while the
files are in use. Each file here is opened under its own command name (written to
/proc/thread-self/comm first), so its line is found by comm."""

import os
import threading
import time

import tpm
from tpm import Node

CLIENTS = "/sys/kernel/debug/tpmrs/clients"


def clients():
    """{comm: {field: value}} of the clients file (pid and numbers as int)."""
    out = {}
    with open(CLIENTS) as f:
        for line in f:
            fields = dict(kv.split("=", 1) for kv in line.split())
            out[fields["comm"]] = {k: (v if k == "comm" else int(v)) for k, v in fields.items()}
    return out


def set_comm(name):
    with open("/proc/thread-self/comm", "w") as f:
        f.write(name)


def open_as(name, **kw):
    """A Node opened while this thread's command name is `name`."""
    with open("/proc/thread-self/comm") as f:
        old = f.read().strip()
    set_comm(name)
    try:
        return Node(**kw)
    finally:
        set_comm(old)


def test_clients_line_per_file():
    """Objects, sessions by state, TPM commands, pid and comm of one busy file; a second
    file's line is separate; both lines go away at close."""
    a = open_as("tpmrs_cl_a")
    b = open_as("tpmrs_cl_b")
    try:
        line = clients()["tpmrs_cl_a"]
        assert line["pid"] == os.getpid(), line
        assert line["objects"] == 0 and line["tpm_commands"] == 0, line
        rsp = a.transact(tpm.create_primary())
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        s1 = tpm.response_handle(a.transact(tpm.start_auth_session_hmac()))
        s2 = tpm.response_handle(a.transact(tpm.start_auth_session_hmac()))
        rsp = a.transact(tpm.context_save(s2))  # s2: saved by the client
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        assert s1 != s2
        b.transact(tpm.get_random(8))
        c = clients()
        line, other = c["tpmrs_cl_a"], c["tpmrs_cl_b"]
        assert line["objects"] == 1, line
        # s1 is loaded or saved by tpmrs (it may have been swapped out), s2 saved by a.
        assert line["sessions_loaded"] + line["sessions_saved_by_tpmrs"] == 1, line
        assert line["sessions_saved_by_client"] == 1, line
        # CreatePrimary, two StartAuthSessions, ContextSave, plus whatever tpmrs sent.
        assert line["tpm_commands"] >= 4, line
        assert line["waits"] == 0 and line["evicted"] == 0, line
        assert other["objects"] == 0 and other["tpm_commands"] == 1, other
        assert other["space"] != line["space"], (line, other)
    finally:
        a.close()
        b.close()
    c = clients()
    assert "tpmrs_cl_a" not in c and "tpmrs_cl_b" not in c, c


def test_clients_shows_waits_and_evictions():
    """A file holding every session slot tpmrs may use (the TPM's free slots less the
    headroom it leaves to others), and another that must wait for one: while it waits, the
    file can still be read; after SESSION_TIMEOUT the holder's space is evicted for the
    waiter (the space is the unit of eviction: all its sessions go), and both lines say so."""
    holder = open_as("tpmrs_holder")
    got = {}

    def waiter():
        set_comm("tpmrs_waiter")
        with Node() as n:
            got["rsp"] = n.transact(tpm.start_auth_session_hmac())
            got["line"] = clients()["tpmrs_waiter"]

    # Sessions abandoned by earlier tests would be evicted first (and at once).
    abandoned = tpm.tpmrs_stats()["abandoned"]
    try:
        avail = tpm.tpm_property(holder, 0x206)  # TPM_PT_HR_ACTIVE_AVAIL
        headroom = 2  # the module parameter session_headroom, loaded with its default
        n = avail - headroom
        assert 0 < n <= 64, (avail, headroom)
        for _ in range(n):
            rsp = holder.transact(tpm.start_auth_session_hmac())
            assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        # During the wait: the file answers, the waiter is listed and has not finished.
        c = clients()
        assert "tpmrs_waiter" in c and "rsp" not in got, (c, got)
        assert c["tpmrs_holder"]["evicted"] == 0, c
        t.join(60)
        assert not t.is_alive(), "the waiter never got a session"
        assert tpm.rc_of(got["rsp"]) == 0, hex(tpm.rc_of(got["rsp"]))
        line = got["line"]
        assert line["waits"] == 1, line
        assert line["sessions_loaded"] + line["sessions_saved_by_tpmrs"] == 1, line
        held = clients()["tpmrs_holder"]
        assert held["sessions_loaded"] + held["sessions_saved_by_tpmrs"] == n - held["evicted"], held
        if abandoned == 0:
            # The holder's young sessions were the only victims: after SESSION_TIMEOUT (2 s
            # by default) its whole space was evicted for the waiter.
            assert held["evicted"] == n, held
            assert line["longest_wait_ms"] >= 500, line
        else:
            assert held["evicted"] + abandoned - tpm.tpmrs_stats()["abandoned"] >= 1, held
    finally:
        holder.close()
