# SPDX-License-Identifier: GPL-2.0
"""The modeled hardware TPM: how long a discrete TPM takes to answer each command, from
published measurements (Documentation/bench/README.md, "The modeled hardware TPM").

tests/bench/tpm_proxy.py holds every response from swtpm until the command's modeled time
has passed since the command arrived: swtpm answers in microseconds, a discrete TPM in
milliseconds to seconds, and a resource manager's context switches (ContextLoad,
ContextSave, FlushContext around every client command) cost what they cost on the TPMs
people own only if the TPM is that slow.

The figures are those of one chip where one was measured (an Infineon SLB9670, the most
completely published), then those of another TPM, then labelled assumptions. Every entry
says which. Python 3.11 standard library only: this runs on the host next to QEMU."""

import struct

# Where the figures come from (keys used in the table below and in the bench docs).
SOURCES = {
    "slb9670": (
        "LKML, '[regression] significant delays when secureboot is enabled since 6.10', "
        "Sept 2024: Roberto Sassu's function_graph trace of tpm2_pcr_extend() on an Infineon "
        "SLB9670 (TPM passthrough to a Fedora 38 VM), quoted and broken down per command by "
        "James Bottomley on 12 Sep 2024, Message-ID "
        "<c47b129aeb95094aace5b174fc6d81bf0a7ecfbf.camel@HansenPartnership.com>: "
        "PCR_Extend 6360 us without a session, 24356 us with the kernel's HMAC session; "
        "ContextLoad of the kernel's null key (an ECC P-256 primary) 36977 us; salted "
        "StartAuthSession (ECDH salt with that key) 84747 us; FlushContext 3195 us"),
    "bpftrace": (
        "Same thread, Jarkko Sakkinen, 11 Sep 2024, Message-Id "
        "<D43JXBFOOB2O.3U6ZQ7DASR1ZW@kernel.org>: bpftrace of tpm_transmit around "
        "`tpm2_createprimary --hierarchy o -G rsa2048` through /dev/tpmrm0 on his own TPM "
        "(model not stated): tpm2_load_context 9.06 and 14.18 ms, tpm2_save_context 11.43 "
        "and 22.60 ms, tpm2_flush_context 2.86 ms, the CreatePrimary itself 1958.5 ms"),
    "assumption": (
        "No published figure found: a labelled assumption, reasoned in the entry's comment"),
}

CC_NAMES = {
    0x131: "CreatePrimary", 0x153: "Create", 0x157: "Load", 0x15D: "Sign",
    0x161: "ContextLoad", 0x162: "ContextSave", 0x165: "FlushContext",
    0x176: "StartAuthSession", 0x182: "PCR_Extend", 0x191: "CreateLoaded",
    0x17B: "GetRandom", 0x17A: "GetCapability", 0x173: "ReadPublic", 0x144: "Startup",
    0x145: "Shutdown", 0x143: "SelfTest", 0x180: "PolicyRestart", 0x139: "DictionaryAttackLockReset",
    0x129: "HierarchyChangeAuth", 0x146: "StirRandom", 0x17E: "PCR_Read", 0x181: "ReadClock",
    0x121: "HierarchyControl", 0x126: "Clear", 0x120: "EvictControl", 0x12A: "NV_DefineSpace",
    0x14E: "NV_Read", 0x137: "NV_Write", 0x169: "NV_ReadPublic", 0x155: "HMAC", 0x15E: "Unseal",
    0x158: "Quote", 0x15B: "HMAC_Start", 0x15C: "SequenceUpdate", 0x13E: "SequenceComplete",
    0x186: "HashSequenceStart", 0x185: "EventSequenceComplete", 0x17D: "Hash", 0x13C: "PCR_Event",
    0x16B: "PolicyAuthValue", 0x16C: "PolicyCommandCode", 0x17F: "PolicyPCR", 0x189: "PolicyGetDigest",
    0x163: "ECDH_KeyGen", 0x154: "ECDH_ZGen", 0x159: "RSA_Decrypt", 0x174: "RSA_Encrypt",
    0x167: "LoadExternal", 0x177: "VerifySignature", 0x18A: "TestParms", 0x17C: "GetTestResult",
}

# The cheapest command published for the SLB9670 is PCR_Extend without a session: 6.4 ms
# (slb9670). Every command not listed below is taken to cost that much (assumption: a
# command without asymmetric cryptography or context (un)wrapping costs about what the
# simplest measured one does on the same chip).
DEFAULT_MS = 6.4

# A P-256 private-key operation on the SLB9670: the salted StartAuthSession is one ECDH
# (a P-256 scalar multiplication) plus a KDF and the session's setup, 84.7 ms (slb9670).
P256_OP_MS = 85.0

# Fixed cost per command code, in ms.
LATENCY_MS = {
    # ContextLoad: 37.0 ms for the null key's context, an ECC P-256 primary (slb9670). The
    # same figure for session contexts (assumption: the TPM checks and decrypts any
    # context blob the same way; the bpftrace TPM loaded contexts in 9.1-14.2 ms).
    0x161: (37.0, "slb9670"),
    # ContextSave: none published for the SLB9670. 17.0 ms, the mean of the two save
    # stacks of the bpftrace (11.4 and 22.6 ms; bpftrace).
    0x162: (17.0, "bpftrace"),
    # FlushContext: 3.2 ms (slb9670; 2.9 ms in the bpftrace).
    0x165: (3.2, "slb9670"),
    # PCR_Extend with a password session: 6.4 ms (slb9670). With an HMAC session it took
    # 24.4 ms: the session rule below adds the difference.
    0x182: (6.4, "slb9670"),
    # Sign (ECDSA P-256): no figure published for this chip (assumption). An ECDSA
    # signature is one P-256 scalar multiplication, as the salted StartAuthSession's ECDH
    # is: P256_OP_MS. Field figures are not faster: Chrome's study of TPM ECDSA P-256
    # signatures saw 200 ms at the 50th percentile, 600 ms at the 95th, OS stack included
    # (quoted in https://stiankri.substack.com/p/tpm-performance).
    0x15D: (P256_OP_MS, "assumption"),
    # Load: no figure published (assumption): it unwraps and checks a private area under
    # its parent, the work of a ContextLoad: 37.0 ms.
    0x157: (37.0, "assumption"),
}

# StartAuthSession: salted (tpmKey other than TPM_RH_NULL) 85 ms (slb9670). Unsalted:
# no figure published (assumption): no asymmetric cryptography, only nonces and, when
# bound, a KDF: DEFAULT_MS.
START_AUTH_SESSION_SALTED_MS = (P256_OP_MS, "slb9670")
START_AUTH_SESSION_UNSALTED_MS = (DEFAULT_MS, "assumption")

# Key creation (CreatePrimary, Create, CreateLoaded), by the template's type. RSA: the
# bpftrace's RSA-2048 CreatePrimary, 1958.5 ms (bpftrace; another TPM, the SLB9670's RSA
# key generation is not published). ECC: no figure published (assumption): deriving or
# generating a P-256 key and its public point is one scalar multiplication, P256_OP_MS.
# Other types (symmetric, keyed hash): DEFAULT_MS (assumption).
KEYGEN_MS = {0x0001: (1958.5, "bpftrace"), 0x0023: (P256_OP_MS, "assumption")}
KEYGEN_CCS = (0x131, 0x153, 0x191)

# Every HMAC or policy session in a command's authorization area adds 18.0 ms: the
# SLB9670's PCR_Extend went from 6.4 ms to 24.4 ms with the kernel's HMAC session
# (slb9670; the session was started, its salt decrypted, by the StartAuthSession before,
# so the difference is the TPM checking the command's HMAC and making the response's).
# Password sessions add nothing.
SESSION_MS = (18.0, "slb9670")

TPM_ST_SESSIONS = 0x8002
TPM_RH_NULL = 0x40000007

# Handles in the handle area of each command (TPM 2.0 Part 3), to find the authorization
# area behind them. A command not listed here gets no session surcharge.
HANDLES = {
    0x11F: 2, 0x120: 2, 0x121: 1, 0x122: 2, 0x124: 1, 0x125: 1, 0x126: 1, 0x127: 1,
    0x128: 1, 0x129: 1, 0x12A: 1, 0x12B: 1, 0x12C: 1, 0x12D: 1, 0x12E: 1, 0x12F: 2,
    0x130: 1, 0x131: 1, 0x132: 1, 0x133: 2, 0x134: 2, 0x135: 2, 0x136: 2, 0x137: 2,
    0x138: 2, 0x139: 1, 0x13A: 1, 0x13B: 1, 0x13C: 1, 0x13D: 1, 0x13E: 1, 0x13F: 1,
    0x140: 1, 0x147: 2, 0x148: 2, 0x149: 3, 0x14A: 2, 0x14B: 2, 0x14C: 2, 0x14D: 3,
    0x14E: 2, 0x14F: 2, 0x150: 2, 0x151: 2, 0x152: 2, 0x153: 1, 0x154: 1, 0x155: 1,
    0x156: 1, 0x157: 1, 0x158: 1, 0x159: 1, 0x15B: 1, 0x15C: 1, 0x15D: 1, 0x15E: 1,
    0x160: 2, 0x162: 1, 0x163: 1, 0x164: 1, 0x168: 1, 0x169: 1, 0x16A: 1, 0x16B: 1,
    0x16C: 1, 0x16D: 1, 0x16E: 1, 0x16F: 1, 0x170: 1, 0x171: 1, 0x172: 1, 0x173: 1,
    0x174: 1, 0x176: 2, 0x177: 1, 0x17F: 1, 0x180: 1, 0x182: 1, 0x183: 1, 0x184: 3,
    0x185: 2, 0x187: 1, 0x188: 1, 0x189: 1, 0x18B: 1, 0x18C: 1, 0x18D: 1, 0x18F: 1,
    0x190: 1, 0x191: 1, 0x192: 3, 0x193: 1,
}


def _sessions(cmd, cc):
    """The session handles of a command's authorization area ([] if it has none or the
    command cannot be parsed)."""
    if len(cmd) < 10 or struct.unpack(">H", cmd[:2])[0] != TPM_ST_SESSIONS or cc not in HANDLES:
        return [], None
    off = 10 + 4 * HANDLES[cc]
    if len(cmd) < off + 4:
        return [], None
    (size,) = struct.unpack(">I", cmd[off : off + 4])
    end = off + 4 + size
    off += 4
    handles = []
    try:
        while off < end:
            (h,) = struct.unpack(">I", cmd[off : off + 4])
            off += 4
            (n,) = struct.unpack(">H", cmd[off : off + 2])
            off += 2 + n + 1  # nonce, attributes
            (n,) = struct.unpack(">H", cmd[off : off + 2])
            off += 2 + n  # hmac
            handles.append(h)
    except struct.error:
        return handles, None
    return handles, end


def latency(cmd):
    """The modeled time of one TPM command in ms, and what it is made of: (ms, [(part,
    ms, source)])."""
    if len(cmd) < 10:
        return DEFAULT_MS, [("short command", DEFAULT_MS, "assumption")]
    (cc,) = struct.unpack(">I", cmd[6:10])
    name = CC_NAMES.get(cc, f"0x{cc:x}")
    sessions, params = _sessions(cmd, cc)
    if cc == 0x176 and len(cmd) >= 14:
        (tpm_key,) = struct.unpack(">I", cmd[10:14])
        ms, src = START_AUTH_SESSION_SALTED_MS if tpm_key != TPM_RH_NULL else START_AUTH_SESSION_UNSALTED_MS
        parts = [(name + (" (salted)" if tpm_key != TPM_RH_NULL else " (unsalted)"), ms, src)]
    elif cc in KEYGEN_CCS and params is not None:
        # inSensitive (a TPM2B), then inPublic: a TPM2B whose TPMT_PUBLIC starts with the type.
        try:
            (n,) = struct.unpack(">H", cmd[params : params + 2])
            (_, kind) = struct.unpack(">HH", cmd[params + 2 + n : params + 6 + n])
        except struct.error:
            kind = None
        ms, src = KEYGEN_MS.get(kind, (DEFAULT_MS, "assumption"))
        parts = [(f"{name} ({ {0x0001: 'RSA', 0x0023: 'ECC'}.get(kind, 'other') })", ms, src)]
    elif cc in LATENCY_MS:
        ms, src = LATENCY_MS[cc]
        parts = [(name, ms, src)]
    else:
        parts = [(name + " (default)", DEFAULT_MS, "assumption")]
    for h in sessions:
        if h >> 24 in (0x02, 0x03):
            parts.append(("HMAC/policy session", SESSION_MS[0], SESSION_MS[1]))
    return sum(p[1] for p in parts), parts


def table_rows():
    """The model as rows (what, ms, source) for the docs and the bench report."""
    rows = [(CC_NAMES.get(cc, hex(cc)), ms, src) for cc, (ms, src) in sorted(LATENCY_MS.items())]
    rows += [("StartAuthSession (salted)",) + START_AUTH_SESSION_SALTED_MS,
             ("StartAuthSession (unsalted)",) + START_AUTH_SESSION_UNSALTED_MS,
             ("CreatePrimary/Create/CreateLoaded RSA",) + KEYGEN_MS[0x0001],
             ("CreatePrimary/Create/CreateLoaded ECC",) + KEYGEN_MS[0x0023],
             ("+ per HMAC or policy session",) + SESSION_MS,
             ("any other command", DEFAULT_MS, "assumption")]
    return rows


if __name__ == "__main__":
    for what, ms, src in table_rows():
        print(f"{what:40s} {ms:8.1f} ms  {src}")
