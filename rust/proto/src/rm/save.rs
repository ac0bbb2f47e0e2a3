// SPDX-License-Identifier: GPL-2.0
//! A session of ours saved by tpmrs: after the command that used it (the commit, `commit.rs`),
//! or to evict it while resident (`resident.rs`), with context-gap repair. A session that
//! cannot be saved is ended: flushed with a tombstone in its owner's name, or forgotten if
//! the TPM says it is gone.

use super::super::constants::is_handle_rc;
use super::super::error::RmError;
use super::super::platform::Charged;
use super::super::session::registry::SessionState;
use super::super::session::{blob_seq, End, Grant, Sessions, Why, MAX_GAP_REPAIRS};
use super::super::tpm::Tpm;
use super::tpm_io::{Io, Saved};

/// Saves loaded session `h` and records its blob (in its spare allocation if it has one
/// that fits: see `SessionEntry::spare`). False if the save failed with TPM_RC_CONTEXT_GAP
/// (the session is still loaded). A save the TPM does not run (TPM_RC_RETRY, ..., or never
/// sent) on every try leaves the session as it was: loaded, and saved after its next use.
/// Any other failure ends it: gone from the TPM (a handle error), or flushed with a
/// tombstone in its owner's name.
pub(super) fn save_session(io: &mut Io, st: &mut Sessions, tpm: &mut dyn Tpm, h: u32) -> bool {
    let unsaved = match io.save(tpm, h) {
        Ok(Saved::NotRun) => return true,
        Ok(Saved::Gap) => return false,
        Ok(Saved::Done) => {
            let spare = st.registry.get_mut(h).and_then(|e| e.spare.take());
            match (saved_into(io, spare), st.registry.get_mut(h)) {
                (Ok(blob), Some(entry)) => {
                    st.blob_len = st.blob_len.max(blob.len());
                    entry.saved_seq = blob_seq(&blob);
                    entry.state = SessionState::SavedByRm(blob);
                    entry.resident = false;
                    return true;
                }
                // No memory for its blob (the client's memory cgroup refused it).
                _ => true,
            }
        }
        // Gone from the TPM (lazy backup of strict accounting): forget it.
        Ok(Saved::Rc(rc)) if is_handle_rc(rc) => false,
        // Another error, or the transport failed after the save may have run.
        Ok(Saved::Rc(_)) | Err(_) => true,
    };
    // A flush that does not go through is settled or queued.
    let _ = if unsaved {
        st.evict(io, tpm, h, Grant::Queue, Why::Unsaved)
    } else {
        st.end_session(io, tpm, h, End::Gone, Grant::Queue)
    };
    true
}

/// The context of the last successful save: copied into `spare` if it fits there (no
/// allocation), else into a new allocation.
fn saved_into(io: &Io, spare: Option<Charged<u8>>) -> Result<Charged<u8>, RmError> {
    if let Some(mut b) = spare {
        let new = io.last_blob()?;
        if b.capacity() >= new.len() {
            b.clear();
            b.try_extend_from_slice(new)?;
            return Ok(b);
        }
    }
    io.saved_blob()
}

/// Saves session `h` whose save met TPM_RC_CONTEXT_GAP: repairs the gap and tries again, up
/// to [`MAX_GAP_REPAIRS`] times; a session that still cannot be saved is evicted (flushed,
/// with a tombstone in its owner's name). A repair that never reached the TPM changed
/// nothing: the session stays loaded, saved after its next use.
pub(super) fn save_after_gap(io: &mut Io, st: &mut Sessions, tpm: &mut dyn Tpm, h: u32) {
    for _ in 0..MAX_GAP_REPAIRS {
        match st.repair_gap(io, tpm) {
            Ok(true) => {}
            Err(RmError::NotSent(_)) => return,
            Ok(false) | Err(_) => break,
        }
        if save_session(io, st, tpm, h) {
            return;
        }
    }
    // A flush that does not go through is settled or queued.
    let _ = st.evict(io, tpm, h, Grant::Queue, Why::Gap);
}
