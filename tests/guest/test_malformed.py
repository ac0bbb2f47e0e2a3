# SPDX-License-Identifier: GPL-2.0
"""Malformed and hostile input through /dev/tpmrs0: every case gets a clear answer (an errno
or a TPM-format response), nothing oopses (the kernel log is checked by the host), and
afterwards the TPM holds nothing of ours beyond what the test created."""

import errno
import os
import struct

import tpm
from tpm import Node
from test_rm import create_primary

LAYER = tpm.TSS2_RESMGR_TPM_RC_LAYER


def setup_each():
    assert tpm.census() == [], "TPM not clean before the test"


def test_size_fields_that_lie():
    with Node() as n:
        good = tpm.get_random(8)
        for size in (0, 1, 9, 10, 11, 13, 64, 4096, 0xFFFFFFFF):
            cmd = bytearray(good)
            cmd[2:6] = struct.pack(">I", size)
            kind, code = tpm.answer(lambda: n.transact(bytes(cmd)))
            # Larger than what was written: EINVAL (as tpmrm0). Smaller: EINVAL in tpmrs
            # (the command must be exactly what was written).
            assert (kind, code) == ("errno", errno.EINVAL), (size, kind, hex(code))
        assert tpm.rc_of(n.transact(good)) == 0


def test_truncated_handle_area():
    with Node() as n:
        # ReadPublic has one handle; give it two bytes of it.
        cmd = tpm.command(tpm.CC_READ_PUBLIC, b"\x80\x00")
        assert tpm.answer(lambda: n.transact(cmd)) == ("errno", errno.EINVAL)
        # FlushContext's handle is a parameter: truncated, the TPM answers.
        kind, code = tpm.answer(lambda: n.transact(tpm.command(tpm.CC_FLUSH_CONTEXT, b"\x80")))
        assert kind == "rc" and code != 0, (kind, hex(code))


def test_authorization_areas_that_overflow():
    with Node() as n:
        h = create_primary(n)
        base = struct.pack(">I", h)
        cases = [
            struct.pack(">I", 0xFFFFFFFF),  # authorizationSize past the end
            struct.pack(">I", 0x7FFFFFF0) + b"\x00" * 9,
            struct.pack(">I", 9) + struct.pack(">IH", tpm.TPM_RS_PW, 0xFFFF) + b"\x00\x00\x00",  # nonce overruns
            struct.pack(">I", 9) + struct.pack(">IH", tpm.TPM_RS_PW, 0) + b"\x00" + b"\xff\xff",  # hmac overruns
            struct.pack(">I", 4) + b"\x00" * 4,  # shorter than one session
            struct.pack(">I", 0),  # tag says sessions, none given
            struct.pack(">I", 36) + (struct.pack(">IH", tpm.TPM_RS_PW, 0) + b"\x00\x00\x00") * 4,  # 4 sessions
        ]
        for auth in cases:
            cmd = tpm.command(tpm.CC_SIGN, base + auth + b"\x00" * 8, tpm.TPM_ST_SESSIONS)
            kind, code = tpm.answer(lambda: n.transact(cmd))
            assert kind == "errno" and code == errno.EINVAL or kind == "rc" and code != 0, (auth.hex(), kind, code)
        assert tpm.rc_of(n.transact(tpm.flush_context(h))) == 0


def test_unknown_and_vendor_command_codes():
    with Node() as n:
        for cc in (0x0, 0x1, 0x11E, 0x1FF, 0xFFFF, 0x2000FFFF, 0x2000FFF0, 0xFFFFFFFF):
            rsp = n.transact(tpm.command(cc))
            assert tpm.header(rsp) == (0x8001, 10, 0x000B0143), (hex(cc), rsp.hex())


def test_zero_and_overlong_writes_and_reads_before_writes():
    with Node() as n:
        assert n.read(4096) == b""
        assert n.read(1) == b""
        assert tpm.answer(lambda: n.transact(b"")) == ("errno", errno.EINVAL)
        try:
            n.write(b"\x80\x01" + b"\x00" * 5000)
        except OSError as e:
            assert e.errno == errno.E2BIG
        else:
            raise AssertionError("over-long write accepted")
        assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0


def test_handles_the_space_does_not_own():
    with Node() as a, Node() as b:
        mine = create_primary(b)
        s = tpm.response_handle(b.transact(tpm.start_auth_session_hmac()))
        read_public = lambda h: tpm.command(tpm.CC_READ_PUBLIC, struct.pack(">I", h))  # noqa: E731
        # Transient handles that are not a's: guessed numbers, b's virtual handle.
        for h in (0x80000000, 0x80000001, 0x80FFFFFF, 0x80123456, mine):
            assert tpm.answer(lambda: a.transact(read_public(h))) == ("errno", errno.EINVAL), hex(h)
            assert tpm.answer(lambda: a.transact(tpm.flush_context(h))) == ("errno", errno.EINVAL), hex(h)
        # Sessions that are not a's (b's, guessed): RM-layer handle errors, nothing sent.
        for h in (s, 0x02000000, 0x02000005, 0x03000000, 0x03FFFFFF):
            kind, code = tpm.answer(lambda: a.transact(tpm.flush_context(h)))
            assert kind == "rc" and code & 0xFFFF0000 == LAYER, (hex(h), kind, hex(code))
            kind, code = tpm.answer(lambda: a.transact(tpm.context_save(h)))
            assert kind == "rc" and code & 0xFFFF0000 == LAYER, (hex(h), kind, hex(code))
        # Persistent and NV handles where a transient is expected: the TPM answers.
        for h in (0x81000001, 0x01500000, 0x40000001):
            kind, code = tpm.answer(lambda: a.transact(read_public(h)))
            assert kind == "rc" and code != 0, (hex(h), kind, code)
        # b is untouched.
        assert tpm.rc_of(b.transact(read_public(mine))) == 0
        listed = [h & 0xFFFFFF for first in (0x02000000, 0x03000000)
                  for h in tpm.handles_in(b.transact(tpm.get_capability(1, first, 64)))]
        assert s & 0xFFFFFF in listed, (hex(s), listed)
    assert tpm.census() == []


def test_garbage_commands_leave_nothing_behind():
    rnd = bytearray(os.urandom(64 * 200))
    with Node() as n:
        create_primary(n)
        for i in range(200):
            body = bytes(rnd[i * 64 : i * 64 + (i % 60)])
            cc = [tpm.CC_CREATE_PRIMARY, tpm.CC_CONTEXT_LOAD, tpm.CC_CONTEXT_SAVE, tpm.CC_FLUSH_CONTEXT,
                  tpm.CC_START_AUTH_SESSION, tpm.CC_SIGN, tpm.CC_GET_CAPABILITY, 0x157, 0x153][i % 9]
            tag = tpm.TPM_ST_SESSIONS if i % 2 else tpm.TPM_ST_NO_SESSIONS
            tpm.answer(lambda: n.transact(tpm.command(cc, body, tag)))
        assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
    assert tpm.census() == []
