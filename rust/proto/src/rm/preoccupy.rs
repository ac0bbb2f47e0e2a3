// SPDX-License-Identifier: GPL-2.0
//! Pre-occupation: a space's new session never gets a number the space still holds dead.
//!
//! A session evicted from a space leaves a tombstone: the space's next reference to that
//! number is answered TPM_RC_EXPIRED. If the TPM handed the number to the same space's next
//! StartAuthSession before that, the client's old reference would reach the new session
//! with a stale nonce: an HMAC failure, which may count towards the dictionary-attack
//! lockout. The TPM hands out the lowest free session number (libtpms does, as the
//! reference implementation), and a space evicted whole has all its numbers free at once.
//!
//! So before it sends a StartAuthSession of a space that has tombstones, tpmrs starts
//! sessions of its own ([`build_hmac_session`]) until one lands on a number the space does
//! not hold dead. Each one that lands on a dead number is saved (its number stays taken, its
//! loaded-session slot is freed: the TPM loads only three sessions) and held; the clean one
//! is flushed, so that its number is the lowest free again, and the client's command, sent
//! once, gets it. The held ones are flushed after the command ([`Held::release`]).
//!
//! The client's command is never sent twice: it may carry audit, encrypt or decrypt
//! sessions whose nonces the TPM rolls when it runs it (sent again, the TPM would check
//! their HMACs with stale nonces).
//!
//! [`build_hmac_session`]: super::super::context::build_hmac_session

use super::super::constants::*;
use super::super::error::RmError;
use super::super::session::{Sessions, MAX_GAP_REPAIRS};
use super::super::tpm::Tpm;
use super::tpm_io::{Flushed, Io, Reply};

/// Most numbers a space holds dead that one of its StartAuthSessions holds at once. A space
/// that lost more sessions at once than this waits for its client to hear of some of them,
/// or until it gives up waiting.
pub(super) const MAX_HELD: usize = 8;

/// What [`Held::preoccupy`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Preoccupied {
    /// The lowest free number is one the space does not hold dead: send the command.
    Clean,
    /// No clean number: the TPM has no slot to spare (its answer, if it is
    /// TPM_RC_SESSION_HANDLES or TPM_RC_SESSION_MEMORY), the space holds more than
    /// [`MAX_HELD`] numbers dead, or the clean one could not be freed again. The command was
    /// not sent: it may wait like one the TPM refused.
    NoClean {
        /// The TPM's exhaustion answer, if that was the reason.
        rc: Option<u32>,
    },
}

/// The sessions tpmrs holds for one command (numbers its space holds dead), flushed after
/// it.
#[derive(Clone, Copy)]
pub(super) struct Held {
    handles: [u32; MAX_HELD],
    len: usize,
}

impl Held {
    /// Nothing held.
    pub(super) const fn new() -> Self {
        Held {
            handles: [0; MAX_HELD],
            len: 0,
        }
    }

    /// The handles held.
    fn handles(&self) -> &[u32] {
        self.handles.get(..self.len).unwrap_or(&[])
    }

    /// Holds every free number that space `owner` holds dead below the TPM's lowest clean
    /// free number (see the module documentation), so that a StartAuthSession sent now gets
    /// a clean one. Held numbers stay held (until [`Held::release`]) whatever it returns.
    ///
    /// # Errors
    /// [`RmError::Transport`], [`RmError::NotSent`], [`RmError::BadResponse`] from tpmrs'
    /// own commands: the client's command is not sent.
    pub(super) fn preoccupy(
        &mut self,
        io: &mut Io,
        st: &mut Sessions,
        tpm: &mut dyn Tpm,
        owner: u64,
    ) -> Result<Preoccupied, RmError> {
        let mut repairs = 0;
        // Each round holds one more number, repairs a context gap, or ends.
        for _ in 0..MAX_HELD.saturating_add(MAX_GAP_REPAIRS).saturating_add(1) {
            if self.len >= MAX_HELD {
                break;
            }
            let h = match io.start_hmac_session(tpm)? {
                Reply::Done(h) => h,
                Reply::Rc(TPM_RC_CONTEXT_GAP) if repairs < MAX_GAP_REPAIRS => {
                    // PANIC: repairs < MAX_GAP_REPAIRS here.
                    repairs += 1;
                    if st.repair_gap(io, tpm)? {
                        continue;
                    }
                    return Ok(Preoccupied::NoClean { rc: None });
                }
                Reply::Rc(rc) => {
                    let rc = is_session_exhaustion_rc(rc).then_some(rc);
                    return Ok(Preoccupied::NoClean { rc });
                }
            };
            st.handed_out(h);
            if !st.has_tombstone(owner, h) {
                // Clean: free again, the lowest free number for the client's command.
                let (verdict, _) = io.flush_settled(tpm, h);
                if verdict == Flushed::Done {
                    return Ok(Preoccupied::Clean);
                }
                st.pending.add(verdict, h);
                return Ok(Preoccupied::NoClean { rc: None });
            }
            // Dead: held, and saved, so that it takes no loaded-session slot. A save the
            // TPM does not run leaves it loaded, which is all.
            if let Some(slot) = self.handles.get_mut(self.len) {
                *slot = h;
                // PANIC: the slot exists, so self.len < MAX_HELD.
                self.len += 1;
            }
            io.save(tpm, h)?;
        }
        Ok(Preoccupied::NoClean { rc: None })
    }

    /// Flushes every session held (saved or not: FlushContext takes either). `grant`: the
    /// command of that space took no session, and each freed slot goes to a waiter of
    /// another space (see [`Sessions::slot_freed_for_others`]); if it took one, the slots
    /// were free before it, and whoever they were given to then keeps them. A flush that
    /// does not go through is queued or settled.
    pub(super) fn release(
        &mut self,
        io: &mut Io,
        st: &mut Sessions,
        tpm: &mut dyn Tpm,
        grant: Option<u64>,
    ) {
        let held = *self;
        *self = Held::new();
        for &h in held.handles() {
            match (io.flush_settled(tpm, h).0, grant) {
                (Flushed::Done, Some(owner)) => st.slot_freed_for_others(owner),
                (Flushed::Done, None) => {}
                (verdict, _) => st.pending.add(verdict, h),
            }
        }
    }
}
