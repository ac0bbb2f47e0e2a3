# SPDX-License-Identifier: GPL-2.0
"""Raw TPM 2.0 commands for the guest tests: marshaling helpers and a client for a
/dev/tpmrm0-style node (blocking and O_NONBLOCK + poll, like tpm2-tss's device TCTI)."""

import errno
import hashlib
import hmac
import os
import select
import struct
import subprocess
import time

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_RH_NULL = 0x40000007

CC_GET_RANDOM = 0x17B
CC_GET_CAPABILITY = 0x17A
CC_FLUSH_CONTEXT = 0x165
CC_CREATE_PRIMARY = 0x131
CC_CONTEXT_SAVE = 0x162
CC_CONTEXT_LOAD = 0x161
CC_START_AUTH_SESSION = 0x176
CC_SIGN = 0x15D
CC_READ_PUBLIC = 0x173

TPM_CAP_HANDLES = 1
TSS2_RESMGR_TPM_RC_LAYER = 11 << 16
TPM_RC_COMMAND_CODE = 0x143


def command(cc, body=b"", tag=TPM_ST_NO_SESSIONS):
    return struct.pack(">HII", tag, 10 + len(body), cc) + body


def pw_auth(password=b""):
    """An authorization area with one password session."""
    sess = struct.pack(">IH", TPM_RS_PW, 0) + b"\x00" + struct.pack(">H", len(password)) + password
    return struct.pack(">I", len(sess)) + sess


def tpm2b(data):
    return struct.pack(">H", len(data)) + data


def header(rsp):
    tag, size, rc = struct.unpack(">HII", rsp[:10])
    return tag, size, rc


def rc_of(rsp):
    return header(rsp)[2]


def get_random(n=8):
    return command(CC_GET_RANDOM, struct.pack(">H", n))


def get_capability(cap, prop, count):
    return command(CC_GET_CAPABILITY, struct.pack(">III", cap, prop, count))


def flush_context(handle):
    return command(CC_FLUSH_CONTEXT, struct.pack(">I", handle))


# An RSA-2048 restricted decryption (storage) primary template, the classic SRK.
RSA_STORAGE_TEMPLATE = (
    struct.pack(">HHI", 0x0001, 0x000B, 0x00030072)  # RSA, SHA256, fixedTPM|fixedParent|
    # sensitiveDataOrigin|userWithAuth|restricted|decrypt
    + tpm2b(b"")  # authPolicy
    + struct.pack(">HHH", 0x0006, 128, 0x0043)  # AES-128-CFB
    + struct.pack(">H", 0x0010)  # scheme NULL
    + struct.pack(">HI", 2048, 0)  # keyBits, exponent
    + tpm2b(b"")  # unique
)

# An ECC P-256 restricted decryption primary: much faster to create on swtpm.
ECC_STORAGE_TEMPLATE = (
    struct.pack(">HHI", 0x0023, 0x000B, 0x00030072)
    + tpm2b(b"")
    + struct.pack(">HHH", 0x0006, 128, 0x0043)
    + struct.pack(">H", 0x0010)  # scheme NULL
    + struct.pack(">H", 0x0003)  # NIST P-256
    + struct.pack(">H", 0x0010)  # kdf NULL
    + tpm2b(b"")
    + tpm2b(b"")
)


def create_primary(template=ECC_STORAGE_TEMPLATE, hierarchy=TPM_RH_OWNER):
    body = (
        struct.pack(">I", hierarchy)
        + pw_auth()
        + tpm2b(struct.pack(">H", 0) + struct.pack(">H", 0))  # inSensitive: empty auth, data
        + tpm2b(template)
        + tpm2b(b"")  # outsideInfo
        + struct.pack(">I", 0)  # creationPCR: empty
    )
    return command(CC_CREATE_PRIMARY, body, TPM_ST_SESSIONS)


def start_auth_session_hmac():
    """An unbound, unsalted HMAC session with SHA-256."""
    body = (
        struct.pack(">II", TPM_RH_NULL, TPM_RH_NULL)
        + tpm2b(b"\x11" * 16)  # nonceCaller
        + tpm2b(b"")  # encryptedSalt
        + struct.pack(">B", 0x00)  # TPM_SE_HMAC
        + struct.pack(">H", 0x0010)  # symmetric NULL
        + struct.pack(">H", 0x000B)  # SHA-256
    )
    return command(CC_START_AUTH_SESSION, body)


def tpm_property(node, prop):
    """One TPM_CAP_TPM_PROPERTIES value."""
    rsp = node.transact(get_capability(6, prop, 1))
    assert rc_of(rsp) == 0, hex(rc_of(rsp))
    count, got, value = struct.unpack(">III", rsp[15:27])
    assert count == 1 and got == prop, (count, hex(got))
    return value


def context_save(handle):
    return command(CC_CONTEXT_SAVE, struct.pack(">I", handle))


def context_load(blob):
    return command(CC_CONTEXT_LOAD, blob)


def response_handle(rsp):
    return struct.unpack(">I", rsp[10:14])[0]


def handles_in(rsp):
    """The handle list of a GetCapability(TPM_CAP_HANDLES) response."""
    more, cap, count = struct.unpack(">BII", rsp[10:19])
    return [struct.unpack(">I", rsp[19 + 4 * i : 23 + 4 * i])[0] for i in range(count)]


class Node:
    """One open file of a /dev/tpmrm0-style node."""

    def __init__(self, path="/dev/tpmrs0", nonblock=False):
        self.path = path
        flags = os.O_RDWR | (os.O_NONBLOCK if nonblock else 0)
        self.fd = os.open(path, flags)
        self.nonblock = nonblock

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, data):
        return os.write(self.fd, data)

    def read(self, n=4096):
        return os.read(self.fd, n)

    def poll(self, timeout_ms=10000):
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return p.poll(timeout_ms)

    def transact(self, cmd):
        """Sends a command, returns the response (raises OSError on an errno)."""
        n = self.write(cmd)
        assert n == len(cmd), (n, len(cmd))
        if self.nonblock:
            events = self.poll()
            assert events, "no response within 10 s"
        return self.read(4096)

    def expect_errno(self, cmd, err):
        """Sends a command that must fail with errno `err` (at write, or at read)."""
        try:
            self.transact(cmd)
        except OSError as e:
            assert e.errno == err, f"errno {errno.errorcode.get(e.errno)} != {errno.errorcode.get(err)}"
            return
        raise AssertionError(f"expected {errno.errorcode.get(err)}, got a response")


def tpm2(*args, node="/dev/tpmrs0", check=True):
    """Runs a tpm2-tools command against `node`; returns stdout."""
    env = dict(os.environ, TPM2TOOLS_TCTI=f"device:{node}")
    p = subprocess.run(["tpm2", *args], env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"tpm2 {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


# An unrestricted ECC P-256 ECDSA/SHA-256 signing key template.
ECC_SIGNING_TEMPLATE = (
    struct.pack(">HHI", 0x0023, 0x000B, 0x00040072)  # fixedTPM|fixedParent|sensitiveDataOrigin|
    # userWithAuth|sign
    + tpm2b(b"")
    + struct.pack(">H", 0x0010)  # symmetric NULL
    + struct.pack(">HH", 0x0018, 0x000B)  # ECDSA with SHA-256
    + struct.pack(">H", 0x0003)  # NIST P-256
    + struct.pack(">H", 0x0010)  # kdf NULL
    + tpm2b(b"")
    + tpm2b(b"")
)

CC_SIGN = 0x15D
TPM_ST_HASHCHECK = 0x8024


def read_public_name(node, handle):
    rsp = node.transact(command(CC_READ_PUBLIC, struct.pack(">I", handle)))
    assert rc_of(rsp) == 0, hex(rc_of(rsp))
    off = 10
    (size,) = struct.unpack(">H", rsp[off : off + 2])
    off += 2 + size
    (size,) = struct.unpack(">H", rsp[off : off + 2])
    return rsp[off + 2 : off + 2 + size]


class HmacSession:
    """An unbound, unsalted SHA-256 HMAC session used to authorize objects with an empty
    authValue: the HMAC key is empty, the nonces roll with every command."""

    def __init__(self, node):
        # hashlib and hmac are imported with this module, before any fork: imported here,
        # the 32 clients of a fair-share run each loaded them over 9p after the go, and on
        # the debug guest the first StartAuthSession came up to 4 s after it, later for some
        # clients than for others.
        self.hashlib, self.hmac = hashlib, hmac
        rsp = node.transact(start_auth_session_hmac())
        assert rc_of(rsp) == 0, hex(rc_of(rsp))
        self.handle = response_handle(rsp)
        (size,) = struct.unpack(">H", rsp[14:16])
        self.nonce_tpm = rsp[16 : 16 + size]

    def auth_area(self, cc, names, params, attrs=0x01):
        nonce_caller = os.urandom(16)
        cp = self.hashlib.sha256(struct.pack(">I", cc) + b"".join(names) + params).digest()
        mac = self.hmac.new(b"", cp + nonce_caller + self.nonce_tpm + bytes([attrs]), "sha256").digest()
        sess = struct.pack(">I", self.handle) + tpm2b(nonce_caller) + bytes([attrs]) + tpm2b(mac)
        return struct.pack(">I", len(sess)) + sess

    def update(self, rsp):
        """Takes the TPM's new nonce from a response with sessions."""
        if rc_of(rsp) != 0:
            return
        (param_size,) = struct.unpack(">I", rsp[10:14])
        off = 14 + param_size
        (size,) = struct.unpack(">H", rsp[off : off + 2])
        self.nonce_tpm = rsp[off + 2 : off + 2 + size]


def sign_with_session(node, key, name, session, digest=b"\x5a" * 32):
    params = (
        tpm2b(digest)
        + struct.pack(">HH", 0x0018, 0x000B)  # ECDSA, SHA-256
        + struct.pack(">HI", TPM_ST_HASHCHECK, TPM_RH_NULL)
        + tpm2b(b"")
    )
    auth = session.auth_area(CC_SIGN, [name], params)
    cmd = command(CC_SIGN, struct.pack(">I", key) + auth + params, TPM_ST_SESSIONS)
    rsp = node.transact(cmd)
    session.update(rsp)
    return rsp


def tpmrs_stats():
    """The resource manager's counters from /sys/kernel/debug/tpmrs/stats."""
    with open("/sys/kernel/debug/tpmrs/stats") as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


CC_POLICY_RESTART = 0x180


def start_auth_session_policy():
    """An unbound, unsalted SHA-256 policy session."""
    cmd = bytearray(start_auth_session_hmac())
    cmd[10 + 8 + 2 + 16 + 2] = 0x01  # TPM_SE_POLICY
    return bytes(cmd)


def policy_restart(session):
    return command(CC_POLICY_RESTART, struct.pack(">I", session))


def direct(cmd):
    """One command through /dev/tpm0, no resource manager (the kernel adds nothing, and a
    command it fails shows as OSError); its response."""
    fd = os.open("/dev/tpm0", os.O_RDWR)
    try:
        os.write(fd, cmd)
        return os.read(fd, 4096)
    finally:
        os.close(fd)


class KernelQuiet:
    """While in effect, the kernel's own TPM traffic stays out of swtpm's command log: the
    hwrng thread, which reads the TPM (with CONFIG_TCG_TPM2_HMAC, in an HMAC session of the
    kernel's: a ContextLoad of its null key, StartAuthSession, FlushContext, GetRandom, and
    the FlushContext of the session when tpmrs takes the chip), is stopped by setting the
    hwrng's quality to 0 and dropping the current rng (``rng_current`` = ``none``), and the
    kernel's session left from before is ended first by one command through /dev/tpmrs0.
    With the quality alone, one kernel read still fell inside a count (test_traffic, 5
    commands too many, in the make test of 0472bc8). Afterwards the quality is set back and
    the best rng chosen again."""

    QUALITY = "/sys/class/misc/hw_random/rng_quality"
    CURRENT = "/sys/class/misc/hw_random/rng_current"

    def __enter__(self):
        self.quality = None
        self.dropped = False
        try:
            with open(self.QUALITY) as f:
                self.quality = f.read().strip()
            with open(self.QUALITY, "w") as f:
                f.write("0")
        except OSError:
            self.quality = None
        try:
            with open(self.CURRENT, "w") as f:
                f.write("none")
            self.dropped = True
        except OSError:
            pass
        time.sleep(0.2)  # a read under way ends
        with Node("/dev/tpmrs0") as n:
            assert rc_of(n.transact(get_random(8))) == 0
        return self

    def __exit__(self, *exc):
        if self.quality is not None:
            with open(self.QUALITY, "w") as f:
                f.write(self.quality)
        if self.dropped:
            with open(self.CURRENT, "w") as f:
                f.write("\n")


def settle(timeout=30.0):
    """Waits until tpmrs has done the closes of the files released so far: release() never
    waits for TPM work and leaves the flushes of a closed file's contexts to the module's
    workqueue; the gauge closing_spaces counts the files whose close is not done yet.
    Returns at once if tpmrs is not loaded."""
    end = time.monotonic() + timeout
    while True:
        try:
            closing = tpmrs_stats().get("closing_spaces", 0)
        except OSError:
            return
        if closing == 0 or time.monotonic() > end:
            return
        time.sleep(0.02)


def census():
    """Every transient object and session in the TPM, asked through /dev/tpm0 (no RM):
    loaded objects (0x80...), loaded sessions (0x02.../0x03...) and saved sessions, which
    the TPM lists under TPM_HT_SAVED_SESSION in their HMAC form (0x02...) whatever their
    type (the reference implementation's SessionCapGetSaved); they are returned here with
    bit 28 set (0x12.../0x13...) to tell them apart. Waits first for the closes of files
    already released (settle)."""
    settle()
    found = []
    for first, kinds, mark in ((0x80000000, (0x80,), 0), (0x02000000, (0x02, 0x03), 0),
                               (0x03000000, (0x02, 0x03), 0x10000000)):
        rsp = direct(get_capability(TPM_CAP_HANDLES, first, 256))
        assert rc_of(rsp) == 0, hex(rc_of(rsp))
        found += [h | mark for h in handles_in(rsp) if h >> 24 in kinds]
    return found


def answer(fn):
    """What one step got, comparable across nodes: ('rc', code) when it returned a response
    (bytes) or a response code (int), the step's own (kind, value) tuple as it is, or
    ('errno', code) when it raised OSError."""
    try:
        v = fn()
    except OSError as e:
        return ("errno", e.errno)
    if isinstance(v, (bytes, bytearray)):
        return ("rc", rc_of(v))
    if isinstance(v, int):
        return ("rc", v)
    return v


class Child:
    """A forked client process and the parent's ends of its pipes: `out` (what it writes as
    its result), `ready` (it says it is set up; None if not asked for) and `go` (it waits on
    it to start)."""

    def __init__(self, pid, out, ready, go):
        self.pid, self.out, self.ready, self.go = pid, out, ready, go


def fork_child(body, ready=True):
    """Forks a process that runs body(out_w, ready_w, go_r) and exits (ready_w is None
    without `ready`); returns its Child."""
    out_r, out_w = os.pipe()
    ready_r, ready_w = os.pipe() if ready else (None, None)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        try:
            body(out_w, ready_w, go_r)
        finally:
            os._exit(0)
    for fd in (out_w, ready_w, go_r):
        if fd is not None:
            os.close(fd)
    return Child(pid, out_r, ready_r, go_w)


def start_together(children):
    """Waits until every child is set up (or crashed: EOF), then starts them all: the go,
    at which every client's clock starts."""
    for c in children:
        if c.ready is not None:
            os.read(c.ready, 1)
            os.close(c.ready)
    for c in children:
        os.write(c.go, b"g")
        os.close(c.go)


def collect(child):
    """All the child wrote as its result, once it has exited."""
    data = b""
    while chunk := os.read(child.out, 65536):
        data += chunk
    os.close(child.out)
    os.waitpid(child.pid, 0)
    return data.decode()
