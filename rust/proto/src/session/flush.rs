// SPDX-License-Identifier: GPL-2.0
//! FlushContexts of ours that did not go through: queued, retried before the next command,
//! and never sent to a handle that may be someone else's by then.
//!
//! A flush the TPM refused with a warning that says it did not run it (TPM_RC_RETRY, ...)
//! left the handle ours: it is retried as it is. A flush whose transport failed may or may
//! not have run; while tpmrs still holds the chip it asks the TPM whether the handle is
//! there ([`Io::flush_settled`]). When even that fails, the flush is *unverified*: once the
//! TPM answers again, other users may have run commands meanwhile, and a handle freed by
//! our flush may have been given to one of them. So an unverified handle is flushed never:
//! if the TPM no longer has it, the flush had run; if it has it, it may be anyone's, and
//! tpmrs gives it up (counted in `flushes_given_up`) rather than flush another user's
//! object or session.

use super::super::constants::*;
use super::super::platform::Vec;
use super::super::rm::tpm_io::{Flushed, Io};
use super::super::space::ROOT_UID;
use super::super::stats::bump;
use super::super::tpm::Tpm;
use super::registry::{same_session, SessionEntry, SessionState};
use super::{Grant, Sessions};

/// Removes every entry of `list` that names the slot of `h`.
fn forget(list: &mut Vec<u32>, h: u32) {
    let session = is_session_handle(h);
    let mut i = 0;
    while let Some(&p) = list.get(i) {
        if p == h || (session && is_session_handle(p) && same_session(p, h)) {
            list.swap_remove(i);
        } else {
            // PANIC: i < list.len() here.
            i += 1;
        }
    }
}

impl Sessions {
    /// The TPM handed handle `h` to us (a new or loaded object or session): it was free, so a
    /// queued flush of it is stale and must never be sent.
    pub(crate) fn handed_out(&mut self, h: u32) {
        forget(&mut self.pending.certain, h);
        forget(&mut self.pending.unverified, h);
    }

    /// Queues a flush of session `h` that the TPM did not run; `entry` is its registry
    /// entry (already removed). Never loses it: if the queue cannot grow, the entry stays in
    /// the registry as [`SessionState::FlushPending`] (its removal left room for it).
    pub(crate) fn queue_session_flush(&mut self, h: u32, entry: Option<SessionEntry>) {
        if self.pending.certain.try_push(h).is_ok() {
            return;
        }
        let mut e = entry.unwrap_or_else(|| SessionEntry::new(h, 0, 0, ROOT_UID, 0));
        e.owner = None;
        e.state = SessionState::FlushPending;
        // If even this fails the handle leaks: nothing else can be done.
        let _ = self.registry.insert(e);
    }

    /// Retries queued flushes: those the TPM did not run are sent again; unverified ones
    /// are only looked for (see the module documentation). What still cannot be settled
    /// stays queued.
    pub(crate) fn retry_pending(&mut self, io: &mut Io, tpm: &mut dyn Tpm) {
        let mut tries = self.pending.unverified.len();
        while tries > 0 {
            // PANIC: tries > 0 here.
            tries -= 1;
            let Some(h) = self.pending.unverified.pop() else {
                break;
            };
            match io.handle_present(tpm, h) {
                Err(_) => {
                    let _ = self.pending.unverified.try_push(h); // room: it was just popped
                    return;
                }
                Ok(false) => {
                    if is_session_handle(h) {
                        self.grant(Grant::Queue);
                    }
                }
                Ok(true) => bump(&mut io.stats.flushes_given_up),
            }
        }
        let mut tries = self.pending.certain.len();
        while tries > 0 {
            // PANIC: tries > 0 here.
            tries -= 1;
            let Some(h) = self.pending.certain.pop() else {
                break;
            };
            match io.flush_settled(tpm, h).0 {
                Flushed::Done => {
                    if is_session_handle(h) {
                        self.grant(Grant::Queue);
                    }
                }
                verdict => {
                    // Room: it was just popped.
                    self.pending.add(verdict, h);
                    return; // the transport is still down, or the TPM still busy
                }
            }
        }
        while let Some(h) = self.registry.find_flush_pending() {
            match io.flush_settled(tpm, h).0 {
                Flushed::Done => {
                    self.registry.remove(h);
                    self.grant(Grant::Queue);
                }
                Flushed::NotExecuted => return,
                Flushed::Unknown => {
                    if self.pending.unverified.try_push(h).is_ok() {
                        self.registry.remove(h);
                    }
                    return;
                }
            }
        }
    }
}
