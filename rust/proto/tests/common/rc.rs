// SPDX-License-Identifier: GPL-2.0
//! TPM response codes by their names in the specification (part 2, TPM_RC), for the tests:
//! the core's constants, the few more the tests inject, and `rm`, the resource-manager layer.
#![allow(dead_code, unused_imports)]

pub use tpmrs_proto::constants::{
    rc_at_handle, rc_at_session, rc_handle_at_handle, rc_handle_at_parameter, rc_handle_at_session,
    TPM_RC_AUTH_CONTEXT, TPM_RC_COMMAND_CODE, TPM_RC_CONTEXT_GAP, TPM_RC_EXPIRED, TPM_RC_FAILURE,
    TPM_RC_OBJECT_MEMORY, TPM_RC_REFERENCE_H0, TPM_RC_RETRY, TPM_RC_SESSION_MEMORY, TPM_RC_TESTING,
    TSS2_RESMGR_TPM_RC_LAYER,
};

/// TPM_RC_YIELDED: the TPM suspended the command (a warning: not executed).
pub const TPM_RC_YIELDED: u32 = 0x908;
/// TPM_RC_REFERENCE_S0: the first session is not loaded.
pub const TPM_RC_REFERENCE_S0: u32 = 0x918;
/// TPM_RC_AUTH_FAIL (format one): the authorization HMAC check failed.
pub const TPM_RC_AUTH_FAIL: u32 = 0x08E;
/// TPM_RC_INTEGRITY (format one): a context's integrity check failed.
pub const TPM_RC_INTEGRITY: u32 = 0x09F;

/// `rc` in the resource-manager layer (TSS2_RESMGR_TPM_RC_LAYER).
pub const fn rm(rc: u32) -> u32 {
    rc | TSS2_RESMGR_TPM_RC_LAYER
}
