# SPDX-License-Identifier: GPL-2.0
"""The kernel glue at the edges (issue 20, items 1 and 10): opening and closing a file never
waits for another client's TPM work.

The misc core holds its global misc_mtx across every misc device's ->open: an open of
/dev/tpmrs0 that waited for the resource manager's lock, which a CreatePrimary of seconds
holds, stalled every open of /dev/kvm, /dev/fuse, /dev/net/tun, ... on the machine. Measured
before the fix in the debug guest: 315 ms at the median and 2.4 s at worst, against 1 ms and
8 ms for /dev/tpmrm0."""

import os
import statistics
import struct
import time

import tpm
from tpm import Node


def setup_each():
    left = tpm.census()
    assert left == [], f"TPM not clean before the test: {[hex(h) for h in left]}"


# An RSA-3072 storage primary: a primary key is derived from the seed and the template, so
# every CreatePrimary of it costs the same, about 100 ms of swtpm's time on these machines
# (RSA-2048: 40-70 ms, too close to what an open costs on the debug guest to tell waiting
# from not waiting).
RSA3072_TEMPLATE = tpm.RSA_STORAGE_TEMPLATE.replace(struct.pack(">HI", 2048, 0),
                                                    struct.pack(">HI", 3072, 0))


def slow_commands(seconds, w, _ready_w, go_r):
    """RSA-3072 CreatePrimary in a loop through tpmrs0 (100 ms or more each); writes when
    each began and ended (CLOCK_MONOTONIC, s)."""
    os.read(go_r, 1)
    took = []
    end = time.monotonic() + seconds
    with Node("/dev/tpmrs0") as n:
        while time.monotonic() < end:
            t0 = time.monotonic()
            rsp = n.transact(tpm.create_primary(RSA3072_TEMPLATE))
            took.append((t0, time.monotonic()))
            assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
            n.transact(tpm.flush_context(tpm.response_handle(rsp)))
    os.write(w, " ".join(f"{a:.4f},{b:.4f}" for a, b in took).encode())
    os.close(w)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def opens_and_closes(seconds):
    """Opens and closes /dev/tpmrs0, then /dev/tpmrm0, every 50 ms for `seconds`; returns
    the open and close times (s) of each node. tpmrm0's open waits for no TPM work (its
    close does: it flushes its space under the chip's lock), so its opens, taken in the same
    moments, are what an open costs on this guest now, however busy its host is."""
    t = {"rs_open": [], "rs_close": [], "rm_open": [], "rs_open_at": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for node in ("/dev/tpmrs0", "/dev/tpmrm0"):
            t0 = time.monotonic()
            fd = os.open(node, os.O_RDWR)
            t1 = time.monotonic()
            os.close(fd)
            t2 = time.monotonic()
            if node == "/dev/tpmrs0":
                t["rs_open"].append(t1 - t0)
                t["rs_open_at"].append((t0, t1))
                t["rs_close"].append(t2 - t1)
            else:
                t["rm_open"].append(t1 - t0)
        time.sleep(0.05)
    return t


def test_open_and_close_never_wait_for_tpm_work():
    # Files that hold an object and a session, closed while the slow command runs: their
    # release must not wait for it either (it flushes on the module's workqueue).
    holders = []
    for _ in range(5):
        n = Node("/dev/tpmrs0")
        rsp = n.transact(tpm.create_primary())
        assert tpm.rc_of(rsp) == 0
        tpm.HmacSession(n)
        holders.append(n)
    base = tpm.tpmrs_stats()["open_spaces"]
    slow = tpm.fork_child(lambda w, r, g: slow_commands(12.0, w, r, g), ready=False)
    tpm.start_together([slow])
    time.sleep(1.0)  # the first CreatePrimary is under way
    t = opens_and_closes(8.0)
    held_closes = []
    for n in holders:
        t0 = time.monotonic()
        n.close()
        held_closes.append(time.monotonic() - t0)
    spans = [tuple(map(float, x.split(","))) for x in tpm.collect(slow).split()]
    took = [b - a for a, b in spans]
    # An open that waited for the command ends right after it: of the opens under way when
    # a CreatePrimary ended, how many ended within 5 ms of it.
    ends = [b for _, b in spans]
    spanning = [(a, b) for a, b in t["rs_open_at"] if any(a < e < b for e in ends)]
    right_after = [1 for a, b in spanning if any(a < e < b and b - e < 0.005 for e in ends)]
    print(f"# opens of tpmrs0 under way when a CreatePrimary ended: {len(spanning)}, "
          f"of which ended within 5 ms of it: {len(right_after)}")
    ms = lambda x: f"{x * 1000:.1f}"  # noqa: E731
    print(f"# CreatePrimary RSA-3072: n {len(took)} median {ms(statistics.median(took))} ms max "
          f"{ms(max(took))} ms; open(/dev/tpmrs0) n {len(t['rs_open'])} median "
          f"{ms(statistics.median(t['rs_open']))} p90 {ms(pct(t['rs_open'], 0.9))} max "
          f"{ms(max(t['rs_open']))} ms; open(/dev/tpmrm0) median {ms(statistics.median(t['rm_open']))} "
          f"p90 {ms(pct(t['rm_open'], 0.9))} max {ms(max(t['rm_open']))} ms; close(/dev/tpmrs0) "
          f"median {ms(statistics.median(t['rs_close']))} max {ms(max(t['rs_close']))} ms; close of "
          f"a file holding an object and a session max {ms(max(held_closes))} ms")
    # The slow command must be slow for the comparison to mean anything. Before the change
    # an open of tpmrs0 waited for the command under way: 343 ms at the median against 32 ms
    # for tpmrm0's in the same guest (and 315 ms against 1 ms in the issue's measurement).
    # The commands run back to back, so an open that waits for one waits half of it at the
    # median: that must be past the bound below. How slow a CreatePrimary is depends on
    # how busy the host is, tpmrm0's open too.
    med = statistics.median(took)
    rm_med, rm_p90 = statistics.median(t["rm_open"]), pct(t["rm_open"], 0.9)
    assert med / 2 > 2 * rm_med + 0.010, (took, rm_med)
    for what in ("rs_open", "rs_close"):
        assert statistics.median(t[what]) < 2 * rm_med + 0.010, (what, t[what], rm_med)
        assert pct(t[what], 0.9) < 2 * rm_p90 + 0.050, (what, t[what], rm_p90)
    assert max(held_closes) < med / 2, (held_closes, med)
    # The closed files' contexts are flushed afterwards, by the close work.
    deadline = time.monotonic() + 10
    while tpm.tpmrs_stats()["open_spaces"] > base - len(holders) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tpm.tpmrs_stats()["open_spaces"] == base - len(holders)
