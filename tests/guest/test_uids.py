# SPDX-License-Identifier: GPL-2.0
"""Who may touch another file's saved and abandoned sessions (issue 20, item 11), with real
credentials: processes of two test uids and root open /dev/tpmrs0 (made world-accessible
for the test, restored after). A session its client saved, abandoned at close or not, is
listed to, loadable and flushable by the files of the same uid and by root, never by
another uid; one uid abandoning many sessions does not push out another uid's. The rule
itself is tested on the host (rust/proto/tests/uids.rs); this checks that the kernel glue
gives each space its opener's uid."""

import json
import os

import tpm
from tpm import Node

UID_A = 4201
UID_B = 4202
# TPM_RC_HANDLE, parameter 1, in the resource-manager layer: what a file gets for a
# session it may not flush, or for the current blob of one it may not load.
NOT_YOURS = tpm.TSS2_RESMGR_TPM_RC_LAYER | 0x1CB
SAVED = 0x03000000
INDEX = 0x00FFFFFF


def setup_each():
    left = tpm.census()
    assert left == [], f"TPM not clean before the test: {[hex(h) for h in left]}"


class Worker:
    """A process running as `uid` that opens /dev/tpmrs0 files and sends commands through
    them on request (one JSON line each way), so that the test can interleave the files of
    several users."""

    def __init__(self, uid):
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.to_w)
            os.close(self.from_r)
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                serve(to_r, from_w)
            finally:
                os._exit(0)
        os.close(to_r)
        os.close(from_w)
        self.reply = os.fdopen(self.from_r, "r")

    def ask(self, **req):
        os.write(self.to_w, (json.dumps(req) + "\n").encode())
        line = self.reply.readline()
        assert line, f"worker {self.pid} died"
        ans = json.loads(line)
        assert "error" not in ans, ans["error"]
        return ans

    def open(self, name):
        self.ask(op="open", name=name)

    def close(self, name):
        self.ask(op="close", name=name)

    def rsp(self, name, cmd):
        return bytes.fromhex(self.ask(op="tx", name=name, cmd=cmd.hex())["rsp"])

    def rc(self, name, cmd):
        return tpm.rc_of(self.rsp(name, cmd))

    def stop(self):
        self.ask(op="exit")
        self.reply.close()
        os.close(self.to_w)
        os.waitpid(self.pid, 0)


def serve(to_r, from_w):
    nodes = {}
    requests = os.fdopen(to_r, "r")
    for line in requests:
        req = json.loads(line)
        try:
            if req["op"] == "open":
                nodes[req["name"]] = Node()
                ans = {}
            elif req["op"] == "close":
                nodes.pop(req["name"]).close()
                ans = {}
            elif req["op"] == "id":
                ans = {"uid": os.geteuid(), "gid": os.getegid()}
            elif req["op"] == "tx":
                ans = {"rsp": nodes[req["name"]].transact(bytes.fromhex(req["cmd"])).hex()}
            else:
                for n in nodes.values():
                    n.close()
                os.write(from_w, b"{}\n")
                return
        except Exception as e:  # noqa: BLE001 - reported to the test
            ans = {"error": repr(e)}
        os.write(from_w, (json.dumps(ans) + "\n").encode())


class Users:
    """Workers for uid A (two processes), uid B, and root's own files, with /dev/tpmrs0
    world-accessible while they live."""

    def __enter__(self):
        self.mode = os.stat("/dev/tpmrs0").st_mode & 0o7777
        os.chmod("/dev/tpmrs0", 0o666)
        self.workers = []
        try:
            self.a1, self.a2, self.b = (self.spawn(u) for u in (UID_A, UID_A, UID_B))
        except BaseException:
            self.__exit__()
            raise
        return self

    def spawn(self, uid):
        w = Worker(uid)
        self.workers.append(w)
        return w

    def __exit__(self, *exc):
        for w in self.workers:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                pass
        os.chmod("/dev/tpmrs0", self.mode)


def start_and_save(w, name):
    """A policy session started and saved by its client on file `name` of worker `w`
    (`tpm2 startauthsession -S s.ctx`): its handle and blob."""
    rsp = w.rsp(name, tpm.start_auth_session_policy())
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    s = tpm.response_handle(rsp)
    rsp = w.rsp(name, tpm.context_save(s))
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    return s, rsp[10:]


def saved_indices(rsp):
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    return [h & INDEX for h in tpm.handles_in(rsp)]


def list_saved(w, name):
    return saved_indices(w.rsp(name, tpm.get_capability(tpm.TPM_CAP_HANDLES, SAVED, 254)))


def root_saved(n):
    return saved_indices(n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, SAVED, 254)))


def b_cannot_touch(u, s, blob):
    """Uid B's file neither sees, flushes nor loads uid A's session `s`."""
    assert s & INDEX not in list_saved(u.b, "b"), "listed to another uid"
    assert u.b.rc("b", tpm.flush_context(s)) == NOT_YOURS
    assert u.b.rc("b", tpm.context_load(blob)) == NOT_YOURS


def test_saved_and_abandoned_sessions_are_their_uids_and_roots():
    with Users() as u, Node() as root:
        for w, name, uid in ((u.a1, "a1", UID_A), (u.a2, "a2", UID_A), (u.b, "b", UID_B)):
            assert w.ask(op="id") == {"uid": uid, "gid": uid}
            w.open(name)
        # Saved by a file of A that is still open.
        s, blob = start_and_save(u.a1, "a1")
        b_cannot_touch(u, s, blob)
        assert s & INDEX in list_saved(u.a2, "a2")
        assert s & INDEX in root_saved(root)
        # Abandoned: the same.
        u.a1.close("a1")
        assert tpm.tpmrs_stats()["abandoned"] >= 1
        b_cannot_touch(u, s, blob)
        assert s & INDEX in list_saved(u.a2, "a2")
        assert s & INDEX in root_saved(root)
        # Another process of A takes it over and uses it.
        rsp = u.a2.rsp("a2", tpm.context_load(blob))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        assert tpm.response_handle(rsp) == s
        assert u.a2.rc("a2", tpm.policy_restart(s)) == 0
        # In use by A's file: no longer listed to root, and not root's to flush.
        assert s & INDEX not in root_saved(root)
        assert tpm.rc_of(root.transact(tpm.flush_context(s))) == NOT_YOURS
        # Saved again and abandoned: root loads it, and flushes it.
        blob = u.a2.rsp("a2", tpm.context_save(s))[10:]
        u.a2.close("a2")
        b_cannot_touch(u, s, blob)
        rsp = root.transact(tpm.context_load(blob))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        assert tpm.rc_of(root.transact(tpm.flush_context(s))) == 0
        # A file of A flushes a saved session of another file of A, abandoned or not, and
        # root one of A's.
        u.a1.open("a1")
        u.a2.open("a2")
        s1, blob1 = start_and_save(u.a1, "a1")
        s2, _ = start_and_save(u.a1, "a1")
        b_cannot_touch(u, s1, blob1)
        assert u.a2.rc("a2", tpm.flush_context(s1)) == 0
        assert s1 & INDEX not in list_saved(u.a1, "a1")
        u.a1.close("a1")
        assert tpm.rc_of(root.transact(tpm.flush_context(s2))) == 0
        u.a2.close("a2")
        u.b.close("b")
    assert tpm.census() == []


def max_abandoned():
    try:
        with open("/sys/module/tpmrs/parameters/max_abandoned") as f:
            return int(f.read())
    except OSError:
        return 8


def test_abandoning_many_does_not_push_out_another_uids_session():
    n = max_abandoned()
    assert n >= 2, n
    with Users() as u, Node() as root:
        u.a1.open("a")
        s, blob = start_and_save(u.a1, "a")
        u.a1.close("a")
        theirs = set()
        for i in range(n + 4):
            u.b.open(f"b{i}")
            theirs.add(start_and_save(u.b, f"b{i}")[0] & INDEX)
            u.b.close(f"b{i}")
        stats = tpm.tpmrs_stats()
        assert stats["abandoned"] == n, stats
        # A's one session outlived B's abandonments; B's oldest went instead.
        u.a2.open("a")
        rsp = u.a2.rsp("a", tpm.context_load(blob))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        assert tpm.response_handle(rsp) == s
        assert u.a2.rc("a", tpm.flush_context(s)) == 0
        u.a2.close("a")
        # Root cleans up what B left behind (`tpm2 flushcontext -s` as root).
        listed = root_saved(root)
        assert len(listed) == n - 1 and set(listed) <= theirs, (listed, theirs)
        for i in listed:
            assert tpm.rc_of(root.transact(tpm.flush_context(0x02000000 | i))) == 0
    assert tpm.tpmrs_stats()["abandoned"] == 0
    assert tpm.census() == []

