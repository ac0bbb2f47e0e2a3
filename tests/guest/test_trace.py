# SPDX-License-Identifier: GPL-2.0
"""The trace events of tpmrs (tpmrs:* in tracefs): a command's event with its fields, the
wait, eviction and wait-end events of an exhaustion, and the same events through perf. The
context-gap event needs 65,535 context saves (about 5 minutes in the guest): the host tests
(rust/proto/tests/events.rs) cover the core's side of it."""

import os
import re
import subprocess
import threading
import time

import tpm
from tpm import Node

TRACING = "/sys/kernel/tracing"
EVENTS = ("tpmrs_command", "tpmrs_evict", "tpmrs_gap_repair", "tpmrs_wait_begin", "tpmrs_wait_end")
LINE = re.compile(r"\s(tpmrs_\w+): (.*)$")


def tracefs():
    if not os.path.exists(f"{TRACING}/trace"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True)


def write(path, value):
    with open(path, "w") as f:
        f.write(value)


def start():
    """Empties the trace buffer and enables every tpmrs event."""
    tracefs()
    write(f"{TRACING}/tracing_on", "0")
    write(f"{TRACING}/trace", "")
    write(f"{TRACING}/events/tpmrs/enable", "1")
    write(f"{TRACING}/tracing_on", "1")


def stop():
    """Disables the events; returns [(event, {field: value})] from the buffer, in order."""
    write(f"{TRACING}/events/tpmrs/enable", "0")
    with open(f"{TRACING}/trace") as f:
        text = f.read()
    out = []
    for line in text.splitlines():
        m = LINE.search(line)
        if m:
            out.append((m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split())))
    return out


def space_of(node_comm):
    """The space id of the open file listed under command name `node_comm`."""
    with open("/sys/kernel/debug/tpmrs/clients") as f:
        for line in f:
            fields = dict(kv.split("=", 1) for kv in line.split())
            if fields["comm"] == node_comm:
                return fields["space"]
    raise AssertionError(f"{node_comm} not in clients")


def open_as(name, **kw):
    """A Node opened while this thread's command name is `name` (to find its space)."""
    with open("/proc/thread-self/comm") as f:
        old = f.read().strip()
    write("/proc/thread-self/comm", name)
    try:
        return Node(**kw)
    finally:
        write("/proc/thread-self/comm", old)


def test_trace_events_listed():
    """The five events exist under events/tpmrs/ with their formats."""
    tracefs()
    for e in EVENTS:
        with open(f"{TRACING}/events/tpmrs/{e}/format") as f:
            fmt = f.read()
        assert f"name: {e}" in fmt, fmt
    with open(f"{TRACING}/events/tpmrs/tpmrs_command/format") as f:
        fmt = f.read()
    for field in ("space", "cc", "tpm_commands", "waited_ns", "result", "rc"):
        assert re.search(rf"field:\S+ {field};", fmt), (field, fmt)


def test_trace_command_fields():
    """tpmrs_command for a GetRandom (one TPM command, 20 bytes, rc 0), a command the TPM
    does not know (answered by tpmrs: no TPM command, rc 0x000B0143), and a command refused
    with an errno (a handle the space does not own: result -22); nothing waited."""
    start()
    with open_as("tpmrs_tr_cmd") as n:
        space = space_of("tpmrs_tr_cmd")
        assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
        rsp = n.transact(tpm.command(0x2FF))
        assert tpm.rc_of(rsp) == 0xB0143, hex(tpm.rc_of(rsp))
        n.expect_errno(tpm.command(tpm.CC_READ_PUBLIC, bytes.fromhex("80000007")), 22)
    ev = [f for e, f in stop() if e == "tpmrs_command" and f["space"] == space]
    assert len(ev) == 3, ev
    rnd, unknown, bad = ev
    assert rnd == {"space": space, "cc": "0x17b", "tpm_commands": "1", "waited_ns": "0",
                   "result": "20", "rc": "0x0"}, rnd
    assert unknown["cc"] == "0x2ff" and unknown["tpm_commands"] == "0", unknown
    assert unknown["result"] == "10" and unknown["rc"] == "0xb0143", unknown
    assert bad["cc"] == "0x173" and bad["result"] == "-22" and bad["rc"] == "0x0", bad


def test_trace_nonblocking_command():
    """An O_NONBLOCK command (run in the module's worker) has its event too."""
    start()
    with open_as("tpmrs_tr_nb", nonblock=True) as n:
        space = space_of("tpmrs_tr_nb")
        assert tpm.rc_of(n.transact(tpm.get_random(16))) == 0
    ev = [f for e, f in stop() if e == "tpmrs_command" and f["space"] == space]
    assert [(f["cc"], f["result"], f["rc"]) for f in ev] == [("0x17b", "28", "0x0")], ev


def test_trace_wait_and_eviction():
    """A holder takes every session slot tpmrs may use; a waiter's StartAuthSession waits,
    evicts the holder's space after SESSION_TIMEOUT and gets its session: wait_begin, one
    evict per session taken (victim the holder, waiter the waiter, reason=waiter), wait_end
    answered, then the waiter's tpmrs_command with the time waited."""
    abandoned = tpm.tpmrs_stats()["abandoned"]
    holder = open_as("tpmrs_tr_hold")
    got = {}

    def waiter():
        w = open_as("tpmrs_tr_wait")
        got["space"] = space_of("tpmrs_tr_wait")
        try:
            got["rsp"] = w.transact(tpm.start_auth_session_hmac())
        finally:
            w.close()

    try:
        hspace = space_of("tpmrs_tr_hold")
        n = tpm.tpm_property(holder, 0x206) - 2  # TPM_PT_HR_ACTIVE_AVAIL - session_headroom
        assert 0 < n <= 64, n
        for _ in range(n):
            assert tpm.rc_of(holder.transact(tpm.start_auth_session_hmac())) == 0
        start()
        t = threading.Thread(target=waiter)
        t.start()
        t.join(60)
        assert not t.is_alive(), "the waiter never got a session"
        assert tpm.rc_of(got["rsp"]) == 0, hex(tpm.rc_of(got["rsp"]))
        ev = stop()
    finally:
        holder.close()
    wspace = got["space"]
    mine = [(e, f) for e, f in ev if wspace in (f.get("space"), f.get("waiter"))]
    names = [e for e, _ in mine]
    assert names[0] == "tpmrs_wait_begin", mine
    assert names[-2:] == ["tpmrs_wait_end", "tpmrs_command"], mine
    evicts = [f for e, f in mine if e == "tpmrs_evict"]
    assert evicts, mine
    for f in evicts:
        assert f["waiter"] == wspace and f["reason"] == "waiter", f
        assert f["victim"] in (hspace, "0"), f  # "0": a session abandoned by an earlier test
    if abandoned == 0:
        assert [f["victim"] for f in evicts] == [hspace] * n, evicts
    end, cmd = mine[-2][1], mine[-1][1]
    assert end["end"] == "answered" and end["err"] == "0", end
    # SESSION_TIMEOUT (2 s) before evicting, unless an abandoned session went first at once.
    assert int(end["waited_ns"]) > 0, end
    if abandoned == 0:
        assert int(end["waited_ns"]) >= 1_500_000_000, end
    assert cmd["cc"] == "0x176" and cmd["rc"] == "0x0", cmd
    # The command's wait is counted by the glue from its first sleep, wait_end's by the core
    # from when the command joined the queue, a moment earlier in the same step.
    assert 0 < int(end["waited_ns"]) - int(cmd["waited_ns"]) < 500_000_000, (cmd, end)
    assert int(cmd["tpm_commands"]) >= len(evicts) + 1, (cmd, evicts)


def test_trace_perf_record():
    """`perf record -e 'tpmrs:*'` (the documented one-liner) records the events of a
    tpm2-tools command, and `perf script` shows them."""
    tracefs()
    cwd = "/tmp/tpmrs-perf"
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ, TPM2TOOLS_TCTI="device:/dev/tpmrs0")
    # -o: what perf record writes to in a terminal; to a pipe it would write the data itself.
    p = subprocess.run(["perf", "record", "-e", "tpmrs:*", "-a", "-o", "perf.data", "--",
                        "tpm2", "getrandom", "--hex", "8"],
                       env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    s = subprocess.run(["perf", "script"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert s.returncode == 0, (s.returncode, s.stderr)
    lines = [line for line in s.stdout.splitlines() if "tpmrs:tpmrs_command:" in line]
    # tpm2-tools' getrandom: its startup commands and the GetRandom itself (cc 0x17b).
    assert any("cc=0x17b" in line and "rc=0x0" in line for line in lines), s.stdout[-2000:]
