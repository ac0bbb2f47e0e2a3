// SPDX-License-Identifier: GPL-2.0
//! What a client command does to the contexts it names, as the pipeline's stages (admission,
//! the transaction, the response) need to know it. A leaf: it uses no stage.

use super::super::command::Command;
use super::super::constants::*;
use super::super::context::parse_context;

/// Whether `cc` changes the state of the sequence object it uses.
pub(super) fn updates_sequence(cc: u32) -> bool {
    matches!(
        cc,
        TPM_CC_SEQUENCE_UPDATE | TPM_CC_SEQUENCE_COMPLETE | TPM_CC_EVENT_SEQUENCE_COMPLETE
    )
}

/// The session handle saved in the context a TPM2_ContextLoad command loads, if it is one.
pub(super) fn loaded_session(command: &Command, cmd: &[u8]) -> Option<u32> {
    if command.cc() != TPM_CC_CONTEXT_LOAD {
        return None;
    }
    let ctx = parse_context(cmd.get(command.params_offset()..)?).ok()?;
    is_session_handle(ctx.saved_handle).then_some(ctx.saved_handle)
}
