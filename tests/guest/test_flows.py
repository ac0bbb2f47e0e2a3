# SPDX-License-Identifier: GPL-2.0
"""Protocol flows real TSS stacks use (issue 11), each run on /dev/tpmrm0 and on /dev/tpmrs0
in the same guest run: tpmrs0 must behave as the kernel's resource manager does. Raw commands
with real session HMACs (checked in both directions), and tpm2-tools for salted, bound and
encrypting sessions. Every test leaves the TPM as it found it (checked through /dev/tpm0)."""

import errno
import functools
import hashlib
import hmac
import os
import struct
import tempfile

import tpm
from tpm import Node, command, rc_of, tpm2b

NODES = ("/dev/tpmrm0", "/dev/tpmrs0")
RM_LAYER = tpm.TSS2_RESMGR_TPM_RC_LAYER

CC_CREATE_LOADED = 0x191
CC_LOAD_EXTERNAL = 0x167
CC_HMAC = 0x155
CC_HMAC_START = 0x15B
CC_HASH_SEQUENCE_START = 0x186
CC_SEQUENCE_UPDATE = 0x15C
CC_SEQUENCE_COMPLETE = 0x13E
CC_EVENT_SEQUENCE_COMPLETE = 0x185
CC_POLICY_SECRET = 0x151
CC_POLICY_GET_DIGEST = 0x189

SE_HMAC, SE_POLICY = 0x00, 0x01
SEQ_NAME = b""  # a sequence object's Name in cpHash is empty (libtpms), not its handle
CONTINUE, AUDIT = 0x01, 0x80  # TPMA_SESSION continueSession, audit
SYM_NULL = struct.pack(">H", 0x0010)


def u32(v):
    return struct.pack(">I", v)


def census():
    """Every transient object and loaded or saved session in the TPM, through /dev/tpm0."""
    found = []
    with Node("/dev/tpm0") as n:
        for first in (0x80000000, 0x02000000, 0x03000000):
            rsp = n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, first, 256))
            assert rc_of(rsp) == 0, hex(rc_of(rsp))
            found += [(first, h) for h in tpm.handles_in(rsp) if h >> 24 in (0x80, 0x02, 0x03)]
    return found


def setup_each():
    left = census()
    assert left == [], f"TPM not clean before the test: {[hex(h) for _, h in left]}"


def on_both_nodes(fn):
    """Registers fn(node) as test_<name>_tpmrm0 and test_<name>_tpmrs0; each must leave
    nothing in the TPM."""

    def run(node):
        try:
            fn(node)
        finally:
            left = census()
            if left:  # so that one failure does not fail every test after it
                with Node("/dev/tpm0") as raw:
                    for _, h in left:
                        raw.transact(tpm.flush_context(h))
        assert left == [], f"left in the TPM after the test: {[hex(h) for _, h in left]}"

    for node in NODES:
        t = functools.partial(run, node)
        t.__name__ = f"test_{fn.__name__}_{node[5:]}"
        globals()[t.__name__] = t
    return fn


class Session:
    """An unbound, unsalted SHA-256 session (HMAC or policy): its key is empty, so every HMAC
    it makes or checks is keyed by the authValue of the entity it authorizes (empty here)."""

    def __init__(self, node, se=SE_HMAC):
        body = u32(tpm.TPM_RH_NULL) * 2 + tpm2b(os.urandom(16)) + tpm2b(b"") + bytes([se]) + SYM_NULL
        rsp = node.transact(command(tpm.CC_START_AUTH_SESSION, body + struct.pack(">H", 0x000B)))
        assert rc_of(rsp) == 0, f"StartAuthSession: {rc_of(rsp):#x}"
        self.handle = tpm.response_handle(rsp)
        (size,) = struct.unpack(">H", rsp[14:16])
        self.nonce_tpm = rsp[16 : 16 + size]
        self.nonce_caller = b""

    def area(self, cp_hash, attrs):
        self.nonce_caller = os.urandom(16)
        self.attrs = attrs
        mac = hmac.new(b"", cp_hash + self.nonce_caller + self.nonce_tpm + bytes([attrs]), "sha256").digest()
        return u32(self.handle) + tpm2b(self.nonce_caller) + bytes([attrs]) + tpm2b(mac)


PW = None  # a password session (empty password) in a session list


def run(node, cc, handles, names, params, sessions, rsp_handles=0):
    """Sends cc with its handles, params and one authorization per (session, attrs) in
    `sessions` (PW for a password session). On success, takes every session's new nonceTPM
    and checks the TPM's response HMAC of each HMAC session. Returns (rc, response handles,
    response parameters)."""
    cp_hash = hashlib.sha256(u32(cc) + b"".join(names) + params).digest()
    areas = b""
    for s, attrs in sessions:
        if s is PW:
            areas += u32(tpm.TPM_RS_PW) + tpm2b(b"") + b"\x00" + tpm2b(b"")
        else:
            areas += s.area(cp_hash, attrs)
    body = b"".join(u32(h) for h in handles) + u32(len(areas)) + areas + params
    rsp = node.transact(command(cc, body, tpm.TPM_ST_SESSIONS))
    rc = rc_of(rsp)
    if rc != 0:
        assert len(rsp) == 10, f"an error response with a body: {rsp.hex()}"
        return rc, [], b""
    assert struct.unpack(">H", rsp[:2])[0] == tpm.TPM_ST_SESSIONS
    hs = [struct.unpack(">I", rsp[10 + 4 * i : 14 + 4 * i])[0] for i in range(rsp_handles)]
    off = 10 + 4 * rsp_handles
    (psize,) = struct.unpack(">I", rsp[off : off + 4])
    rparams = rsp[off + 4 : off + 4 + psize]
    off += 4 + psize
    rp_hash = hashlib.sha256(u32(0) + u32(cc) + rparams).digest()
    for s, attrs in sessions:
        (n,) = struct.unpack(">H", rsp[off : off + 2])
        nonce = rsp[off + 2 : off + 2 + n]
        off += 2 + n
        rattrs = rsp[off]
        off += 1
        (m,) = struct.unpack(">H", rsp[off : off + 2])
        mac = rsp[off + 2 : off + 2 + m]
        off += 2 + m
        if s is PW:
            continue
        s.nonce_tpm = nonce
        want = hmac.new(b"", rp_hash + nonce + s.nonce_caller + bytes([rattrs]), "sha256").digest()
        assert mac == want, f"response HMAC of session {s.handle:#x} does not verify"
    assert off == len(rsp), "trailing bytes in the response"
    return rc, hs, rparams


def create_primary(n, template=tpm.ECC_STORAGE_TEMPLATE):
    rsp = n.transact(tpm.create_primary(template))
    assert rc_of(rsp) == 0, f"CreatePrimary: {rc_of(rsp):#x}"
    return tpm.response_handle(rsp)


def flush(n, h):
    rc = rc_of(n.transact(tpm.flush_context(h)))
    assert rc == 0, f"FlushContext({h:#x}): {rc:#x}"


def transient_handles(n):
    rsp = n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, 0x80000000, 256))
    assert rc_of(rsp) == 0, hex(rc_of(rsp))
    return tpm.handles_in(rsp)


def is_gone(n, h):
    """A handle the client no longer has: FlushContext of it fails, with an error response
    (TPM or RM layer) or, as tpmrm0 does for a handle it cannot map, EINVAL."""
    try:
        return rc_of(n.transact(tpm.flush_context(h))) != 0
    except OSError as e:
        assert e.errno == errno.EINVAL, e
        return True


# A keyed-hash HMAC key (SHA-256) with an empty authValue.
HMAC_KEY_TEMPLATE = (
    struct.pack(">HHI", 0x0008, 0x000B, 0x00040072)  # KEYEDHASH, SHA256, fixedTPM|fixedParent|
    # sensitiveDataOrigin|userWithAuth|sign
    + tpm2b(b"")
    + struct.pack(">HH", 0x0005, 0x000B)  # scheme HMAC, SHA-256
    + tpm2b(b"")
)


def hmac_command(n, key, name, data, sessions):
    params = tpm2b(data) + struct.pack(">H", 0x000B)
    rc, _, rparams = run(n, CC_HMAC, [key], [name], params, sessions)
    assert rc == 0, f"HMAC: {rc:#x}"
    (size,) = struct.unpack(">H", rparams[:2])
    return rparams[2 : 2 + size]


# --- tpm2-tools: flushcontext -s / -l / -t, getcap handles-saved-session ---------------------


def tools_saved_session(node, d, kind="--policy-session"):
    """A session started by tpm2-tools, saved to a file when the tool exits; returns the
    session's handle as saved in the file: the tools' session header, then a context file
    (magic 0xBADCC0DE, version, TPMS_CONTEXT: hierarchy, savedHandle, sequence, blob)."""
    path = os.path.join(d, "s.ctx")
    tpm.tpm2("startauthsession", kind, "-S", path, node=node)
    with open(path, "rb") as f:
        blob = f.read()
    at = blob.index(b"\xba\xdc\xc0\xde", 4)
    _version, _hierarchy, handle = struct.unpack(">III", blob[at + 4 : at + 16])
    assert handle >> 24 == 0x03, f"not a policy session handle: {handle:#x}"
    return path, handle


@on_both_nodes
def tools_getcap_handles_saved_session(node):
    with tempfile.TemporaryDirectory() as d:
        path, handle = tools_saved_session(node, d)
        out = tpm.tpm2("getcap", "handles-saved-session", node=node).stdout
        listed = [int(x.strip("- "), 16) for x in out.split() if x.strip("- ").startswith("0x")]
        assert any(h & 0xFFFFFF == handle & 0xFFFFFF for h in listed), \
            f"saved session {handle:#x} not in `tpm2 getcap handles-saved-session`: {out!r}"
        tpm.tpm2("flushcontext", path, node=node)


@on_both_nodes
def tools_flushcontext_saved_sessions(node):
    with tempfile.TemporaryDirectory() as d:
        _, handle = tools_saved_session(node, d)
        assert any(h & 0xFFFFFF == handle & 0xFFFFFF for _, h in census())
        tpm.tpm2("flushcontext", "-s", node=node)
        assert not any(h & 0xFFFFFF == handle & 0xFFFFFF for _, h in census()), \
            "`tpm2 flushcontext -s` left the saved policy session in the TPM"


@on_both_nodes
def tools_flushcontext_transient_and_loaded_spare_other_clients(node):
    # -t and -l flush what the tool's own open file sees: they must succeed and must not
    # touch another client's object or session.
    with Node(node) as a:
        key = create_primary(a)
        s = Session(a, SE_POLICY)
        tpm.tpm2("flushcontext", "-t", node=node)
        tpm.tpm2("flushcontext", "-l", node=node)
        rsp = a.transact(command(tpm.CC_READ_PUBLIC, u32(key)))
        assert rc_of(rsp) == 0, f"ReadPublic after another client's flushcontext -t: {rc_of(rsp):#x}"
        rsp = a.transact(tpm.policy_restart(s.handle))
        assert rc_of(rsp) == 0, f"PolicyRestart after another client's flushcontext -l: {rc_of(rsp):#x}"


# --- session handles in both forms --------------------------------------------------------


@on_both_nodes
def policy_session_flushed_in_hmac_form(node):
    with Node(node) as n:
        s = Session(n, SE_POLICY)
        assert s.handle >> 24 == 0x03, hex(s.handle)
        hmac_form = 0x02000000 | (s.handle & 0xFFFFFF)
        rc = rc_of(n.transact(tpm.flush_context(hmac_form)))
        assert rc == 0, f"FlushContext({hmac_form:#x}) of policy session {s.handle:#x}: {rc:#x}"
        rc = rc_of(n.transact(tpm.policy_restart(s.handle)))
        assert rc != 0, "the policy session still works after it was flushed"
    assert census() == []


# --- GetCapability(TPM_CAP_HANDLES) with an audit session ----------------------------------


@on_both_nodes
def getcap_transient_handles_with_audit_session(node):
    # Either a correct answer whose response HMAC verifies (run() checks it), listing the two
    # objects this client has, or a refusal at the resource-manager layer: never a filtered
    # answer with a broken HMAC.
    with Node(node) as n:
        mine = [create_primary(n), create_primary(n)]
        s = Session(n)
        params = struct.pack(">III", tpm.TPM_CAP_HANDLES, 0x80000000, 256)
        rc, _, rparams = run(n, tpm.CC_GET_CAPABILITY, [], [], params, [(s, CONTINUE | AUDIT)])
        if rc == 0:
            listed = tpm.handles_in(b"\x00" * 10 + rparams)
            assert len(listed) == len(mine), f"{[hex(h) for h in listed]} for a client with {len(mine)} objects"
        else:
            assert rc & 0xFFFF0000 == RM_LAYER, f"GetCapability with an audit session: {rc:#x}"
        # The session is still in step with the TPM either way.
        rc, _, _ = run(n, tpm.CC_GET_RANDOM, [], [], struct.pack(">H", 8), [(s, CONTINUE | AUDIT)])
        assert rc == 0, f"GetRandom with the audit session afterwards: {rc:#x}"


# --- sequences, CreateLoaded, LoadExternal -----------------------------------------------


@on_both_nodes
def event_sequence_complete(node):
    with Node(node) as n:
        rsp = n.transact(command(CC_HASH_SEQUENCE_START, tpm2b(b"") + struct.pack(">H", 0x0010)))
        assert rc_of(rsp) == 0, f"HashSequenceStart(event): {rc_of(rsp):#x}"
        seq = tpm.response_handle(rsp)
        rc, _, _ = run(n, CC_SEQUENCE_UPDATE, [seq], [u32(seq)], tpm2b(b"event data"), [(PW, 0)])
        assert rc == 0, f"SequenceUpdate: {rc:#x}"
        # pcrHandle TPM_RH_NULL (no PCR extended), then the sequence: two authorizations.
        rc, _, rparams = run(n, CC_EVENT_SEQUENCE_COMPLETE, [tpm.TPM_RH_NULL, seq],
                             [u32(tpm.TPM_RH_NULL), u32(seq)], tpm2b(b"more"), [(PW, 0), (PW, 0)])
        assert rc == 0, f"EventSequenceComplete: {rc:#x}"
        (count,) = struct.unpack(">I", rparams[:4])
        assert count >= 1, "no digest in EventSequenceComplete's answer"
        # The sequence is gone: the client's handle list is empty and the handle is dead.
        assert transient_handles(n) == [], [hex(h) for h in transient_handles(n)]
        assert is_gone(n, seq)


@on_both_nodes
def hmac_start_and_sequence_complete(node):
    with Node(node) as n:
        key = create_primary(n, HMAC_KEY_TEMPLATE)
        name = tpm.read_public_name(n, key)
        data = b"tpmrs hmac sequence " * 8
        rc, hs, _ = run(n, CC_HMAC_START, [key], [name], tpm2b(b"") + struct.pack(">H", 0x000B),
                        [(PW, 0)], rsp_handles=1)
        assert rc == 0, f"HMAC_Start: {rc:#x}"
        seq = hs[0]
        rc, _, _ = run(n, CC_SEQUENCE_UPDATE, [seq], [u32(seq)], tpm2b(data[:50]), [(PW, 0)])
        assert rc == 0, f"SequenceUpdate: {rc:#x}"
        rc, _, rparams = run(n, CC_SEQUENCE_COMPLETE, [seq], [u32(seq)],
                             tpm2b(data[50:]) + u32(tpm.TPM_RH_NULL), [(PW, 0)])
        assert rc == 0, f"SequenceComplete: {rc:#x}"
        (size,) = struct.unpack(">H", rparams[:2])
        assert rparams[2 : 2 + size] == hmac_command(n, key, name, data, [(PW, 0)]), \
            "the sequence's HMAC differs from TPM2_HMAC over the same data"
        assert transient_handles(n) == [key]
        assert is_gone(n, seq)


@on_both_nodes
def create_loaded(node):
    with Node(node) as n:
        parent = create_primary(n)
        params = tpm2b(struct.pack(">HH", 0, 0)) + tpm2b(tpm.ECC_SIGNING_TEMPLATE)
        rc, hs, rparams = run(n, CC_CREATE_LOADED, [parent], [tpm.read_public_name(n, parent)], params,
                              [(PW, 0)], rsp_handles=1)
        assert rc == 0, f"CreateLoaded: {rc:#x}"
        key = hs[0]
        assert sorted(transient_handles(n)) == sorted([parent, key])
        s = tpm.HmacSession(n)
        rsp = tpm.sign_with_session(n, key, tpm.read_public_name(n, key), s)
        assert rc_of(rsp) == 0, f"Sign with the CreateLoaded key: {rc_of(rsp):#x}"
        flush(n, key)
        assert transient_handles(n) == [parent]


# The P-256 generator point as an external ECDSA public key.
P256_G = (bytes.fromhex("6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"),
          bytes.fromhex("4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"))


@on_both_nodes
def load_external_public_key(node):
    with Node(node) as n:
        public = (struct.pack(">HHI", 0x0023, 0x000B, 0x00040040)  # ECC, SHA256, userWithAuth|sign
                  + tpm2b(b"") + SYM_NULL + struct.pack(">HH", 0x0018, 0x000B)
                  + struct.pack(">HH", 0x0003, 0x0010) + tpm2b(P256_G[0]) + tpm2b(P256_G[1]))
        rsp = n.transact(command(CC_LOAD_EXTERNAL, struct.pack(">H", 0) + tpm2b(public) + u32(tpm.TPM_RH_NULL)))
        assert rc_of(rsp) == 0, f"LoadExternal: {rc_of(rsp):#x}"
        h = tpm.response_handle(rsp)
        assert transient_handles(n) == [h]
        name = tpm.read_public_name(n, h)
        assert name == struct.pack(">H", 0x000B) + hashlib.sha256(public).digest(), "wrong Name"
        flush(n, h)
        assert transient_handles(n) == []


# --- several sessions, policy with HMAC authorization ---------------------------------------


@on_both_nodes
def command_with_two_sessions(node):
    with Node(node) as n:
        key = create_primary(n, HMAC_KEY_TEMPLATE)
        name = tpm.read_public_name(n, key)
        auth, audit = Session(n), Session(n)
        first = hmac_command(n, key, name, b"two sessions", [(auth, CONTINUE), (audit, CONTINUE | AUDIT)])
        again = hmac_command(n, key, name, b"two sessions", [(auth, CONTINUE), (audit, CONTINUE | AUDIT)])
        assert first == again == hmac_command(n, key, name, b"two sessions", [(PW, 0)])


@on_both_nodes
def command_with_three_sessions(node):
    # EventSequenceComplete has two authorized handles; an audit session makes three.
    with Node(node) as n:
        a, b, audit = Session(n), Session(n), Session(n)
        rsp = n.transact(command(CC_HASH_SEQUENCE_START, tpm2b(b"") + struct.pack(">H", 0x0010)))
        assert rc_of(rsp) == 0
        seq = tpm.response_handle(rsp)
        rc, _, _ = run(n, CC_SEQUENCE_UPDATE, [seq], [SEQ_NAME], tpm2b(b"x" * 32), [(a, CONTINUE), (audit, CONTINUE | AUDIT)])
        assert rc == 0, f"SequenceUpdate with 2 sessions: {rc:#x}"
        rc, _, _ = run(n, CC_EVENT_SEQUENCE_COMPLETE, [tpm.TPM_RH_NULL, seq], [u32(tpm.TPM_RH_NULL), SEQ_NAME],
                       tpm2b(b""), [(a, CONTINUE), (b, CONTINUE), (audit, CONTINUE | AUDIT)])
        assert rc == 0, f"EventSequenceComplete with 3 sessions: {rc:#x}"
        # All three sessions are still in step with the TPM.
        for s in (a, b, audit):
            rc, _, _ = run(n, tpm.CC_GET_RANDOM, [], [], struct.pack(">H", 4), [(s, CONTINUE | AUDIT)])
            assert rc == 0, f"session {s.handle:#x} after the 3-session command: {rc:#x}"


def policy_secret(n, policy, auth):
    params = tpm2b(b"") + tpm2b(b"") + tpm2b(b"") + struct.pack(">i", 0)
    rc, _, _ = run(n, CC_POLICY_SECRET, [tpm.TPM_RH_OWNER, policy.handle],
                   [u32(tpm.TPM_RH_OWNER), u32(policy.handle)], params, [(auth, CONTINUE)])
    return rc


@on_both_nodes
def policy_secret_with_hmac_authorized_owner(node):
    with Node(node) as n:
        policy, auth = Session(n, SE_POLICY), Session(n)
        rc = policy_secret(n, policy, auth)
        assert rc == 0, f"PolicySecret(owner, {policy.handle:#x}) authorized by an HMAC session: {rc:#x}"


@on_both_nodes
def policy_secret_after_a_session_was_flushed_behind_the_rm(node):
    # A session of this client vanishes behind the RM's back (flushed through /dev/tpm0); the
    # next session's handle must still be its Name, or the HMAC over it breaks.
    with Node(node) as n:
        gone = Session(n, SE_POLICY)
        with Node("/dev/tpm0") as raw:
            rc = rc_of(raw.transact(tpm.flush_context(gone.handle)))
            assert rc == 0, f"flush through /dev/tpm0: {rc:#x}"
        policy, auth = Session(n, SE_POLICY), Session(n)
        rc = policy_secret(n, policy, auth)
        assert rc == 0, f"PolicySecret with {policy.handle:#x} after a flush behind the RM: {rc:#x}"


# --- salted, bound and encrypting sessions (tpm2-tools) ------------------------------------


@on_both_nodes
def tools_salted_bound_and_encrypting_sessions(node):
    with tempfile.TemporaryDirectory() as d:
        p = functools.partial(os.path.join, d)

        def t(*args):
            return tpm.tpm2(*args, node=node)

        t("createprimary", "-C", "o", "-G", "ecc256", "-c", p("prim.ctx"))
        # Salted (ECDH with the primary), then used to authorize the parent of a Create.
        t("startauthsession", "--hmac-session", "-c", p("prim.ctx"), "-S", p("salted.ctx"))
        t("create", "-C", p("prim.ctx"), "-P", f"session:{p('salted.ctx')}", "-G", "ecc256",
          "-u", p("k.pub"), "-r", p("k.priv"))
        # Parameter encryption both ways with the salted session: a sealed secret goes in
        # encrypted (decrypt) and comes out of Unseal encrypted (encrypt).
        t("sessionconfig", p("salted.ctx"), "--enable-decrypt", "--enable-encrypt")
        with open(p("secret"), "wb") as f:
            f.write(b"tpmrs sealed secret")
        t("create", "-C", p("prim.ctx"), "-P", f"session:{p('salted.ctx')}", "-i", p("secret"),
          "-u", p("s.pub"), "-r", p("s.priv"))
        t("load", "-C", p("prim.ctx"), "-u", p("s.pub"), "-r", p("s.priv"), "-c", p("seal.ctx"))
        t("unseal", "-c", p("seal.ctx"), "-p", f"session:{p('salted.ctx')}", "-o", p("out"))
        with open(p("out"), "rb") as f:
            assert f.read() == b"tpmrs sealed secret"
        out = t("getrandom", "--hex", "16", "-S", p("salted.ctx")).stdout
        assert len(out.strip()) == 32, out
        t("flushcontext", p("salted.ctx"))
        # Bound to the primary (empty auth), used for the primary and for the owner hierarchy.
        t("startauthsession", "--hmac-session", "--bind-context", p("prim.ctx"), "-S", p("bound.ctx"))
        t("create", "-C", p("prim.ctx"), "-P", f"session:{p('bound.ctx')}", "-G", "ecc256",
          "-u", p("k2.pub"), "-r", p("k2.priv"))
        t("createprimary", "-C", "o", "-P", f"session:{p('bound.ctx')}", "-G", "ecc256", "-c", p("prim2.ctx"))
        t("flushcontext", p("bound.ctx"))


# --- session blobs across open files, sessions after an RM-layer error ---------------------


def use_session_for_owner(n, s):
    """CreatePrimary under the owner hierarchy authorized by HMAC session s; flushes it."""
    body = tpm2b(struct.pack(">HH", 0, 0)) + tpm2b(tpm.ECC_STORAGE_TEMPLATE) + tpm2b(b"") + u32(0)
    rc, hs, _ = run(n, tpm.CC_CREATE_PRIMARY, [tpm.TPM_RH_OWNER], [u32(tpm.TPM_RH_OWNER)], body,
                    [(s, CONTINUE)], rsp_handles=1)
    if rc == 0:
        flush(n, hs[0])
    return rc


@on_both_nodes
def client_saved_session_loads_in_another_open_file(node):
    with Node(node) as a, Node(node) as b:
        s = Session(a)
        rsp = a.transact(tpm.context_save(s.handle))
        assert rc_of(rsp) == 0, f"ContextSave: {rc_of(rsp):#x}"
        blob = rsp[10:]
        rsp = b.transact(tpm.context_load(blob))
        assert rc_of(rsp) == 0, f"ContextLoad of a session saved by another open file: {rc_of(rsp):#x}"
        s.handle = tpm.response_handle(rsp)
        rc = use_session_for_owner(b, s)
        assert rc == 0, f"the session loaded in the other file: {rc:#x}"
        flush(b, s.handle)


@on_both_nodes
def client_saved_session_loads_after_its_file_closed(node):
    with Node(node) as a:
        s = Session(a)
        rsp = a.transact(tpm.context_save(s.handle))
        assert rc_of(rsp) == 0, f"ContextSave: {rc_of(rsp):#x}"
        blob = rsp[10:]
    with Node(node) as b:
        rsp = b.transact(tpm.context_load(blob))
        assert rc_of(rsp) == 0, f"ContextLoad after the saving file closed: {rc_of(rsp):#x}"
        s.handle = tpm.response_handle(rsp)
        rc = use_session_for_owner(b, s)
        assert rc == 0, f"the session loaded in the other file: {rc:#x}"
        flush(b, s.handle)


@on_both_nodes
def session_usable_after_an_rm_layer_error(node):
    with Node(node) as n:
        s = Session(n)
        # A command code the TPM does not have, carrying the session: the RM answers it
        # itself at its own layer (the TPM never sees it), so the session's nonces must not
        # have moved and its next use must verify.
        rc, _, _ = run(n, 0x0000FFFF, [], [], b"", [(s, CONTINUE)])
        assert rc == RM_LAYER | tpm.TPM_RC_COMMAND_CODE, f"unknown command code with a session: {rc:#x}"
        rc = use_session_for_owner(n, s)
        assert rc == 0, f"the session after the RM's error answer: {rc:#x}"
