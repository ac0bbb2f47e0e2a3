# SPDX-License-Identifier: GPL-2.0
"""TPM traffic per client command, counted on the swtpm side (its command log, which
scripts/guest.sh keeps when TPMRS_SWTPM_LOG=1): the standard workload — a primary signing
key, an HMAC session, 100 signs — through /dev/tpmrs0 and /dev/tpmrm0 in the same run.

tpmrs loads only what a command uses and never re-saves an unchanged object, so a sign costs
at most 5 TPM commands (load key, load session, sign, save session, flush key); tpmrm0 also
re-saves the key: 6. The figures go to $TPMRS_OUT/traffic.txt."""

import os
import sys

import tpm
from tpm import Node

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import swtpm_count  # noqa: E402

LOG = os.path.join(os.environ.get("TPMRS_OUT", "/run/out"), "swtpm", "swtpm.log")
SIGNS = 100


def workload(node):
    """Returns (client commands, TPM commands by code) for the workload on `node`."""
    start = os.path.getsize(LOG)
    client = 0
    with Node(node) as n:
        rsp = n.transact(tpm.create_primary(tpm.ECC_SIGNING_TEMPLATE))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        key = tpm.response_handle(rsp)
        client += 1
        name = tpm.read_public_name(n, key)
        client += 1
        session = tpm.HmacSession(n)
        client += 1
        for _ in range(SIGNS):
            rsp = tpm.sign_with_session(n, key, name, session)
            assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
            client += 1
        for h in (session.handle, key):
            assert tpm.rc_of(n.transact(tpm.flush_context(h))) == 0
            client += 1
    return client, swtpm_count.count(LOG, start)


def test_traffic_per_client_command():
    assert os.path.exists(LOG), "swtpm command log missing (TPMRS_SWTPM_LOG=1)"
    lines = []
    totals = {}
    for node in ("/dev/tpmrm0", "/dev/tpmrs0"):
        client, counts = workload(node)
        total = sum(counts.values())
        totals[node] = total
        per = {swtpm_count.NAMES.get(cc, hex(cc)): n for cc, n in sorted(counts.items())}
        lines.append(f"{node}: {client} client commands -> {total} TPM commands "
                     f"({total / client:.2f} per client command; {per})")
    with open(os.path.join(os.environ.get("TPMRS_OUT", "/tmp"), "traffic.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for line in lines:
        print(f"# {line}")
    # tpmrs: 1 CreatePrimary (+ save, flush), 1 ReadPublic (+ load, flush), StartAuthSession
    # (+ save), 100 x 5, FlushContext(session) 1, FlushContext(key) 0.
    assert totals["/dev/tpmrs0"] <= 3 + 3 + 2 + SIGNS * 5 + 1, lines
    assert totals["/dev/tpmrs0"] < totals["/dev/tpmrm0"], lines
