# SPDX-License-Identifier: GPL-2.0
"""Wire behaviour of /dev/tpmrs0, checked side by side with the kernel's /dev/tpmrm0: each
test runs the same steps on both nodes and expects the same answers."""

import errno
import re
import os
import select
import struct

import tpm
from tpm import Node

NODES = ("/dev/tpmrm0", "/dev/tpmrs0")


def both(fn):
    for node in NODES:
        try:
            fn(node)
        except AssertionError as e:
            raise AssertionError(f"{node}: {e}") from e


def test_get_random_blocking():
    def t(node):
        with Node(node) as n:
            rsp = n.transact(tpm.get_random(16))
            assert tpm.header(rsp) == (0x8001, 28, 0), tpm.header(rsp)
    both(t)


def test_get_random_nonblocking_poll():
    # What tpm2-tss's device TCTI does: O_NONBLOCK write, poll for POLLIN, read.
    def t(node):
        with Node(node, nonblock=True) as n:
            assert n.write(tpm.get_random(8)) == 12
            events = n.poll(10000)
            assert events == [(n.fd, select.POLLIN)], events
            rsp = n.read(4096)
            assert tpm.rc_of(rsp) == 0 and len(rsp) == 20
    both(t)


def test_partial_reads_header_then_body():
    # The TCTI reads the 10-byte header, then the rest.
    def t(node):
        with Node(node, nonblock=True) as n:
            n.write(tpm.get_random(32))
            assert n.poll(10000)
            hdr = n.read(10)
            assert len(hdr) == 10
            size = tpm.header(hdr)[1]
            assert size == 44
            assert n.poll(0), "poll must still report the rest of the response"
            body = n.read(4096)
            assert len(body) == size - 10
            # Nothing left: poll reports writable only.
            p = select.poll()
            p.register(n.fd, select.POLLIN | select.POLLOUT)
            assert p.poll(0) == [(n.fd, select.POLLOUT)]
    both(t)


def test_second_write_before_read_is_ebusy():
    def t(node):
        with Node(node) as n:
            n.write(tpm.get_random(8))
            try:
                n.write(tpm.get_random(8))
            except OSError as e:
                assert e.errno == errno.EBUSY, e
            else:
                raise AssertionError("second write accepted")
            assert tpm.rc_of(n.read()) == 0
            # After the read, writes are accepted again.
            assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
    both(t)


def test_partial_read_then_write_is_accepted():
    def t(node):
        with Node(node) as n:
            n.write(tpm.get_random(8))
            assert len(n.read(4)) == 4
            assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
    both(t)


def test_oversize_write_is_e2big():
    def t(node):
        with Node(node) as n:
            cmd = tpm.command(tpm.CC_GET_RANDOM, b"\x00\x08" + b"\x00" * 4090)
            assert len(cmd) == 4102
            n.expect_errno(cmd, errno.E2BIG)
    both(t)


def test_write_shorter_than_size_field_is_einval():
    def t(node):
        with Node(node) as n:
            cmd = bytearray(tpm.get_random(8))
            cmd[2:6] = struct.pack(">I", 64)
            n.expect_errno(bytes(cmd), errno.EINVAL)
            # The file is still usable.
            assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
    both(t)


def test_too_short_write_is_einval():
    def t(node):
        with Node(node) as n:
            n.expect_errno(b"\x80\x01\x00\x00", errno.EINVAL)
    both(t)


def test_read_before_write_returns_nothing():
    def t(node):
        with Node(node) as n:
            assert n.read(4096) == b""
    both(t)


def test_unknown_command_code_rm_layer_response():
    def t(node):
        with Node(node) as n:
            rsp = n.transact(tpm.command(0x0000FFFF))
            assert tpm.header(rsp) == (0x8001, 10, 0x000B0143), hex(tpm.rc_of(rsp))
    both(t)


def test_full_4096_byte_command():
    # A 4096-byte command must reach the TPM (which answers with a TPM-format error for the
    # trailing bytes): no E2BIG, no transport failure.
    def t(node):
        with Node(node) as n:
            cmd = bytearray(tpm.get_random(8) + b"\x00" * (4096 - 12))
            cmd[2:6] = struct.pack(">I", 4096)
            rsp = n.transact(bytes(cmd))
            assert len(rsp) == 10 and tpm.rc_of(rsp) != 0, rsp.hex()
    both(t)


def test_nonblocking_error_comes_back_from_read():
    # FlushContext of a transient handle the space never had: EINVAL, reported by the read
    # after an O_NONBLOCK write (prior-art section 6).
    def t(node):
        with Node(node, nonblock=True) as n:
            assert n.write(tpm.flush_context(0x80FFFFF0)) == 14
            assert n.poll(10000)
            try:
                n.read(4096)
            except OSError as e:
                assert e.errno == errno.EINVAL, e
            else:
                raise AssertionError("no error")
    both(t)


def test_tpm2_tools_getrandom_through_tpmrs0():
    outs = [tpm.tpm2("getrandom", "--hex", "16").stdout.strip() for _ in range(2)]
    for out in outs:
        assert re.fullmatch(r"[0-9a-f]{32}", out), out
    assert outs[0] != outs[1], outs


def test_many_opens_and_closes():
    for _ in range(200):
        fd = os.open("/dev/tpmrs0", os.O_RDWR)
        os.close(fd)
    with Node() as n:
        assert tpm.rc_of(n.transact(tpm.get_random(8))) == 0
