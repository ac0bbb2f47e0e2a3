# SPDX-License-Identifier: GPL-2.0
"""Memory a client causes is charged to its opener's memory cgroup: a process in a cgroup v2
with a small memory.max opens files of /dev/tpmrs0 and fills them with objects until it is
refused. The refusal is ENOMEM (from open, or from the command: its read for O_NONBLOCK,
which runs in the module's worker and must still be charged to the opener), without the
cgroup's OOM killer and without a kernel warning; a client outside the cgroup keeps working
meanwhile; and once everything is closed, tpmrs holds nothing of it."""

import errno
import os
import subprocess
import time

import tpm
from tpm import Node

CG = "/sys/fs/cgroup"
CHILD = f"{CG}/tpmrs_memcg"
# What the flooder may charge above what it uses when it starts (its own memory and a file
# opened beforehand are already counted then).
LIMIT = 512 << 10
MAX_OBJECTS = 64  # the module parameter max_objects, loaded with its default
TPM_RC_OBJECT_MEMORY = 0xB0902


def write(path, value):
    with open(path, "w") as f:
        f.write(value)


def read(path):
    with open(path) as f:
        return f.read()


def cgroup():
    """A fresh child cgroup with the memory controller (cgroup2 mounted if needed)."""
    if not os.path.exists(f"{CG}/cgroup.controllers"):
        subprocess.run(["mount", "-t", "cgroup2", "none", CG], check=True)
    assert "memory" in read(f"{CG}/cgroup.controllers").split(), read(f"{CG}/cgroup.controllers")
    write(f"{CG}/cgroup.subtree_control", "+memory")
    if os.path.isdir(CHILD):
        os.rmdir(CHILD)
    os.mkdir(CHILD)
    return CHILD


def events(cg):
    return {k: int(v) for k, v in (line.split() for line in read(f"{cg}/memory.events").splitlines())}


def kernel_log():
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def flooder():
    """tests/guest/memcg_flood.c, compiled for this run."""
    exe = "/tmp/tpmrs_memcg_flood"
    if not os.path.exists(exe):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memcg_flood.c")
        subprocess.run(["cc", "-O2", "-Wall", "-o", exe, src], check=True)
    return exe


def test_memcg_context_sizes():
    """The saved contexts tpmrs keeps per object and per session are at most a 4 KiB
    allocation each (Documentation/tpmrs.rst, the per-file worst case); the sizes of this
    TPM's are printed."""
    with Node() as n:
        obj = tpm.response_handle(n.transact(tpm.create_primary()))
        rsa = tpm.response_handle(n.transact(tpm.create_primary(tpm.RSA_STORAGE_TEMPLATE)))
        sess = tpm.response_handle(n.transact(tpm.start_auth_session_hmac()))
        sizes = {}
        for name, h in (("ecc_primary", obj), ("rsa2048_primary", rsa), ("hmac_session", sess)):
            rsp = n.transact(tpm.context_save(h))
            assert tpm.rc_of(rsp) == 0, (name, hex(tpm.rc_of(rsp)))
            sizes[name] = len(rsp) - 10
        # Not left behind as an abandoned session at close.
        assert tpm.rc_of(n.transact(tpm.flush_context(sess))) == 0
    print(f"# saved context sizes (bytes): {sizes}")
    assert all(0 < v <= 4096 - 10 for v in sizes.values()), sizes


def test_memcg_flood_is_refused_cleanly():
    before_log = kernel_log()
    stats0 = tpm.tpmrs_stats()
    census0 = sorted(tpm.census())
    exe = flooder()
    cg = cgroup()
    p = subprocess.Popen([exe, cg, tpm.create_primary().hex()], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n", p.poll()
        base = int(read(f"{cg}/memory.current"))
        write(f"{cg}/memory.max", str(base + LIMIT))
        t0 = time.monotonic()
        p.stdin.write("go\n")
        p.stdin.flush()
        report = p.stdout.readline()
        took = time.monotonic() - t0
        assert report, f"the flooder died: {p.wait()} {events(cg)}"
        where, err, nfiles, objects, spare_made, spare_err = report.split()
        print(f"# flood refused at {where} ({err}) after {nfiles} files, {objects} objects, "
              f"{took:.1f} s; spare file: {spare_made} objects, then errno {spare_err}; "
              f"memory.current {read(f'{cg}/memory.current').strip()} of max {base + LIMIT}")
        assert where in ("open", "command") and int(err) == errno.ENOMEM, report
        # Charged enough to be refused within the limit: more than one full file's worth.
        assert int(objects) >= MAX_OBJECTS, report
        # The worker's allocations (O_NONBLOCK) were charged to the opener's cgroup: refused
        # with ENOMEM (from read) before the spare space was full.
        assert int(spare_err) == errno.ENOMEM and int(spare_made) < MAX_OBJECTS, report
        at_limit = int(read(f"{cg}/memory.current"))
        ev = events(cg)
        assert ev["max"] > 0 and ev["oom"] == 0 and ev["oom_kill"] == 0, ev
        # Outside the cgroup, another client works (blocking and O_NONBLOCK) while the
        # flooder holds everything at its limit.
        for nonblock in (False, True):
            with Node(nonblock=nonblock) as other:
                rsp = other.transact(tpm.create_primary())
                assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
                assert tpm.rc_of(other.transact(tpm.get_random(8))) == 0
        p.stdin.close()
        assert p.wait(120) == 0, p.returncode
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # Nothing leaks: every space closed, no object or session left in tpmrs or in the TPM.
    tpm.settle()
    stats = tpm.tpmrs_stats()
    for k in ("open_spaces", "sessions", "tombstones", "pending_flushes", "waiting"):
        assert stats[k] == stats0[k], (k, stats0, stats)
    assert sorted(tpm.census()) == census0, (census0, tpm.census())
    # What the files had charged went back with them (the per-cpu charge caches may keep a
    # little).
    after = int(read(f"{cg}/memory.current"))
    print(f"# memory.current: {base} before the flood, {at_limit} at the limit, {after} after")
    assert after < at_limit - LIMIT // 2, (base, at_limit, after)
    os.rmdir(cg)
    new = kernel_log()[len(before_log):]
    for bad in ("Call Trace", "WARNING", "BUG:", "invoked oom-killer", "Out of memory"):
        assert bad not in new, new[-3000:]
