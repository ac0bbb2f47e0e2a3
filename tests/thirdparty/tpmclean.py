# SPDX-License-Identifier: GPL-2.0
"""Between two third-party tests: put the TPM back the way the suite found it, through
/dev/tpm0 (nobody else uses it in the guest). The suites were written for a fresh simulator
per test (tpm2-pytss) or for a TPM they may leave objects in (tss-esapi); on one shared TPM a
leftover would make a later test fail for a reason that has nothing to do with the node.

  - flush every transient object and every loaded or saved session;
  - if a hierarchy auth is now set, or a persistent object or NV index appeared, TPM2_Clear
    through the lockout hierarchy (its auth must still be empty: a test that set it cannot be
    undone and is reported);
  - restore the dictionary-attack parameters and counter."""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest"))
import tpm  # noqa: E402

TPM_RH_LOCKOUT = 0x4000000A
CC_CLEAR = 0x126
CC_DA_LOCK_RESET = 0x139
CC_DA_PARAMETERS = 0x13A
PT_PERMANENT = 0x200
PT_LOCKOUT_COUNTER = 0x20E
PT_MAX_AUTH_FAIL, PT_LOCKOUT_INTERVAL, PT_LOCKOUT_RECOVERY = 0x20F, 0x210, 0x211
AUTH_SET_BITS = 0x7  # ownerAuthSet, endorsementAuthSet, lockoutAuthSet


def handles(node, first):
    out, prop = [], first
    while True:
        rsp = node.transact(tpm.get_capability(tpm.TPM_CAP_HANDLES, prop, 256))
        if tpm.rc_of(rsp) != 0:
            raise RuntimeError(f"GetCapability(handles {first:#x}): {tpm.rc_of(rsp):#x}")
        # Saved policy sessions may be listed in their HMAC form (0x02...).
        types = (2, 3) if first >> 24 in (2, 3) else (first >> 24,)
        got = [h for h in tpm.handles_in(rsp) if h >> 24 in types]
        out += got
        if not rsp[10] or not got:
            return out
        prop = got[-1] + 1


def lockout_cmd(cc, params=b""):
    return tpm.command(cc, struct.pack(">I", TPM_RH_LOCKOUT) + tpm.pw_auth() + params, tpm.TPM_ST_SESSIONS)


class Cleaner:
    def __init__(self, dev="/dev/tpm0"):
        self.dev = dev
        with tpm.Node(dev) as n:
            self.persistent = set(handles(n, 0x81000000))
            self.nv = set(handles(n, 0x01000000))
            self.da = [tpm.tpm_property(n, p) for p in (PT_MAX_AUTH_FAIL, PT_LOCKOUT_INTERVAL, PT_LOCKOUT_RECOVERY)]
        self.flushed = self.clears = 0

    def clean(self):
        """Returns a list of notes (empty when there was nothing but flushing to do);
        raises RuntimeError when the TPM could not be put back."""
        notes = []
        with tpm.Node(self.dev) as n:
            for first in (0x80000000, 0x02000000, 0x03000000):
                for h in handles(n, first):
                    rc = tpm.rc_of(n.transact(tpm.flush_context(h)))
                    self.flushed += 1
                    if rc != 0:
                        notes.append(f"flush {h:#010x}: {rc:#x}")
            perm = tpm.tpm_property(n, PT_PERMANENT)
            new_p = set(handles(n, 0x81000000)) - self.persistent
            new_nv = set(handles(n, 0x01000000)) - self.nv
            if perm & AUTH_SET_BITS or new_p or new_nv:
                rc = tpm.rc_of(n.transact(lockout_cmd(CC_CLEAR)))
                self.clears += 1
                notes.append(f"TPM2_Clear (permanent {perm:#x}, {len(new_p)} persistent, {len(new_nv)} NV): {rc:#x}")
                if rc != 0:
                    raise RuntimeError("; ".join(notes))
            if tpm.tpm_property(n, PT_LOCKOUT_COUNTER):
                rc = tpm.rc_of(n.transact(lockout_cmd(CC_DA_LOCK_RESET)))
                if rc != 0:
                    notes.append(f"DictionaryAttackLockReset: {rc:#x}")
            da = [tpm.tpm_property(n, p) for p in (PT_MAX_AUTH_FAIL, PT_LOCKOUT_INTERVAL, PT_LOCKOUT_RECOVERY)]
            if da != self.da:
                rc = tpm.rc_of(n.transact(lockout_cmd(CC_DA_PARAMETERS, struct.pack(">III", *self.da))))
                notes.append(f"DA parameters {da} -> {self.da}: {rc:#x}")
        return notes
