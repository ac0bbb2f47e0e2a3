// SPDX-License-Identifier: GPL-2.0
//! TPM 2.0 constants (names as in the TPM 2.0 Library specification, part 2) and the
//! resource-manager layer code.
//!
//! A table of the specification's names: the kernel build does not use every one (the host
//! tests and fuzzers use the rest), hence the `dead_code` allowance for that build alone.
#![cfg_attr(tpmrs_kernel, allow(dead_code))]

/// Largest command or response exchanged with a client or the TPM.
pub const TPM_BUFSIZE: usize = 4096;
/// Size of a command or response header (tag, size, command code or response code).
pub const TPM_HEADER_SIZE: usize = 10;
/// Most authorization sessions one command may carry.
pub const MAX_SESSIONS_PER_COMMAND: usize = 3;

// TPM_ST
/// Command/response without an authorization area.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// Command/response with an authorization area.
pub const TPM_ST_SESSIONS: u16 = 0x8002;

// TPM_CC
/// TPM2_HMAC_Start (also TPM2_MAC_Start).
pub const TPM_CC_HMAC_START: u32 = 0x0000_015B;
/// TPM2_SequenceUpdate.
pub const TPM_CC_SEQUENCE_UPDATE: u32 = 0x0000_015C;
/// TPM2_SequenceComplete.
pub const TPM_CC_SEQUENCE_COMPLETE: u32 = 0x0000_013E;
/// TPM2_EventSequenceComplete.
pub const TPM_CC_EVENT_SEQUENCE_COMPLETE: u32 = 0x0000_0185;
/// TPM2_HashSequenceStart.
pub const TPM_CC_HASH_SEQUENCE_START: u32 = 0x0000_0186;
/// TPM2_ContextLoad.
pub const TPM_CC_CONTEXT_LOAD: u32 = 0x0000_0161;
/// TPM2_ContextSave.
pub const TPM_CC_CONTEXT_SAVE: u32 = 0x0000_0162;
/// TPM2_FlushContext.
pub const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
/// TPM2_StartAuthSession.
pub const TPM_CC_START_AUTH_SESSION: u32 = 0x0000_0176;
/// TPM2_GetCapability.
pub const TPM_CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// TPM2_GetRandom.
pub const TPM_CC_GET_RANDOM: u32 = 0x0000_017B;

// TPM_RC
/// Success.
pub const TPM_RC_SUCCESS: u32 = 0x000;
/// Bad tag (format zero, version 1.2 style code range).
pub const TPM_RC_BAD_TAG: u32 = 0x01E;
/// Format-zero, version 2 codes start here.
pub const RC_VER1: u32 = 0x100;
/// The command code is not implemented.
pub const TPM_RC_COMMAND_CODE: u32 = RC_VER1 + 0x043;
/// Use of an authorization session with a command that cannot have one. The resource
/// manager answers it (in its own layer) to a GetCapability(TPM_CAP_HANDLES) of transient
/// objects or sessions that carries a session: it rewrites that list, which a response
/// HMAC or an audit digest covers.
pub const TPM_RC_AUTH_CONTEXT: u32 = RC_VER1 + 0x045;
/// Format-one codes start here (bit 7).
pub const RC_FMT1: u32 = 0x080;
/// The handle is not correct for its use.
pub const TPM_RC_HANDLE: u32 = RC_FMT1 + 0x00B;
/// The policy has expired. The resource manager answers it (in its own layer, with the
/// position of the handle or session) for a session it evicted: see `Rm` ("Evicted sessions").
pub const TPM_RC_EXPIRED: u32 = RC_FMT1 + 0x023;
/// Format one: the code refers to a parameter (`N` is its 1-based number).
pub const TPM_RC_P: u32 = 0x040;
/// Format one: the code refers to a session (`N` is its 1-based number).
pub const TPM_RC_S: u32 = 0x800;
/// Format one: shift of the position `N`.
pub const TPM_RC_N_SHIFT: u32 = 8;
/// Warning codes start here.
pub const RC_WARN: u32 = 0x900;
/// Gap between the oldest and newest saved session context too large.
pub const TPM_RC_CONTEXT_GAP: u32 = RC_WARN + 0x001;
/// Out of memory for object contexts.
pub const TPM_RC_OBJECT_MEMORY: u32 = RC_WARN + 0x002;
/// Out of memory for session contexts.
pub const TPM_RC_SESSION_MEMORY: u32 = RC_WARN + 0x003;
/// Out of shared object/session memory.
pub const TPM_RC_MEMORY: u32 = RC_WARN + 0x004;
/// Out of session handles.
pub const TPM_RC_SESSION_HANDLES: u32 = RC_WARN + 0x005;
/// Out of object handles.
pub const TPM_RC_OBJECT_HANDLES: u32 = RC_WARN + 0x006;
/// The TPM is in failure mode.
pub const TPM_RC_FAILURE: u32 = RC_VER1 + 0x001;
/// The TPM did not finish the command (it may be retried): the last of the warnings
/// TPM_RC_LOCALITY, TPM_RC_YIELDED, TPM_RC_CANCELED, TPM_RC_TESTING.
pub const TPM_RC_TESTING: u32 = RC_WARN + 0x00A;
/// First of TPM_RC_NV_RATE, TPM_RC_LOCKOUT, TPM_RC_RETRY, TPM_RC_NV_UNAVAILABLE.
pub const TPM_RC_NV_RATE: u32 = RC_WARN + 0x020;
/// Last of the NV / retry warnings.
pub const TPM_RC_NV_UNAVAILABLE: u32 = RC_WARN + 0x023;
/// The first handle in the handle area references a transient object or session not loaded.
pub const TPM_RC_REFERENCE_H0: u32 = RC_WARN + 0x010;
/// The last reference-error code (TPM_RC_REFERENCE_S6).
pub const TPM_RC_REFERENCE_S6: u32 = RC_WARN + 0x01E;
/// The TPM is not ready; the command may be retried.
pub const TPM_RC_RETRY: u32 = RC_WARN + 0x022;
/// Layer of codes produced by a resource manager (TSS2_RESMGR_TPM_RC_LAYER).
pub const TSS2_RESMGR_TPM_RC_LAYER: u32 = 11 << 16;

// TPM_RH, TPM_SE, TPM_ALG (what tpmrs' own StartAuthSession names)
/// TPM_RH_NULL: no tpmKey, no bind.
pub const TPM_RH_NULL: u32 = 0x4000_0007;
/// TPM_SE_HMAC: an HMAC session.
pub const TPM_SE_HMAC: u8 = 0x00;
/// TPM_ALG_NULL: no symmetric algorithm.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// TPM_ALG_SHA256.
pub const TPM_ALG_SHA256: u16 = 0x000B;

// TPM_HT (most significant octet of a handle)
/// Shift of the handle type in a handle.
pub const HR_SHIFT: u32 = 24;
/// PCR.
pub const TPM_HT_PCR: u8 = 0x00;
/// NV index.
pub const TPM_HT_NV_INDEX: u8 = 0x01;
/// HMAC session (loaded session, in TPM_CAP_HANDLES).
pub const TPM_HT_HMAC_SESSION: u8 = 0x02;
/// Policy session (saved session, in TPM_CAP_HANDLES).
pub const TPM_HT_POLICY_SESSION: u8 = 0x03;
/// Loaded sessions (TPM_CAP_HANDLES property).
pub const TPM_HT_LOADED_SESSION: u8 = 0x02;
/// Saved sessions (TPM_CAP_HANDLES property).
pub const TPM_HT_SAVED_SESSION: u8 = 0x03;
/// Permanent handles.
pub const TPM_HT_PERMANENT: u8 = 0x40;
/// Transient objects.
pub const TPM_HT_TRANSIENT: u8 = 0x80;
/// Persistent objects.
pub const TPM_HT_PERSISTENT: u8 = 0x81;

/// The password authorization session handle.
pub const TPM_RS_PW: u32 = 0x4000_0009;
/// `savedHandle` of a saved sequence object (TPMS_CONTEXT).
pub const TPM_SAVED_HANDLE_SEQUENCE: u32 = 0x8000_0001;

// TPM_CAP
/// TPM_CAP_HANDLES.
pub const TPM_CAP_HANDLES: u32 = 0x0000_0001;
/// TPM_CAP_COMMANDS.
pub const TPM_CAP_COMMANDS: u32 = 0x0000_0002;
/// TPM_CAP_TPM_PROPERTIES.
pub const TPM_CAP_TPM_PROPERTIES: u32 = 0x0000_0006;
/// TPM_PT_ACTIVE_SESSIONS_MAX (PT_FIXED + 17): the most sessions, loaded or saved, the TPM
/// holds at once.
pub const TPM_PT_ACTIVE_SESSIONS_MAX: u32 = 0x0000_0111;
/// TPM_PT_HR_TRANSIENT_MIN (PT_FIXED + 14): the fewest transient objects the TPM can hold
/// loaded at once (3 or more).
pub const TPM_PT_HR_TRANSIENT_MIN: u32 = 0x0000_010E;
/// TPM_PT_HR_LOADED_MIN (PT_FIXED + 16): the fewest sessions the TPM can hold loaded at
/// once (3 or more).
pub const TPM_PT_HR_LOADED_MIN: u32 = 0x0000_0110;
/// The seventh handle in the handle area references a transient object or session not
/// loaded (the last TPM_RC_REFERENCE_H* code).
pub const TPM_RC_REFERENCE_H6: u32 = RC_WARN + 0x016;
/// The first session in the authorization area references a session that is not loaded.
pub const TPM_RC_REFERENCE_S0: u32 = RC_WARN + 0x018;

/// TPMA_SESSION continueSession.
pub const TPMA_SESSION_CONTINUESESSION: u8 = 0x01;

/// The handle type (most significant octet) of `handle`.
pub const fn handle_type(handle: u32) -> u8 {
    // PANIC: constant index into a 4-byte array.
    handle.to_be_bytes()[0]
}

/// Whether `handle` names an HMAC or policy session.
pub const fn is_session_handle(handle: u32) -> bool {
    matches!(
        handle_type(handle),
        TPM_HT_HMAC_SESSION | TPM_HT_POLICY_SESSION
    )
}

/// Index bits of a session handle, shared by its HMAC and policy forms.
const SESSION_INDEX_MASK: u32 = 0x00FF_FFFF;

/// Whether `a` and `b` are session handles of the same slot (they differ at most in the
/// handle type, HMAC or policy). Never true for other handles: an object 0x80000000 is not
/// session 0x02000000.
pub const fn same_session(a: u32, b: u32) -> bool {
    is_session_handle(a) && is_session_handle(b) && a & SESSION_INDEX_MASK == b & SESSION_INDEX_MASK
}

/// Whether `handle` names a transient object.
pub const fn is_transient_handle(handle: u32) -> bool {
    handle_type(handle) == TPM_HT_TRANSIENT
}

/// A format-one TPM_RC_HANDLE for handle number `n` (1-based) in the handle area.
pub const fn rc_handle_at_handle(n: u32) -> u32 {
    rc_at_handle(TPM_RC_HANDLE, n)
}

/// A format-one TPM_RC_HANDLE for session number `n` (1-based) in the authorization area.
pub const fn rc_handle_at_session(n: u32) -> u32 {
    rc_at_session(TPM_RC_HANDLE, n)
}

/// The format-one code `rc` for handle number `n` (1-based) in the handle area.
pub const fn rc_at_handle(rc: u32, n: u32) -> u32 {
    rc | ((n & 0x7) << TPM_RC_N_SHIFT)
}

/// The format-one code `rc` for session number `n` (1-based) in the authorization area.
pub const fn rc_at_session(rc: u32, n: u32) -> u32 {
    rc | TPM_RC_S | ((n & 0x7) << TPM_RC_N_SHIFT)
}

/// Whether `rc` says the TPM is out of session slots or session memory: the command can
/// succeed once a session is freed (global session exhaustion).
pub const fn is_session_exhaustion_rc(rc: u32) -> bool {
    rc == TPM_RC_SESSION_HANDLES || rc == TPM_RC_SESSION_MEMORY
}

/// A format-one TPM_RC_HANDLE for parameter number `n` (1-based).
pub const fn rc_handle_at_parameter(n: u32) -> u32 {
    TPM_RC_HANDLE | TPM_RC_P | ((n & 0xF) << TPM_RC_N_SHIFT)
}

/// Whether `rc` is a warning that says the TPM did not execute the command and the same
/// command may succeed later (TPM_RC_CONTEXT_GAP .. TPM_RC_TESTING, TPM_RC_NV_RATE ..
/// TPM_RC_NV_UNAVAILABLE): the entity the command named is as it was.
///
/// TPM_RC_FAILURE counts too: a TPM in failure mode executes nothing (but
/// GetTestResult/GetCapability) until it is reset, and a reset invalidates every context,
/// which later loads find out; until then, what tpmrs tracks is kept as it is.
///
/// So does an answer in the TPM 1.2 format (neither the format-one bit nor TPM_RC_VER1
/// set, other than TPM_RC_BAD_TAG, which 2.0 TPMs give for compatibility): no TPM 2.0
/// executed anything to say that. QEMU answers TPM_FAIL (0x009) itself when its TPM
/// backend has gone away.
pub const fn is_not_executed_rc(rc: u32) -> bool {
    rc == TPM_RC_FAILURE
        || (rc != TPM_RC_SUCCESS && rc < RC_FMT1 && rc != TPM_RC_BAD_TAG)
        || (rc >= TPM_RC_CONTEXT_GAP && rc <= TPM_RC_TESTING)
        || (rc >= TPM_RC_NV_RATE && rc <= TPM_RC_NV_UNAVAILABLE)
}

/// Whether `rc` says a handle does not name a loaded or valid entity: format-one
/// TPM_RC_HANDLE (any position) or a TPM_RC_REFERENCE_* warning.
pub const fn is_handle_rc(rc: u32) -> bool {
    (rc & RC_FMT1 != 0 && rc & 0xBF == TPM_RC_HANDLE)
        || (rc >= TPM_RC_REFERENCE_H0 && rc <= TPM_RC_REFERENCE_S6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_executed() {
        for rc in [
            0x901, 0x903, 0x905, 0x908, 0x909, 0x90A, 0x920, 0x922, 0x923, 0x101, 0x009,
        ] {
            assert!(is_not_executed_rc(rc), "{rc:#x}");
        }
        // Success, handle/reference errors, format-one errors (even below 0x100, such as
        // TPM_RC_INTEGRITY 0x09F), TPM_RC_BAD_TAG and other 2.0 errors: not "not executed".
        for rc in [
            0x000, 0x18B, 0x98B, 0x910, 0x91E, 0x09F, 0x08B, 0x01E, 0x143, 0x0B_0143,
        ] {
            assert!(!is_not_executed_rc(rc), "{rc:#x}");
        }
    }

    #[test]
    fn positions() {
        assert_eq!(rc_handle_at_handle(1), 0x18B);
        assert_eq!(rc_handle_at_session(1), 0x98B);
        assert_eq!(rc_handle_at_parameter(1), 0x1CB);
        assert_eq!(TPM_RC_COMMAND_CODE | TSS2_RESMGR_TPM_RC_LAYER, 0x000B_0143);
        assert_eq!(rc_at_handle(TPM_RC_EXPIRED, 1), 0x1A3);
        assert_eq!(rc_at_session(TPM_RC_EXPIRED, 2), 0xAA3);
        assert!(is_session_exhaustion_rc(0x903));
        assert!(is_session_exhaustion_rc(0x905));
        assert!(!is_session_exhaustion_rc(0x904));
    }

    #[test]
    fn classification() {
        assert!(is_handle_rc(0x18B));
        assert!(is_handle_rc(0x98B));
        assert!(is_handle_rc(0x910));
        assert!(!is_handle_rc(0x902));
        assert!(is_handle_rc(TPM_RC_HANDLE));
        assert!(!is_handle_rc(0x9A2));
        assert!(is_not_executed_rc(0x901));
        assert!(is_not_executed_rc(0x906));
        assert!(is_not_executed_rc(0x922));
        assert!(!is_not_executed_rc(0x18B));
        assert!(is_session_handle(0x0200_0001));
        assert!(is_session_handle(0x0300_0000));
        assert!(!is_session_handle(0x8000_0000));
        assert!(is_transient_handle(0x80ff_fffe));
    }
}
