// SPDX-License-Identifier: GPL-2.0
//! Counters of the resource manager's work.

use super::platform::Vec;

/// What the resource manager did since it was created. Every counter only grows (wrapping),
/// except the gauges (`sessions`, `abandoned`, `waiting`, `open_spaces`, `closing_spaces`,
/// `tombstones`, `pending_flushes`, `resident_objects`, `resident_sessions`), which say how
/// things are now, and
/// `longest_wait_ns`, a maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client commands given to `execute` (including rejected ones).
    pub client_commands: u64,
    /// Commands sent to the TPM, of any origin (every transmit is counted here, in one place).
    pub tpm_commands: u64,
    /// TPM2_ContextLoad commands sent by the resource manager itself.
    pub context_loads: u64,
    /// TPM2_ContextSave commands sent by the resource manager itself.
    pub context_saves: u64,
    /// TPM2_FlushContext commands sent by the resource manager itself.
    pub flushes: u64,
    /// Responses synthesized in the resource manager (nothing of the client command sent).
    pub synthesized_responses: u64,
    /// Client commands refused with an errno.
    pub rejected_commands: u64,
    /// Transport failures.
    pub transport_errors: u64,
    /// Gauge: sessions the resource manager tracks now (owned by a space or abandoned).
    pub sessions: u64,
    /// Gauge: abandoned sessions now (saved by a client whose file was closed; loadable by
    /// the spaces of the same uid, and root's).
    pub abandoned: u64,
    /// Gauge: commands waiting for a session slot now.
    pub waiting: u64,
    /// Waits for a session slot begun (`Rm::wait_begin`).
    pub waits: u64,
    /// Longest wait for a session slot, from `Rm::wait_begin` to `Rm::wait_end` (ns).
    pub longest_wait_ns: u64,
    /// Sessions flushed by force while their owner (or a later loader) still wanted them:
    /// for a waiter (`Rm::evict_for`), to close a context gap, or because they could not be
    /// saved after their owner's command.
    pub evictions: u64,
    /// Of `evictions`, sessions taken before SESSION_TIMEOUT to break a jam: part-sets of
    /// spaces waiting behind the evictor (see `choose_early_victim`).
    pub early_evictions: u64,
    /// Context-gap repairs (one per session re-saved, left loaded or evicted because of
    /// TPM_RC_CONTEXT_GAP).
    pub gap_repairs: u64,
    /// Abandoned sessions loaded again by a space (session continuation).
    pub continuation_hits: u64,
    /// Gauge: spaces created and not closed yet (open files). Counted by their maker's
    /// [`super::space::SpaceIds`], not by the resource manager: `Rm::stats` leaves it 0.
    pub open_spaces: u64,
    /// Gauge: spaces whose file was released and whose close (the flushes of what they
    /// held) the module's workqueue has not done yet; counted in `open_spaces` too. Counted
    /// by [`super::space::SpaceIds`], like `open_spaces`.
    pub closing_spaces: u64,
    /// Gauge: evicted sessions whose owner has not been told yet (see `rm.rs`).
    pub tombstones: u64,
    /// Gauge: FlushContexts of ours not known to be done: the TPM did not run them (sent
    /// again), or the transport failed and the TPM could not be asked (looked for).
    pub pending_flushes: u64,
    /// Handles whose flush failed on the transport, could not be checked at once, and were
    /// still in the TPM when it answered again: given up, never flushed, because by then
    /// another user of the TPM may hold the same handle.
    pub flushes_given_up: u64,
    /// New sessions handed to a space under a number it still held dead (its old reference
    /// then names the new session). tpmrs holds those numbers before it sends a
    /// StartAuthSession (`rm/preoccupy.rs`): only a waiter that gave up with more of them
    /// than it holds at once, or a TPM that does not hand out its lowest free number, gets
    /// one.
    pub dead_numbers_handed_over: u64,
    /// Gauge: objects of every space left loaded between commands (`Config::resident`).
    pub resident_objects: u64,
    /// Gauge: sessions of every space left loaded between commands (`Config::resident`).
    pub resident_sessions: u64,
    /// Resident objects flushed and resident sessions saved to make room for another
    /// command, to keep the reserve, or for a suspend.
    pub resident_evictions: u64,
    /// Resident objects and sessions the TPM no longer had at their next use (lost behind
    /// tpmrs' back: a TPM Reset or power loss, a flush through /dev/tpm0).
    pub resident_lost: u64,
    /// System suspends and hibernations prepared for (`Rm::suspend`, from the glue's PM
    /// notifier): every resident context saved or flushed before the TPM's power goes.
    pub suspends: u64,
}

impl Stats {
    /// Every counter with its name, in declaration order: what `/sys/kernel/debug/tpmrs/stats`
    /// prints, one `name value` line each.
    pub fn rows(&self) -> [(&'static str, u64); 28] {
        [
            ("client_commands", self.client_commands),
            ("tpm_commands", self.tpm_commands),
            ("context_loads", self.context_loads),
            ("context_saves", self.context_saves),
            ("flushes", self.flushes),
            ("synthesized_responses", self.synthesized_responses),
            ("rejected_commands", self.rejected_commands),
            ("transport_errors", self.transport_errors),
            ("sessions", self.sessions),
            ("abandoned", self.abandoned),
            ("waiting", self.waiting),
            ("waits", self.waits),
            ("longest_wait_ns", self.longest_wait_ns),
            ("evictions", self.evictions),
            ("early_evictions", self.early_evictions),
            ("gap_repairs", self.gap_repairs),
            ("continuation_hits", self.continuation_hits),
            ("open_spaces", self.open_spaces),
            ("closing_spaces", self.closing_spaces),
            ("tombstones", self.tombstones),
            ("pending_flushes", self.pending_flushes),
            ("flushes_given_up", self.flushes_given_up),
            ("dead_numbers_handed_over", self.dead_numbers_handed_over),
            ("resident_objects", self.resident_objects),
            ("resident_sessions", self.resident_sessions),
            ("resident_evictions", self.resident_evictions),
            ("resident_lost", self.resident_lost),
            ("suspends", self.suspends),
        ]
    }
}

/// A counter per space id (the sessions evicted from each open space), for the per-client
/// view of the glue. Entries are dropped when their space closes, so it holds at most one per
/// open space that lost a session.
#[derive(Default)]
pub struct OwnerCounts(Vec<(u64, u64)>);

impl OwnerCounts {
    /// No counts; allocates nothing.
    pub const fn new() -> Self {
        OwnerCounts(Vec::new())
    }

    /// Adds one to the count of `owner`. Without memory for a new entry the event is not
    /// counted (the count is for display only).
    pub fn bump(&mut self, owner: u64) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == owner) {
            bump(&mut e.1);
        } else {
            let _ = self.0.try_push((owner, 1));
        }
    }

    /// The count of `owner` (0 if none).
    pub fn get(&self, owner: u64) -> u64 {
        self.0.iter().find(|e| e.0 == owner).map_or(0, |e| e.1)
    }

    /// Drops the count of `owner` (its space closed).
    pub fn forget(&mut self, owner: u64) {
        if let Some(i) = self.0.iter().position(|e| e.0 == owner) {
            self.0.swap_remove(i);
        }
    }
}

/// Adds one to `c`, wrapping.
pub(super) fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_every_counter_once() {
        // Every field, without `..Default::default()`: a new counter does not compile here
        // until it is given a value, and then must appear in `rows` to pass.
        let s = Stats {
            client_commands: 1,
            tpm_commands: 2,
            context_loads: 3,
            context_saves: 4,
            flushes: 5,
            synthesized_responses: 6,
            rejected_commands: 7,
            transport_errors: 8,
            sessions: 9,
            abandoned: 10,
            waiting: 11,
            waits: 12,
            longest_wait_ns: 13,
            evictions: 14,
            early_evictions: 15,
            gap_repairs: 16,
            continuation_hits: 17,
            open_spaces: 18,
            closing_spaces: 19,
            tombstones: 20,
            pending_flushes: 21,
            flushes_given_up: 22,
            dead_numbers_handed_over: 23,
            resident_objects: 24,
            resident_sessions: 25,
            resident_evictions: 26,
            resident_lost: 27,
            suspends: 28,
        };
        let rows = s.rows();
        let values: std::vec::Vec<u64> = rows.iter().map(|r| r.1).collect();
        assert_eq!(
            values,
            (1..=rows.len() as u64).collect::<std::vec::Vec<_>>()
        );
        for (i, (a, _)) in rows.iter().enumerate() {
            assert!(rows[i + 1..].iter().all(|(b, _)| a != b), "{a} twice");
        }
    }

    #[test]
    fn owner_counts_count_per_owner_and_forget() {
        let mut c = OwnerCounts::new();
        c.bump(7);
        c.bump(7);
        c.bump(9);
        assert_eq!((c.get(7), c.get(9), c.get(8)), (2, 1, 0));
        c.forget(7);
        assert_eq!((c.get(7), c.get(9)), (0, 1));
    }
}
