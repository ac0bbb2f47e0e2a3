#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A modeled hardware TPM between QEMU and swtpm: relays QEMU's emulator backend to swtpm
and holds each TPM response for the command's modeled time (tests/bench/tpm_model.py), and
power-cycles the TPM when the guest asks.

    QEMU -tpmdev emulator --ctrl--> this proxy --ctrl--> swtpm --ctrl type=unixio
         (data: socketpair)  <-->   this proxy  <-->  (data: socketpair) swtpm

QEMU's emulator backend (backends/tpm/tpm_emulator.c) speaks swtpm's control protocol
(swtpm-ioctls(3), tpm_ioctl.h): a big-endian CMD_* code and its request on the control
socket, one response back. For CMD_SET_DATAFD it passes one end of a socketpair with
SCM_RIGHTS, and from then on TPM commands go over that socket. The proxy accepts QEMU's
control connection, connects to swtpm's control socket and relays every request and
response. It keeps QEMU's data socket for itself, gives swtpm one end of a socketpair of its
own, and relays TPM commands between the two: each response is sent to QEMU no earlier than
the command's modeled time after the proxy got the command (`--model hw`), or at once
(`--model none`: a transparent proxy that can power-cycle).

Power cycles: when a file `tpm-power-cycle` (or `tpm-power-cycle.<tag>`) appears in
`--ctl-dir`, the proxy waits for the TPM command in flight to finish, holds QEMU's next ones
off, sends swtpm CMD_INIT (a TPM power cycle, _TPM_Init: swtpm terminates libtpms and starts
it again from its state files, so what TPM2_Shutdown(STATE) saved comes back with
TPM2_Startup(STATE) and nothing else), and writes `tpm-power-cycled` (or
`tpm-power-cycled.<tag>`) with CMD_INIT's result ("0" on success). It never removes a file:
to ask again with the same name, remove the request first, then the answer (or use a new
tag). scripts/guest.sh passes the results share's ctl/ directory, so a guest test does:
TPM2_Shutdown(STATE), create ctl/tpm-power-cycle, wait for ctl/tpm-power-cycled,
TPM2_Startup(STATE) through /dev/tpm0.

With `--log FILE`, one line per TPM command: "tpm CC MODEL_MS SWTPM_MS RC NAME", and one per
control command ("ctrl ...") and power cycle ("power-cycle ..."). The guest bench counts TPM
commands from it (tests/bench/modeled.py).

The proxy serves one QEMU connection and exits when it ends (swtpm, started with
--terminate, then exits too). If swtpm goes away (killed: scripts/guest.sh ctl/kill-swtpm),
the proxy closes QEMU's sockets, so QEMU sees what it would see without it.

usage: tpm_proxy.py --listen SOCK --swtpm SWTPM_CTRL_SOCK [--model hw|none] [--ctl-dir DIR]
                    [--log FILE] [--pidfile FILE]
Python 3.11 standard library only: it runs on the host next to QEMU."""

import argparse
import array
import os
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tpm_model  # noqa: E402

CMD_GET_CAPABILITY = 1
CMD_INIT = 2
CMD_SHUTDOWN = 3
CMD_GET_TPMESTABLISHED = 4
CMD_SET_LOCALITY = 5
CMD_HASH_START = 6
CMD_HASH_DATA = 7
CMD_HASH_END = 8
CMD_CANCEL_TPM_CMD = 9
CMD_STORE_VOLATILE = 10
CMD_RESET_TPMESTABLISHED = 11
CMD_GET_STATEBLOB = 12
CMD_SET_STATEBLOB = 13
CMD_STOP = 14
CMD_GET_CONFIG = 15
CMD_SET_DATAFD = 16
CMD_SET_BUFFERSIZE = 17
CMD_GET_INFO = 18
CMD_NAMES = {v: k for k, v in globals().items() if k.startswith("CMD_")}

# The least a request carries after its 4-byte code (the 'req' halves of tpm_ioctl.h's
# unions, what swtpm's ctrlchannel_recv_cmd() waits for); none if not listed. HASH_DATA and
# SET_STATEBLOB carry a length in their header. Senders may send more: QEMU sends whole
# unions (CMD_SET_LOCALITY with 4 bytes, not 1), and swtpm takes whatever came with the
# request. So does the proxy: the rest of what is already there belongs to the request, as
# nothing else can be (QEMU waits for each response before the next request).
REQUEST_SIZE = {CMD_INIT: 4, CMD_SET_LOCALITY: 1, CMD_RESET_TPMESTABLISHED: 1,
                CMD_GET_STATEBLOB: 12, CMD_SET_BUFFERSIZE: 4, CMD_GET_INFO: 16}
# Responses on success (the 'resp' halves); 4 (the result alone) if not listed. GET_STATEBLOB
# and GET_INFO are followed by as many bytes as their length field says. An error is
# answered with the 4-byte result alone on most paths of swtpm's ctrlchannel.c.
RESPONSE_SIZE = {CMD_GET_CAPABILITY: 8, CMD_GET_TPMESTABLISHED: 8, CMD_GET_CONFIG: 8,
                 CMD_SET_BUFFERSIZE: 16, CMD_GET_STATEBLOB: 16, CMD_GET_INFO: 12}
MAX_FDS = 4


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def recv_tpm(sock):
    """One TPM command or response: a 10-byte header whose size field covers it all."""
    hdr = recv_exact(sock, 10)
    (size,) = struct.unpack(">I", hdr[2:6])
    return hdr + (recv_exact(sock, size - 10) if size > 10 else b"")


class Proxy:
    def __init__(self, listen, swtpm, model, ctl_dir=None, log=None):
        self.listen_path, self.swtpm_path, self.model = listen, swtpm, model
        self.ctl_dir = ctl_dir
        self.log_file = open(log, "a", buffering=1) if log else None
        # ctrl_lock: one control request at a time on swtpm's control socket (QEMU's and the
        # proxy's own CMD_INIT). data_lock: held for a whole TPM command, so a power cycle
        # happens between two commands, never during one. Order: data_lock, then ctrl_lock.
        self.ctrl_lock = threading.Lock()
        self.data_lock = threading.Lock()
        self.qemu_ctrl = self.swtpm_ctrl = self.qemu_data = self.swtpm_data = None
        self.stopping = threading.Event()
        self.t0 = time.monotonic()

    def log(self, line):
        if self.log_file:
            self.log_file.write(f"{time.monotonic() - self.t0:.3f} {line}\n")

    # --- control channel -------------------------------------------------------------------

    def read_request(self):
        """QEMU's next control request: (bytes, fds passed with it)."""
        fds = array.array("i")
        head = b""
        while len(head) < 4:
            data, anc, _, _ = self.qemu_ctrl.recvmsg(4 - len(head), socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
            if not data:
                raise EOFError("QEMU closed the control channel")
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            head += data
        (cmd,) = struct.unpack(">I", head)
        if cmd == CMD_HASH_DATA:
            length = recv_exact(self.qemu_ctrl, 4)
            body = length + recv_exact(self.qemu_ctrl, struct.unpack(">I", length)[0])
        elif cmd == CMD_SET_STATEBLOB:
            hdr = recv_exact(self.qemu_ctrl, 12)
            body = hdr + recv_exact(self.qemu_ctrl, struct.unpack(">I", hdr[8:12])[0])
        else:
            body = recv_exact(self.qemu_ctrl, REQUEST_SIZE.get(cmd, 0))
        while select.select([self.qemu_ctrl], [], [], 0)[0]:
            more = self.qemu_ctrl.recv(65536, socket.MSG_DONTWAIT)
            if not more:
                break  # closed: the next read says so
            body += more
        return head + body, list(fds)

    def read_response(self, cmd):
        """swtpm's response to a control command (ctrl_lock held)."""
        s = self.swtpm_ctrl
        first = recv_exact(s, 4)
        if cmd != CMD_GET_CAPABILITY and struct.unpack(">I", first)[0] != 0:
            # An error: the result alone on most of swtpm's paths, a whole response on a few
            # (a failed GET_TPMESTABLISHED, a failed GET_STATEBLOB's header). Take whatever
            # else comes at once, up to the success size.
            rsp, want = first, RESPONSE_SIZE.get(cmd, 4)
            while len(rsp) < want and select.select([s], [], [], 0.05)[0]:
                chunk = s.recv(want - len(rsp))
                if not chunk:
                    break
                rsp += chunk
            return rsp
        rsp = first + recv_exact(s, RESPONSE_SIZE.get(cmd, 4) - 4)
        if cmd == CMD_GET_STATEBLOB:
            rsp += recv_exact(s, struct.unpack(">I", rsp[12:16])[0])
        elif cmd == CMD_GET_INFO:
            rsp += recv_exact(s, struct.unpack(">I", rsp[8:12])[0])
        return rsp

    def relay_control(self):
        while True:
            req, fds = self.read_request()
            (cmd,) = struct.unpack(">I", req[:4])
            with self.ctrl_lock:
                if cmd == CMD_SET_DATAFD and fds:
                    rsp = self.set_datafd(req, fds)
                else:
                    for fd in fds:
                        os.close(fd)
                    self.swtpm_ctrl.sendall(req)
                    rsp = self.read_response(cmd)
            self.log(f"ctrl {CMD_NAMES.get(cmd, cmd)} -> {rsp[:4].hex()}")
            self.qemu_ctrl.sendall(rsp)

    def set_datafd(self, req, fds):
        """QEMU's data socket stays here; swtpm gets one end of a socketpair of ours."""
        for fd in fds[1:]:
            os.close(fd)
        if self.qemu_data is not None:
            self.qemu_data.close()
        self.qemu_data = socket.socket(fileno=fds[0])
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.swtpm_ctrl.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
        theirs.close()
        rsp = self.read_response(CMD_SET_DATAFD)
        if struct.unpack(">I", rsp[:4])[0] == 0:
            self.swtpm_data = mine
            threading.Thread(target=self.relay_data, args=(self.qemu_data, mine), daemon=True).start()
        else:
            mine.close()
        return rsp

    # --- data channel ----------------------------------------------------------------------

    def relay_data(self, qemu, swtpm):
        try:
            while True:
                cmd = recv_tpm(qemu)
                with self.data_lock:
                    t0 = time.monotonic()
                    swtpm.sendall(cmd)
                    rsp = recv_tpm(swtpm)
                    took = time.monotonic() - t0
                    ms = tpm_model.latency(cmd)[0] if self.model == "hw" else 0.0
                    cc = struct.unpack(">I", cmd[6:10])[0] if len(cmd) >= 10 else 0
                    rc = struct.unpack(">I", rsp[6:10])[0] if len(rsp) >= 10 else 0
                    # Logged before the response leaves: a guest that counts commands from
                    # the log after its last response has them all.
                    self.log(f"tpm 0x{cc:x} {ms:.1f} {took * 1000:.2f} 0x{rc:x} {tpm_model.CC_NAMES.get(cc, '')}")
                    wait = t0 + ms / 1000 - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    qemu.sendall(rsp)
        except (EOFError, OSError) as e:
            # QEMU went away, or swtpm did: close both ends so each side sees the other gone.
            self.log(f"data channel closed: {e}")
            for s in (qemu, swtpm):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if not self.stopping.is_set():
                # swtpm gone under QEMU: end the control channel too, as swtpm's death does.
                try:
                    self.qemu_ctrl.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # --- power cycles ----------------------------------------------------------------------

    def power_cycle(self):
        """CMD_INIT between two TPM commands; returns its result."""
        with self.data_lock, self.ctrl_lock:
            self.swtpm_ctrl.sendall(struct.pack(">II", CMD_INIT, 0))
            (res,) = struct.unpack(">I", recv_exact(self.swtpm_ctrl, 4))
        self.log(f"power-cycle CMD_INIT -> {res}")
        return res

    def watch_ctl_dir(self):
        while not self.stopping.wait(0.05):
            try:
                names = os.listdir(self.ctl_dir)
            except OSError:
                continue
            for name in sorted(names):
                if name != "tpm-power-cycle" and not name.startswith("tpm-power-cycle."):
                    continue
                answer = "tpm-power-cycled" + name[len("tpm-power-cycle"):]
                if answer in names:
                    continue
                try:
                    res = self.power_cycle()
                except (EOFError, OSError) as e:
                    res = f"error {e}"
                tmp = os.path.join(self.ctl_dir, ".tpm-power-cycled.tmp")
                with open(tmp, "w") as f:
                    f.write(f"{res}\n")
                os.rename(tmp, os.path.join(self.ctl_dir, answer))

    # --- main ------------------------------------------------------------------------------

    def serve(self):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a temporary name and renamed once listening: QEMU, started when the
        # path appears, never finds a socket that refuses connections.
        tmp = self.listen_path + ".tmp"
        for p in (tmp, self.listen_path):
            if os.path.exists(p):
                os.unlink(p)
        listener.bind(tmp)
        listener.listen(1)
        os.rename(tmp, self.listen_path)
        self.qemu_ctrl, _ = listener.accept()
        listener.close()
        self.swtpm_ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.swtpm_ctrl.connect(self.swtpm_path)
        self.log(f"serving, model {self.model}")
        if self.ctl_dir:
            threading.Thread(target=self.watch_ctl_dir, daemon=True).start()
        try:
            self.relay_control()
        except (EOFError, OSError) as e:
            self.log(f"control channel closed: {e}")
        finally:
            self.stopping.set()
            for s in (self.qemu_data, self.swtpm_data, self.swtpm_ctrl, self.qemu_ctrl):
                if s is not None:
                    s.close()
            if os.path.exists(self.listen_path):
                os.unlink(self.listen_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="the Unix socket QEMU's chardev connects to")
    ap.add_argument("--swtpm", required=True, help="swtpm's --ctrl type=unixio socket")
    ap.add_argument("--model", choices=("hw", "none"), default="hw",
                    help="hw: the latency table of tpm_model.py; none: no delay")
    ap.add_argument("--ctl-dir", help="where power cycles are asked for (tpm-power-cycle)")
    ap.add_argument("--log", help="a line per command")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    Proxy(a.listen, a.swtpm, a.model, a.ctl_dir, a.log).serve()


if __name__ == "__main__":
    main()
