# SPDX-License-Identifier: GPL-2.0
"""The resource manager through /dev/tpmrs0, where only the kernel can show it: parity with
tpmrm0's object limit, isolation of spaces (with the errno tpmrm0 gives) and of users (the
node's permissions), and a real tpm2-tools flow, leaving nothing in the TPM. What the
protocol core does with objects, context save/load, FlushContext and close is tested on the
host against swtpm (rust/proto/tests/swtpm.rs), not again here."""

import errno
import os
import struct
import tempfile

import tpm
from tpm import Node

RM_HANDLE_ERROR_MASK = 0xFFFF0000


def setup_each():
    # Every test starts and must end with nothing of anyone's in the TPM.
    left = tpm.census()
    assert left == [], f"TPM not clean before the test: {[hex(h) for h in left]}"


def create_primary(n):
    rsp = n.transact(tpm.create_primary())
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    return tpm.response_handle(rsp)


def transient_handles(n):
    rsp = n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, 0x80000000, 256))
    assert tpm.rc_of(rsp) == 0
    return tpm.handles_in(rsp)


def session_handles(n):
    out = []
    for first in (0x02000000, 0x03000000):
        rsp = n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, first, 256))
        assert tpm.rc_of(rsp) == 0
        out += tpm.handles_in(rsp)
    return out


def test_fourth_object_fails_on_tpmrm0():
    # The limit tpmrs removes, measured on the reference node in the same run: tpmrm0 keeps
    # 3 objects per space (ENOMEM past that) and loads all of them around every command, so
    # with swtpm's 3 object slots a 4th object already fails in the TPM (TPM_RC_OBJECT_MEMORY).
    with Node("/dev/tpmrm0") as n:
        for _ in range(3):
            create_primary(n)
        try:
            rsp = n.transact(tpm.create_primary())
        except OSError as e:
            assert e.errno == errno.ENOMEM, e
        else:
            assert tpm.rc_of(rsp) & 0xFFF == 0x902, hex(tpm.rc_of(rsp))


def test_spaces_are_isolated():
    with Node() as a, Node() as b:
        ha = create_primary(a)
        sa = a.transact(tpm.start_auth_session_hmac())
        assert tpm.rc_of(sa) == 0
        sess_a = tpm.response_handle(sa)
        # b sees neither a's object nor a's session.
        assert transient_handles(b) == []
        assert sess_a not in session_handles(b)
        assert sess_a in session_handles(a)
        # b can neither use nor flush a's object: a virtual handle means nothing in b.
        b.expect_errno(tpm.command(tpm.CC_READ_PUBLIC, struct.pack(">I", ha)), errno.EINVAL)
        b.expect_errno(tpm.flush_context(ha), errno.EINVAL)
        # b cannot flush or save a's session: an RM-layer handle error, nothing sent.
        rsp = b.transact(tpm.flush_context(sess_a))
        assert tpm.rc_of(rsp) & RM_HANDLE_ERROR_MASK == tpm.TSS2_RESMGR_TPM_RC_LAYER, hex(tpm.rc_of(rsp))
        rsp = b.transact(tpm.context_save(sess_a))
        assert tpm.rc_of(rsp) & RM_HANDLE_ERROR_MASK == tpm.TSS2_RESMGR_TPM_RC_LAYER, hex(tpm.rc_of(rsp))
        # a still owns both.
        assert tpm.rc_of(a.transact(tpm.flush_context(sess_a))) == 0
        assert tpm.rc_of(a.transact(tpm.flush_context(ha))) == 0
    assert tpm.census() == []


def test_tpm2_tools_key_session_sign_verify_and_unseal():
    with tempfile.TemporaryDirectory() as d:
        p = lambda f: os.path.join(d, f)  # noqa: E731
        tpm.tpm2("createprimary", "-C", "o", "-G", "ecc256", "-c", p("primary.ctx"))
        tpm.tpm2("create", "-C", p("primary.ctx"), "-G", "ecc256", "-u", p("k.pub"), "-r", p("k.priv"))
        tpm.tpm2("load", "-C", p("primary.ctx"), "-u", p("k.pub"), "-r", p("k.priv"), "-c", p("k.ctx"))
        with open(p("msg"), "w") as f:
            f.write("tpmrs")
        tpm.tpm2("startauthsession", "-S", p("s.ctx"), "--hmac-session")
        tpm.tpm2("sign", "-c", p("k.ctx"), "-g", "sha256", "-o", p("sig"), "-p", f"session:{p('s.ctx')}", p("msg"))
        tpm.tpm2("flushcontext", p("s.ctx"))
        tpm.tpm2("verifysignature", "-c", p("k.ctx"), "-g", "sha256", "-m", p("msg"), "-s", p("sig"))
        # Seal and unseal a secret under the primary.
        with open(p("secret"), "w") as f:
            f.write("sealed by tpmrs")
        tpm.tpm2("create", "-C", p("primary.ctx"), "-i", p("secret"), "-u", p("s.pub"), "-r", p("s.priv"))
        tpm.tpm2("load", "-C", p("primary.ctx"), "-u", p("s.pub"), "-r", p("s.priv"), "-c", p("seal.ctx"))
        out = tpm.tpm2("unseal", "-c", p("seal.ctx")).stdout
        assert out == "sealed by tpmrs", out
    assert tpm.census() == []


def test_spaces_of_different_users_are_isolated():
    """The node opened by another user (made world-accessible for the test; the udev rule
    gives root:tss 0660): that user's process can neither use, flush, save nor list root's
    object and session."""
    st = os.stat("/dev/tpmrs0")
    os.chmod("/dev/tpmrs0", 0o666)
    try:
        with Node() as a:
            ha = create_primary(a)
            sa = tpm.response_handle(a.transact(tpm.start_auth_session_hmac()))
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                verdict = b"ok"
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    with Node() as b:
                        assert transient_handles(b) == []
                        assert sa not in session_handles(b)
                        b.expect_errno(tpm.command(tpm.CC_READ_PUBLIC, struct.pack(">I", ha)), errno.EINVAL)
                        b.expect_errno(tpm.flush_context(ha), errno.EINVAL)
                        for cmd in (tpm.flush_context(sa), tpm.context_save(sa), tpm.policy_restart(sa)):
                            rc = tpm.rc_of(b.transact(cmd))
                            assert rc & RM_HANDLE_ERROR_MASK == tpm.TSS2_RESMGR_TPM_RC_LAYER, hex(rc)
                        # Its own work is fine.
                        create_primary(b)
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    verdict = repr(e).encode()
                finally:
                    os.write(w, verdict)
                    os._exit(0)
            os.close(w)
            verdict = os.read(r, 4096)
            os.close(r)
            os.waitpid(pid, 0)
            assert verdict == b"ok", verdict
            # root's object and session are untouched.
            assert tpm.rc_of(a.transact(tpm.command(tpm.CC_READ_PUBLIC, struct.pack(">I", ha)))) == 0
            assert tpm.rc_of(a.transact(tpm.flush_context(sa))) == 0
    finally:
        os.chmod("/dev/tpmrs0", st.st_mode & 0o7777)
    assert tpm.census() == []
