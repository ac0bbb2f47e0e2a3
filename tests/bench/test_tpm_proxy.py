#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host tests of the modeled hardware TPM (tests/bench/tpm_proxy.py), no QEMU: each test
starts swtpm and the proxy as scripts/guest.sh does and plays QEMU's emulator backend itself
(the control protocol, CMD_SET_DATAFD with a socketpair, TPM commands on the data socket).

What they check: the control commands QEMU sends are relayed; TPM2_GetRandom and
TPM2_ContextSave go through; each response comes no earlier than tpm_model.py's time for its
command (a lower bound only: a loaded host may make anything slower); swtpm's command log
still sees every command; a power cycle asked for in the ctl directory is a TPM Resume after
TPM2_Shutdown(STATE) (saved sessions and saved object contexts load again and a saved
session goes on authorizing; loaded sessions and loaded objects are gone), a TPM Reset
without it (TPM2_Startup(STATE) is refused; saved sessions do not load) and a TPM Restart
with TPM2_Startup(CLEAR) after it (saved sessions load); the proxy and swtpm
end with QEMU's connection, and QEMU's sockets close when swtpm dies.

Prints "ok     NAME" or "FAIL   NAME" per test and ends with "N passed, N failed" (counted
by scripts/testlib.sh in make check and make test). Needs swtpm."""

import array
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "guest"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import swtpm_count  # noqa: E402
import tpm  # noqa: E402
import tpm_model  # noqa: E402
from tpm_proxy import CMD_GET_CAPABILITY, CMD_INIT, CMD_SET_BUFFERSIZE, CMD_SET_DATAFD  # noqa: E402
from tpm_proxy import CMD_SET_LOCALITY, CMD_GET_TPMESTABLISHED, CMD_SHUTDOWN, recv_exact, recv_tpm  # noqa: E402

TPM_RC_INITIALIZE = 0x100
TPM_RC_RETRY = 0x922
TPM_SU_CLEAR, TPM_SU_STATE = 0, 1
CC_STARTUP, CC_SHUTDOWN = 0x144, 0x145
BOUND = 30.0  # seconds anything may take here before it counts as hung


def startup(su):
    return tpm.command(CC_STARTUP, struct.pack(">H", su))


def shutdown(su):
    return tpm.command(CC_SHUTDOWN, struct.pack(">H", su))


def wait_for(pred, what):
    deadline = time.monotonic() + BOUND
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {BOUND} s"
        time.sleep(0.02)


class Rig:
    """swtpm, the proxy in front of it, and this process as QEMU."""

    def __init__(self, model="hw", swtpm_log=False):
        self.dir = tempfile.mkdtemp(prefix="tpmrs-proxy-")
        self.ctl = os.path.join(self.dir, "ctl")
        os.mkdir(self.ctl)
        swtpm_ctrl = os.path.join(self.dir, "ctrl.sock")
        args = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.dir}",
                "--ctrl", f"type=unixio,path={swtpm_ctrl}", "--terminate"]
        self.swtpm_log = os.path.join(self.dir, "swtpm.log") if swtpm_log else None
        if swtpm_log:
            args += ["--log", f"file={self.swtpm_log},level=20"]
        self.swtpm = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(swtpm_ctrl), "swtpm's control socket")
        self.sock = os.path.join(self.dir, "proxy.sock")
        self.log = os.path.join(self.dir, "proxy.log")
        self.proxy = subprocess.Popen([sys.executable, os.path.join(HERE, "tpm_proxy.py"),
                                       "--listen", self.sock, "--swtpm", swtpm_ctrl,
                                       "--model", model, "--ctl-dir", self.ctl, "--log", self.log])
        wait_for(lambda: os.path.exists(self.sock), "the proxy's socket")
        self.ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctrl.connect(self.sock)
        self.ctrl.settimeout(BOUND)
        self.data = None

    def ctrl_cmd(self, cmd, body=b"", rsp_len=4, fds=()):
        msg = struct.pack(">I", cmd) + body
        if fds:
            self.ctrl.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.ctrl.sendall(msg)
        return recv_exact(self.ctrl, rsp_len)

    def boot(self):
        """What QEMU's emulator backend does when the machine starts."""
        caps = struct.unpack(">Q", self.ctrl_cmd(CMD_GET_CAPABILITY, rsp_len=8))[0]
        assert caps & (1 << 12), f"no PTM_CAP_SET_DATAFD in {caps:#x}"
        self.data, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        res = self.ctrl_cmd(CMD_SET_DATAFD, fds=[theirs.fileno()])
        theirs.close()
        assert res == b"\0" * 4, res.hex()
        self.data.settimeout(BOUND)
        rsp = self.ctrl_cmd(CMD_SET_BUFFERSIZE, struct.pack(">I", 0), 16)
        assert rsp[:4] == b"\0" * 4 and struct.unpack(">I", rsp[4:8])[0] >= 1024, rsp.hex()
        assert self.ctrl_cmd(CMD_INIT, struct.pack(">I", 0)) == b"\0" * 4
        # QEMU sends whole unions: CMD_SET_LOCALITY with 4 bytes, of which swtpm reads 1.
        assert self.ctrl_cmd(CMD_SET_LOCALITY, b"\0" * 4) == b"\0" * 4
        assert self.ctrl_cmd(CMD_SET_LOCALITY, b"\0") == b"\0" * 4
        assert self.ctrl_cmd(CMD_GET_TPMESTABLISHED, rsp_len=8)[:4] == b"\0" * 4
        assert tpm.rc_of(self.transact(startup(TPM_SU_CLEAR))) == 0

    def transact(self, cmd):
        # TPM_RC_RETRY (libtpms answers the first ECDSA signature after a start-up with it) is
        # retried here as the kernel's tpm_transmit() does, so tests see what guests see.
        for _ in range(10):
            self.data.sendall(cmd)
            rsp = recv_tpm(self.data)
            if tpm.rc_of(rsp) != TPM_RC_RETRY:
                break
        return rsp

    def timed(self, cmd):
        t0 = time.monotonic()
        rsp = self.transact(cmd)
        return rsp, (time.monotonic() - t0) * 1000

    def power_cycle(self, tag=""):
        open(os.path.join(self.ctl, "tpm-power-cycle" + tag), "w").close()
        answer = os.path.join(self.ctl, "tpm-power-cycled" + tag)
        wait_for(lambda: os.path.exists(answer), "the power cycle")
        with open(answer) as f:
            return f.read().strip()

    def close(self):
        for s in (self.data, self.ctrl):
            if s is not None:
                s.close()
        for p in (self.proxy, self.swtpm):
            try:
                p.wait(BOUND)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def handles(n, first):
    rsp = n.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, first, 64))
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    return tpm.handles_in(rsp)


def signing_key(n):
    rsp = n.transact(tpm.create_primary(tpm.ECC_SIGNING_TEMPLATE))
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    key = tpm.response_handle(rsp)
    return key, tpm.read_public_name(n, key)


def saved(n, handle):
    rsp = n.transact(tpm.context_save(handle))
    assert tpm.rc_of(rsp) == 0, f"ContextSave({handle:#x}): {tpm.rc_of(rsp):#x}"
    return rsp[10:]


def test_control_and_commands():
    """QEMU's start-up control commands are relayed; GetRandom and ContextSave go through."""
    r = Rig(model="none")
    try:
        r.boot()
        rsp = r.transact(tpm.get_random(8))
        assert tpm.rc_of(rsp) == 0 and struct.unpack(">H", rsp[10:12])[0] == 8, rsp.hex()
        key, _ = signing_key(r)
        s = tpm.HmacSession(r)
        assert len(saved(r, s.handle)) > 8
        assert len(saved(r, key)) > 8
    finally:
        r.close()


def test_latency_lower_bounds():
    """Every response comes no earlier than the model's time for its command."""
    r = Rig(model="hw")
    try:
        r.boot()
        seen = {}

        def check(label, cmd):
            want, _ = tpm_model.latency(cmd)
            rsp, took = r.timed(cmd)
            # The proxy's clock starts after this process sent the command: what this process
            # measures is at least the model's time (the margin covers clock granularity only).
            assert took >= want - 0.5, f"{label}: {took:.1f} ms < model {want} ms"
            seen[label] = (want, round(took, 1))
            return rsp

        check("GetRandom", tpm.get_random(8))
        rsp = check("CreatePrimary ECC", tpm.create_primary(tpm.ECC_SIGNING_TEMPLATE))
        key = tpm.response_handle(rsp)
        name = tpm.read_public_name(r, key)
        rsp = check("StartAuthSession unsalted", tpm.start_auth_session_hmac())
        s = tpm.HmacSession.__new__(tpm.HmacSession)
        s.hashlib, s.hmac = tpm.hashlib, tpm.hmac
        s.handle = tpm.response_handle(rsp)
        s.nonce_tpm = rsp[16 : 16 + struct.unpack(">H", rsp[14:16])[0]]
        # Sign with the HMAC session: the model adds the session's surcharge to Sign's time.
        params = (tpm.tpm2b(b"\x5a" * 32) + struct.pack(">HH", 0x0018, 0x000B)
                  + struct.pack(">HI", tpm.TPM_ST_HASHCHECK, tpm.TPM_RH_NULL) + tpm.tpm2b(b""))
        sign = tpm.command(tpm.CC_SIGN, struct.pack(">I", key) + s.auth_area(tpm.CC_SIGN, [name], params) + params,
                           tpm.TPM_ST_SESSIONS)
        assert tpm_model.latency(sign)[0] == tpm_model.LATENCY_MS[0x15D][0] + tpm_model.SESSION_MS[0]
        rsp = check("Sign + HMAC session", sign)
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        rsp = check("ContextSave", tpm.context_save(s.handle))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        rsp = check("ContextLoad", tpm.context_load(rsp[10:]))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        rsp = check("FlushContext", tpm.flush_context(key))
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        print(f"# model ms, measured ms: {seen}")
        # The proxy's log has one line per TPM command with the modeled time it applied.
        with open(r.log) as f:
            models = [float(line.split()[3]) for line in f if line.split()[1:2] == ["tpm"]]
        assert models[-1] == tpm_model.LATENCY_MS[0x165][0], models
    finally:
        r.close()


def test_swtpm_log_through_proxy():
    """swtpm's command log (TPMRS_SWTPM_LOG=1) sees every command the proxy relays."""
    r = Rig(model="none", swtpm_log=True)
    try:
        r.boot()
        start = os.path.getsize(r.swtpm_log)
        for _ in range(5):
            assert tpm.rc_of(r.transact(tpm.get_random(8))) == 0
        counts = swtpm_count.count(r.swtpm_log, start)
        assert counts.get(tpm.CC_GET_RANDOM) == 5, dict(counts)
    finally:
        r.close()


def test_power_cycle_resume():
    """Shutdown(STATE), a power cycle asked through the ctl directory, Startup(STATE): a TPM
    Resume. Saved contexts come back, loaded ones are gone."""
    r = Rig(model="none")
    try:
        r.boot()
        key, name = signing_key(r)
        kept = tpm.HmacSession(r)  # saved before the cycle: must survive it
        assert tpm.rc_of(tpm.sign_with_session(r, key, name, kept)) == 0
        kept_blob = saved(r, kept.handle)
        key_blob = saved(r, key)  # a saved object context; the object stays loaded
        loaded = tpm.HmacSession(r)  # left loaded across the cycle
        assert loaded.handle in handles(r, 0x02000000)
        assert tpm.rc_of(r.transact(shutdown(TPM_SU_STATE))) == 0
        assert r.power_cycle() == "0"
        assert tpm.rc_of(r.transact(tpm.get_random(8))) == TPM_RC_INITIALIZE
        rc = tpm.rc_of(r.transact(startup(TPM_SU_STATE)))
        assert rc == 0, f"Startup(STATE): {rc:#x}"
        assert handles(r, 0x80000000) == [], "a loaded object survived the cycle"
        assert handles(r, 0x02000000) == [], "a loaded session survived the cycle"
        rsp = r.transact(tpm.context_load(kept_blob))
        assert tpm.rc_of(rsp) == 0, f"saved session: ContextLoad {tpm.rc_of(rsp):#x}"
        assert tpm.response_handle(rsp) == kept.handle
        rsp = r.transact(tpm.context_load(key_blob))
        assert tpm.rc_of(rsp) == 0, f"saved object: ContextLoad {tpm.rc_of(rsp):#x}"
        key = tpm.response_handle(rsp)
        # The saved session goes on where it was (its nonce and HMAC key intact).
        rc = tpm.rc_of(tpm.sign_with_session(r, key, name, kept))
        assert rc == 0, f"sign with the resumed session: {rc:#x}"
        # A loaded session's handle now names nothing.
        rc = tpm.rc_of(r.transact(tpm.context_save(loaded.handle)))
        assert rc != 0, "ContextSave of a session that was loaded at the cycle succeeded"
    finally:
        r.close()


def test_power_cycle_reset_restart():
    """A power cycle without Shutdown(STATE) is a TPM Reset: Startup(STATE) is refused and a
    saved session does not load after Startup(CLEAR). With Shutdown(STATE) and then
    Startup(CLEAR) (a TPM Restart, what firmware does when resuming from hibernation), saved
    sessions load again. Two cycles on one proxy, told apart by their tags."""
    r = Rig(model="none")
    try:
        r.boot()
        s = tpm.HmacSession(r)
        blob = saved(r, s.handle)
        assert r.power_cycle(".1") == "0"
        rc = tpm.rc_of(r.transact(startup(TPM_SU_STATE)))
        assert rc != 0, "Startup(STATE) without Shutdown(STATE) succeeded"
        assert tpm.rc_of(r.transact(startup(TPM_SU_CLEAR))) == 0
        rc = tpm.rc_of(r.transact(tpm.context_load(blob)))
        assert rc != 0, "a saved session survived a TPM Reset"
        s = tpm.HmacSession(r)
        blob = saved(r, s.handle)
        assert tpm.rc_of(r.transact(shutdown(TPM_SU_STATE))) == 0
        assert r.power_cycle(".2") == "0"
        assert tpm.rc_of(r.transact(startup(TPM_SU_CLEAR))) == 0
        rc = tpm.rc_of(r.transact(tpm.context_load(blob)))
        assert rc == 0, f"a saved session did not survive a TPM Restart: {rc:#x}"
    finally:
        r.close()


def test_lifecycle():
    """QEMU closing its control connection ends the proxy and swtpm; swtpm dying closes
    QEMU's data socket (what QEMU would see without the proxy)."""
    r = Rig(model="none")
    try:
        r.boot()
        # What QEMU sends when it exits.
        assert r.ctrl_cmd(CMD_SHUTDOWN) == b"\0" * 4
        r.ctrl.close()
        r.ctrl = None
        r.proxy.wait(BOUND)
        r.swtpm.wait(BOUND)
    finally:
        r.close()
    r = Rig(model="none")
    try:
        r.boot()
        r.swtpm.send_signal(signal.SIGKILL)
        r.swtpm.wait(BOUND)
        try:
            r.data.sendall(tpm.get_random(8))
            got = r.data.recv(4096)
        except OSError:
            got = b""
        assert got == b"", f"a response after swtpm died: {got.hex()}"
        r.proxy.wait(BOUND)
    finally:
        r.close()


TESTS = [
    ("proxy: QEMU's control commands relayed; GetRandom and ContextSave go through", test_control_and_commands),
    ("proxy: each response waits at least the model's time for its command", test_latency_lower_bounds),
    ("proxy: swtpm's command log sees every relayed command", test_swtpm_log_through_proxy),
    ("proxy: power cycle after Shutdown(STATE): saved contexts survive, loaded ones do not", test_power_cycle_resume),
    ("proxy: power cycle without Shutdown(STATE) is a TPM Reset, with it and Startup(CLEAR) a Restart",
     test_power_cycle_reset_restart),
    ("proxy: ends with QEMU's connection; swtpm's death reaches QEMU", test_lifecycle),
]


def main():
    if shutil.which("swtpm") is None:
        print("FAIL   proxy: swtpm is not installed (make setup)")
        print("0 passed, 1 failed")
        return 1
    passed = failed = 0
    only = sys.argv[1:]
    for name, fn in TESTS:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
            passed += 1
            print(f"ok     {name}", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, the others still run
            failed += 1
            print(f"FAIL   {name}", flush=True)
            print("".join("    | " + line + "\n" for line in traceback.format_exc().splitlines()), end="")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
