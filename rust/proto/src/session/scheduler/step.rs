// SPDX-License-Identifier: GPL-2.0
//! What a waiter does next, before any TPM traffic: retry, evict, or sleep until when
//! ([`Scheduler::step`]), and what its tries and eviction attempts leave behind.

use super::super::super::constants::TPM_RC_SESSION_MEMORY;
use super::Scheduler;

/// What the scheduler says a waiter should do (before any TPM traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Retry the command.
    Retry,
    /// Try to evict a session for this waiter (then ask again).
    Evict,
    /// Sleep until woken or until this time.
    Sleep(u64),
}

impl Scheduler {
    /// Whether waiter `id` may try to evict at `now` before it has waited SESSION_TIMEOUT
    /// (see [`super::choose_early_victim`]): it is the first without a reservation, was not
    /// refused for loaded-session memory, and has not tried to evict in the last
    /// `interval`.
    pub fn may_evict_early(&self, id: u64, now: u64, interval: u64) -> bool {
        self.is_first_unreserved(id)
            && self.waiter(id).is_some_and(|w| {
                !w.memory
                    && w.last_evict_ns
                        .is_none_or(|t| now >= t.saturating_add(interval))
            })
    }

    /// Waiter `id` (if any) tried at `now` and found no slot: its reservation is gone.
    /// `rc` is the TPM's answer (`None` if the command was refused before reaching the TPM).
    pub fn exhausted(&mut self, id: Option<u64>, now: u64, rc: Option<u32>) {
        if let Some(w) = id.and_then(|id| self.waiter_mut(id)) {
            w.reserved = false;
            w.last_try_ns = now;
            if let Some(rc) = rc {
                w.memory = rc == TPM_RC_SESSION_MEMORY;
            }
        }
    }

    /// Waiter `id` attempted an eviction at `now` (successful or not).
    pub fn eviction_attempted(&mut self, id: u64, now: u64) {
        if let Some(w) = self.waiter_mut(id) {
            w.last_evict_ns = Some(now);
            w.evict_due_ns = None;
        }
    }

    /// Waiter `id`'s eviction attempt at `now` found no victim; the first may be eligible
    /// at `next` (see [`super::next_victim_ns`]). It tries again then, or a retry interval
    /// after `now` if that is sooner (what it found may change meanwhile), never before
    /// `now + 1`: a protection that ends between two polls costs no poll's wait.
    pub fn eviction_found_none(&mut self, id: u64, now: u64, next: Option<u64>, interval: u64) {
        if let Some(w) = self.waiter_mut(id) {
            let poll = now.saturating_add(interval);
            w.evict_due_ns = Some(
                next.map_or(poll, |t| t.min(poll))
                    .max(now.saturating_add(1)),
            );
        }
    }

    /// Whether waiter `id` has waited at least `timeout` at `now`.
    pub fn waited(&self, id: u64, now: u64, timeout: u64) -> bool {
        self.waiter(id)
            .is_some_and(|w| now.saturating_sub(w.since_ns) >= timeout)
    }

    /// What waiter `id` should do at `now`.
    pub fn step(&self, id: u64, now: u64, timeout: u64, interval: u64) -> Action {
        let Some(w) = self.waiter(id) else {
            return Action::Retry; // not waiting: just run it
        };
        if w.reserved {
            return Action::Retry;
        }
        let mut until = u64::MAX;
        if self.is_first_unreserved(id) && !w.memory {
            let again = match w.evict_due_ns {
                Some(t) => t,
                None => w.last_evict_ns.map_or(0, |t| t.saturating_add(interval)),
            };
            let due = w.since_ns.saturating_add(timeout).max(again);
            if now >= due {
                return Action::Evict;
            }
            until = until.min(due);
        }
        if self.is_head(id) {
            let due = w.last_try_ns.saturating_add(interval);
            if now >= due {
                return Action::Retry;
            }
            until = until.min(due);
        }
        if until == u64::MAX {
            // Woken by a reservation or a new head; poll anyway (a lost wake-up costs one
            // interval, never a hang).
            until = now.saturating_add(interval);
        }
        Action::Sleep(until.max(now.saturating_add(1)))
    }
}
