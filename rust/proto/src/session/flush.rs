// SPDX-License-Identifier: GPL-2.0
//! FlushContexts of ours that did not go through (the transport failed, or the TPM did not
//! execute them): queued, retried before the next command, and never sent once the TPM has
//! handed the same handle out again.

use super::super::constants::*;
use super::super::rm::tpm_io::{flush_done, Io};
use super::super::tpm::Tpm;
use super::registry::{same_session, SessionEntry, SessionState};
use super::Sessions;

impl Sessions {
    /// The TPM handed handle `h` to us (a new or loaded object or session): it was free, so a
    /// pending flush of it is stale and must never be sent.
    pub(crate) fn handed_out(&mut self, h: u32) {
        let session = is_session_handle(h);
        let mut i = 0;
        while let Some(&p) = self.pending.get(i) {
            if p == h || (session && is_session_handle(p) && same_session(p, h)) {
                self.pending.swap_remove(i);
            } else {
                // PANIC: i < pending.len() here.
                i += 1;
            }
        }
    }

    /// Queues a flush of session `h` that failed on the transport; `entry` is its registry
    /// entry (already removed). Never loses it: if the queue cannot grow, the entry stays in
    /// the registry as [`SessionState::FlushPending`] (its removal left room for it).
    pub(crate) fn queue_session_flush(&mut self, h: u32, entry: Option<SessionEntry>) {
        if self.pending.try_push(h).is_ok() {
            return;
        }
        let mut e = entry.unwrap_or_else(|| SessionEntry::new(h, 0, 0, 0));
        e.owner = None;
        e.state = SessionState::FlushPending;
        // If even this fails the handle leaks: nothing else can be done.
        let _ = self.registry.insert(e);
    }

    /// Retries queued flushes; those that fail on the transport stay queued.
    pub(crate) fn retry_pending(&mut self, io: &mut Io, tpm: &mut dyn Tpm) {
        let mut tries = self.pending.len();
        while tries > 0 {
            // PANIC: tries > 0 here.
            tries -= 1;
            let Some(h) = self.pending.pop() else {
                break;
            };
            if !flush_done(&io.flush(tpm, h)) {
                let _ = self.pending.try_push(h); // room: it was just popped
                return; // the transport is still down, or the TPM still busy
            }
            if is_session_handle(h) {
                self.sched.slot_freed();
            }
        }
        while let Some(h) = self.registry.find_flush_pending() {
            if !flush_done(&io.flush(tpm, h)) {
                return;
            }
            self.registry.remove(h);
            self.sched.slot_freed();
        }
    }
}
