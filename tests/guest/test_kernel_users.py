# SPDX-License-Identifier: GPL-2.0
"""The kernel's own TPM users beside tpmrs, as on a distribution kernel (issue 20, item 2).

The debug kernel has CONFIG_TCG_TPM2_HMAC=y, the TPM as hwrng and IMA. With HMAC the kernel
keeps its own auth session loaded between its commands (a read of /dev/hwrng leaves one), so
it holds one of the TPM's three loaded-session slots; /dev/tpm0 and /dev/tpmrm0 end it before
every user command (tpm_dev_transmit), and so must tpmrs, or a command naming three sessions
finds no room for its third (TPM_RC_SESSION_MEMORY after SESSION_TIMEOUT). And while tpmrs'
clients exhaust the TPM's sessions, the kernel's own (hwrng, IMA's PCR extends) must keep
working: tpmrs leaves it headroom."""

import os
import struct
import subprocess
import time

import fairshare
import tpm
from tpm import Node

HWRNG = "/dev/hwrng"
SECURITYFS = "/sys/kernel/security"
IMA = SECURITYFS + "/ima"
IMA_UID = 4242


def setup_each():
    left = tpm.census()
    assert left == [], f"TPM not clean before the test: {[hex(h) for h in left]}"


def hmac_kernel():
    """Whether this kernel keeps an HMAC session of its own (CONFIG_TCG_TPM2_HMAC)."""
    try:
        out = subprocess.run(["zcat", "/proc/config.gz"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    if out:
        return "CONFIG_TCG_TPM2_HMAC=y" in out
    # No /proc/config.gz: the kernel exports its session helpers only with HMAC.
    with open("/proc/kallsyms") as f:
        return any(line.rstrip().endswith(" tpm_buf_append_hmac_session") for line in f)


def use_tpm_hwrng():
    """Makes the TPM the hwrng /dev/hwrng reads from (another may be current)."""
    name = None
    for d in os.listdir("/sys/class/tpm"):
        if d.startswith("tpm") and d[3:].isdigit():
            name = f"tpm-rng-{d[3:]}"
            break
    with open("/sys/class/misc/hw_random/rng_available") as f:
        assert name in f.read().split(), name
    with open("/sys/class/misc/hw_random/rng_current", "w") as f:
        f.write(name)


def read_hwrng(n=512):
    """Reads `n` bytes of /dev/hwrng: more than the hwrng core buffers, so the TPM is asked
    (a GetRandom with the kernel's HMAC session, which stays loaded afterwards)."""
    fd = os.open(HWRNG, os.O_RDONLY)
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)


def loaded_sessions_avail():
    """TPM_PT_HR_LOADED_AVAIL, asked through /dev/tpm0 (no RM)."""
    rsp = tpm.direct(tpm.get_capability(6, 0x204, 1))  # TPM_PT_HR_LOADED_AVAIL
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    return struct.unpack(">I", rsp[23:27])[0]


def get_random_with_sessions(handles):
    """GetRandom(8) naming `handles` in its authorization area, each an HMAC session with
    continueSession and an empty HMAC: what the TPM says of it is its business; what matters
    is that it gets to the TPM."""
    area = b""
    for h in handles:
        area += struct.pack(">I", h) + tpm.tpm2b(b"\x22" * 16) + b"\x01" + tpm.tpm2b(b"")
    return tpm.command(tpm.CC_GET_RANDOM, struct.pack(">I", len(area)) + area + struct.pack(">H", 8),
                       tpm.TPM_ST_SESSIONS)


def three_session_answer(node):
    """(rc, seconds) of a GetRandom naming three fresh HMAC sessions through `node`, right
    after a read of /dev/hwrng left the kernel's session loaded."""
    with Node(node) as n:
        handles = []
        for _ in range(3):
            rsp = n.transact(tpm.start_auth_session_hmac())
            assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
            handles.append(tpm.response_handle(rsp))
        read_hwrng()
        t0 = time.monotonic()
        rsp = n.transact(get_random_with_sessions(handles))
        took = time.monotonic() - t0
        for h in handles:
            n.transact(tpm.flush_context(h))
        return tpm.rc_of(rsp), took


def test_three_sessions_after_the_kernel_used_its_own():
    assert hmac_kernel(), "the debug kernel must have CONFIG_TCG_TPM2_HMAC=y (kernel/debug.config)"
    use_tpm_hwrng()
    # The kernel's session, left loaded by a read of the hwrng, is visible through /dev/tpm0
    # only until that node ends it: count the loaded slots before a user command does.
    read_hwrng()
    rrc, rtook = three_session_answer("/dev/tpmrm0")
    src, stook = three_session_answer("/dev/tpmrs0")
    # The TPM's own verdict on the command, as through tpmrm0, not the RM's 0x903 after a
    # wait for a loaded slot that the kernel's session held.
    assert src & 0xFFF != 0x903, f"tpmrs0: {src:#x} after {stook:.2f}s (tpmrm0: {rrc:#x})"
    assert src == rrc, f"tpmrs0 {src:#x} != tpmrm0 {rrc:#x}"
    assert stook < 1.0, f"tpmrs0 took {stook:.2f}s (tpmrm0 {rtook:.2f}s)"


def test_hwrng_leaves_a_session_that_tpmrs_ends():
    # What the test above depends on, checked: after a read of the hwrng, the kernel's
    # session holds a loaded slot, and the TPM that a tpmrs0 command reaches has all its
    # loaded slots free again, as the TPM that a /dev/tpm0 command reaches (both end the
    # kernel's session first).
    use_tpm_hwrng()
    read_hwrng()
    avail_tpm0 = loaded_sessions_avail()
    read_hwrng()
    with Node("/dev/tpmrs0") as n:
        rsp = n.transact(tpm.get_capability(6, 0x204, 1))  # TPM_PT_HR_LOADED_AVAIL
        assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
        avail_tpmrs0 = struct.unpack(">I", rsp[23:27])[0]
    assert avail_tpmrs0 == avail_tpm0, (avail_tpmrs0, avail_tpm0)


def dmesg_tpm_errors(since):
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    bad = ("A TPM error", "tpm2_", "Error Communicating to TPM", "failed to", "hwrng")
    return [line for line in out[since:] if ("tpm" in line.lower() or "ima" in line.lower())
            and any(b in line for b in bad)]


def dmesg_len():
    return len(subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines())


def ima_setup():
    """Measures every file owned by IMA_UID that root reads (a PCR 10 extend through the
    kernel's HMAC session each). The policy stays for the rest of the boot: only files of
    that owner are ever measured."""
    if not os.path.isdir(IMA):
        subprocess.run(["mount", "-t", "securityfs", "securityfs", SECURITYFS], check=True)
    rule = f"measure func=FILE_CHECK mask=MAY_READ fowner={IMA_UID}\n"
    with open(IMA + "/policy", "w") as f:
        f.write(rule)


def ima_measurements():
    with open(IMA + "/runtime_measurements_count") as f:
        return int(f.read())


def test_kernel_users_keep_working_through_exhaustion():
    # 32 clients x 3 sessions exhaust the TPM's sessions through tpmrs0 while the kernel reads
    # its hwrng and IMA measures a new file, one after the other, 0.2 s apart: every kernel command must
    # get its session (tpmrs keeps headroom and ends the kernel's session when it takes the
    # chip), and the kernel log must show no TPM error.
    ima_setup()
    use_tpm_hwrng()
    base_log = dmesg_len()
    base_ima = ima_measurements()
    seconds = 15.0

    def kernel_users(w, _ready_w, go_r):
        os.read(go_r, 1)
        rng = rng_failed = files = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                rng += len(read_hwrng(64)) > 0
            except OSError:
                rng_failed += 1
            path = f"/tmp/ima-{files}"
            with open(path, "w") as f:
                f.write(f"measured {files}\n")
            os.chown(path, IMA_UID, IMA_UID)
            with open(path) as f:
                f.read()
            files += 1
            time.sleep(0.2)
        os.write(w, f"{rng} {rng_failed} {files}".encode())
        os.close(w)

    users = tpm.fork_child(kernel_users, ready=False)
    tpm.start_together([users])
    row = fairshare.run("/dev/tpmrs0", "32x3", seconds, must_progress=True)
    rng, rng_failed, files = map(int, tpm.collect(users).split())
    measured = ima_measurements() - base_ima
    print(f"# 32x3 with kernel users: ops {row['ops']} refusals {row['refusals']} "
          f"errors {row['errors']} jain {row['jain']}; hwrng reads {rng} (failed {rng_failed}), "
          f"IMA files {files}, measured {measured}")
    assert row["errors"] == 0 and row["refusals"] == 0, row
    # Each read is a salted StartAuthSession of the kernel and a GetRandom: slow on the debug
    # guest (about 6 in 15 s on a busy host), but every one must succeed.
    assert rng >= 3 and rng_failed == 0, (rng, rng_failed)
    # Every file measured: a PCR extend that failed is logged and not counted.
    assert measured >= files, (measured, files)
    errors = dmesg_tpm_errors(base_log)
    assert not errors, errors
