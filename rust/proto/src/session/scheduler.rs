// SPDX-License-Identifier: GPL-2.0
//! Global session exhaustion: who may try to take a TPM session slot, and when a waiter may
//! evict someone else's session. A pure, clock-driven state machine (no TPM, no sleeping):
//! [`super::super::Rm`] feeds it events and the kernel glue sleeps as it says.
//!
//! This is the design of James Bottomley's 2017 RFC ("tpm2-space: add handling for global
//! session exhaustion"), made deterministic:
//!
//! * **FIFO queue.** A command that finds no session slot (TPM_RC_SESSION_HANDLES or
//!   TPM_RC_SESSION_MEMORY) takes a [`Ticket`] at the tail of the queue. While the queue is
//!   not empty, a StartAuthSession is only sent for the *head* of the queue or for a waiter
//!   that holds a *reservation*; anybody else (a newcomer included) is answered
//!   `SessionsExhausted` and queues behind. No one can overtake a waiter.
//! * **Reservations.** Whenever a session of ours is freed, the oldest waiter without a
//!   reservation gets one: the freed slot is its own until it has retried or left. A waiter
//!   that leaves with its reservation unused (signal, close) passes it to the next one, so no
//!   wake-up is lost. A reservation is used up when its holder's StartAuthSession succeeds,
//!   and dropped when the TPM still says "exhausted" (someone outside tpmrs -- the kernel,
//!   /dev/tpm0, /dev/tpmrm0 -- took the slot: the TPM's answer, not our count, is the truth).
//! * **Polling.** The head retries every `retry_interval_ns` even without a reservation:
//!   slots held outside tpmrs can free up without us knowing.
//! * **Eviction.** The oldest waiter without a reservation that has waited
//!   `session_timeout_ns` may evict one of *our* sessions that its owner has held for at
//!   least `session_timeout_ns` (abandoned sessions first, then the oldest; see
//!   [`choose_victim`]); the freed slot is reserved for it. At most one eviction attempt per
//!   waiter per `retry_interval_ns`. Not for a waiter whose last answer from the TPM was
//!   TPM_RC_SESSION_MEMORY: that is loaded-session memory, which evicting a saved session
//!   does not free (between commands tpmrs keeps no session loaded); such a waiter polls.
//! * **Giving up.** A waiter that has waited `session_timeout_ns` while nothing tpmrs
//!   could do would give it a slot -- tpmrs holds no session at all (every slot is held
//!   outside tpmrs), or the shortage is loaded-session memory -- tries once more outside
//!   the queue and gets the TPM's own answer (TPM_RC_SESSION_HANDLES or
//!   TPM_RC_SESSION_MEMORY), as on /dev/tpmrm0: the wait ends even when the slots are not
//!   ours to free.
//!
//! **Bound.** Let T = `session_timeout_ns`, P = `retry_interval_ns`, Q the most commands
//! waiting at once, S the session slots tpmrs holds while they wait (the TPM's slots minus
//! those held outside tpmrs, which we assume are not freed and retaken meanwhile) and d
//! the time one waiter takes to evict and retry (a few TPM commands). If S >= Q, a command
//! that queued at t0 is served by t0 + T + P + Q·d:
//! every slot granted after t0 went to one of the at most Q − 1 waiters ahead of it (FIFO),
//! so from t0 + T on at most Q − 1 of the S sessions are younger than T and at least one is
//! always eligible; by t0 + T + P every waiter ahead of it is past its eviction rate limit,
//! and each one (then itself) evicts as soon as it is the oldest unreserved waiter, woken by
//! the previous grant. (Loads from the abandoned list restart a session's protection and
//! add to the Q − 1.) The test `simulation_many_clients` checks the bound with Q = 40,
//! S = 64, d = 5 ms.

use super::super::constants::TPM_RC_SESSION_MEMORY;
use super::super::platform::{OutOfMemory, Vec};
use super::registry::SessionEntry;

/// A place in the wait queue, from `Rm::wait_begin` to `Rm::wait_end`. Deliberately not
/// `Clone`: one per waiting command.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    id: u64,
}

impl Ticket {
    /// The ticket's number (FIFO order: smaller is earlier).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What a waiter should do next (from `Rm::wait_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStep {
    /// Run the command again now (`Rm::execute_as` with the ticket).
    Retry,
    /// Sleep until woken (see `Rm::take_wakeup`) or until this time (ns), then ask again.
    Sleep {
        /// When to ask again at the latest.
        until_ns: u64,
    },
}

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

#[derive(Debug, Clone, Copy)]
struct Waiter {
    id: u64,
    space: u64,
    since_ns: u64,
    reserved: bool,
    last_try_ns: u64,
    last_evict_ns: Option<u64>,
    /// The TPM's last answer was TPM_RC_SESSION_MEMORY (no room to *load* a session, which
    /// only holders outside tpmrs keep between commands): evicting a saved session of ours
    /// would not help, so this waiter only polls.
    memory: bool,
    /// Gave up waiting (see [`Scheduler::give_up`]): its next try goes to the TPM whatever
    /// the queue, and the TPM's answer goes to the client.
    gave_up: bool,
}

/// The wait queue and its reservations.
#[derive(Default)]
pub struct Scheduler {
    /// Unordered; FIFO order is the order of `id`.
    waiters: Vec<Waiter>,
    next_id: u64,
    wakeup: bool,
    /// Waits begun.
    pub waits: u64,
    /// Longest wait ended (ns).
    pub longest_wait_ns: u64,
}

impl Scheduler {
    /// An empty queue.
    pub const fn new() -> Self {
        Scheduler {
            waiters: Vec::new(),
            next_id: 1,
            wakeup: false,
            waits: 0,
            longest_wait_ns: 0,
        }
    }

    /// Number of waiters.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    #[cfg(not(tpmrs_kernel))]
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }

    fn waiter(&self, id: u64) -> Option<&Waiter> {
        self.waiters.iter().find(|w| w.id == id)
    }

    fn waiter_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.waiters.iter_mut().find(|w| w.id == id)
    }

    /// Id of the head of the queue.
    fn head(&self) -> Option<u64> {
        self.waiters.iter().map(|w| w.id).min()
    }

    /// Id of the oldest waiter without a reservation.
    fn first_unreserved(&self) -> Option<u64> {
        self.waiters
            .iter()
            .filter(|w| !w.reserved)
            .map(|w| w.id)
            .min()
    }

    /// Queues a waiter of space `space` at the tail. `rc` is the TPM's answer that made it
    /// wait, if it got one.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the queue cannot grow.
    pub fn begin(&mut self, space: u64, now: u64, rc: Option<u32>) -> Result<Ticket, OutOfMemory> {
        let id = self.next_id;
        self.waiters.try_push(Waiter {
            id,
            space,
            since_ns: now,
            reserved: false,
            last_try_ns: now,
            last_evict_ns: None,
            memory: rc == Some(TPM_RC_SESSION_MEMORY),
            gave_up: false,
        })?;
        self.next_id = self.next_id.wrapping_add(1);
        self.waits = self.waits.wrapping_add(1);
        Ok(Ticket { id })
    }

    /// Removes waiter `id` (success, signal, close); returns how long it waited. An unused
    /// reservation goes to the next waiter; a new head is woken to poll.
    fn remove(&mut self, id: u64, now: u64) -> Option<u64> {
        let was_head = self.head() == Some(id);
        let i = self.index(id)?;
        let w = self.waiters.swap_remove(i)?;
        let waited = now.saturating_sub(w.since_ns);
        self.longest_wait_ns = self.longest_wait_ns.max(waited);
        if w.reserved {
            self.slot_freed();
        } else if was_head && !self.waiters.is_empty() {
            self.wakeup = true;
        }
        Some(waited)
    }

    /// `ticket` leaves the queue; returns how long it waited (`None` if it was not queued).
    pub fn end(&mut self, ticket: Ticket, now: u64) -> Option<u64> {
        self.remove(ticket.id, now)
    }

    /// Every waiter of space `space` leaves (the file is being closed).
    pub fn remove_space(&mut self, space: u64, now: u64) {
        while let Some(id) = self.waiters.iter().find(|w| w.space == space).map(|w| w.id) {
            self.remove(id, now);
        }
    }

    /// Whether waiter `id` is queued.
    pub fn contains(&self, id: u64) -> bool {
        self.index(id).is_some()
    }

    /// Whether waiter `id` is the head of the queue.
    pub fn is_head(&self, id: u64) -> bool {
        self.head() == Some(id)
    }

    /// Whether waiter `id` holds a reservation.
    pub fn is_reserved(&self, id: u64) -> bool {
        self.waiter(id).is_some_and(|w| w.reserved)
    }

    /// Whether waiter `id` is the oldest waiter without a reservation (the next to get a
    /// freed slot).
    pub fn is_first_unreserved(&self, id: u64) -> bool {
        self.first_unreserved() == Some(id)
    }

    /// Whether a command of waiter `id` (`None`: not waiting) may try to take a new session
    /// slot now: nobody waits, or it holds a reservation, or it is the head.
    pub fn may_take_slot(&self, id: Option<u64>) -> bool {
        match id.and_then(|id| self.waiter(id)) {
            Some(w) => w.reserved || self.is_head(w.id),
            None => self.waiters.is_empty(),
        }
    }

    /// One of our session slots was freed: the oldest waiter without a reservation gets it.
    pub fn slot_freed(&mut self) {
        if let Some(id) = self.first_unreserved() {
            self.reserve(id);
        }
    }

    /// Gives waiter `id` a reservation (a slot freed for it).
    pub fn reserve(&mut self, id: u64) {
        if let Some(w) = self.waiter_mut(id) {
            w.reserved = true;
            self.wakeup = true;
        }
    }

    /// Whether waiter `id` was last refused for loaded-session memory.
    pub fn is_memory(&self, id: u64) -> bool {
        self.waiter(id).is_some_and(|w| w.memory)
    }

    /// Waiter `id` stops waiting for a slot: nothing tpmrs could evict would give it one.
    /// Its next try is sent to the TPM even if others wait ahead, and the TPM's answer
    /// (TPM_RC_SESSION_HANDLES or TPM_RC_SESSION_MEMORY) is the command's response.
    pub fn give_up(&mut self, id: u64) {
        if let Some(w) = self.waiter_mut(id) {
            w.gave_up = true;
        }
    }

    /// Whether waiter `id` gave up (see [`Scheduler::give_up`]).
    pub fn gave_up(&self, id: Option<u64>) -> bool {
        id.and_then(|id| self.waiter(id)).is_some_and(|w| w.gave_up)
    }

    /// The space of waiter `id`.
    pub fn space_of(&self, id: u64) -> Option<u64> {
        self.waiter(id).map(|w| w.space)
    }

    /// Waiter `id` (if any) took a session slot: its reservation is used up.
    pub fn took_slot(&mut self, id: Option<u64>) {
        if let Some(w) = id.and_then(|id| self.waiter_mut(id)) {
            w.reserved = false;
        }
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
            let due = w
                .since_ns
                .saturating_add(timeout)
                .max(w.last_evict_ns.map_or(0, |t| t.saturating_add(interval)));
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

    /// Whether waiters must be woken (a reservation was granted or the head changed) since
    /// the last call.
    pub fn take_wakeup(&mut self) -> bool {
        core::mem::replace(&mut self.wakeup, false)
    }
}

/// The session to evict at `now`: among `entries`, the live sessions whose current owner has
/// held them at least `timeout` (abandoned ones: since their last owner got them), abandoned
/// ones first, then those of other spaces than the waiter's (`waiter_space`: evicting the
/// waiter's own session gains it nothing, so only when nothing else is eligible), then by
/// creation time. Only tracked sessions are candidates, never one created outside tpmrs.
pub fn choose_victim(
    entries: &[SessionEntry],
    now: u64,
    timeout: u64,
    waiter_space: Option<u64>,
) -> Option<u32> {
    entries
        .iter()
        .filter(|e| e.is_live() && now.saturating_sub(e.owned_since_ns) >= timeout)
        .min_by_key(|e| {
            let own = waiter_space.is_some() && e.owner == waiter_space;
            (!e.is_abandoned(), own, e.created_ns, e.id)
        })
        .map(|e| e.handle)
}

#[cfg(test)]
mod tests {
    use super::super::registry::SessionState;
    use super::*;

    const T: u64 = 2_000;
    const P: u64 = 100;

    #[test]
    fn fifo_gate_and_reservations() {
        let mut s = Scheduler::new();
        assert!(s.may_take_slot(None));
        let a = s.begin(1, 0, None).unwrap();
        let b = s.begin(2, 10, None).unwrap();
        let c = s.begin(3, 20, None).unwrap();
        assert_eq!(s.len(), 3);
        // Only the head may try; a newcomer may not.
        assert!(s.may_take_slot(Some(a.id())));
        assert!(!s.may_take_slot(Some(b.id())));
        assert!(!s.may_take_slot(None));
        // Two slots freed: a and b reserved, in order.
        s.slot_freed();
        s.slot_freed();
        assert!(s.take_wakeup());
        assert!(!s.take_wakeup());
        assert!(s.is_reserved(a.id()) && s.is_reserved(b.id()));
        assert!(!s.is_reserved(c.id()));
        assert!(s.may_take_slot(Some(b.id())));
        assert!(!s.may_take_slot(Some(c.id())));
        // b uses its slot and leaves; a's slot is stolen from outside.
        s.took_slot(Some(b.id()));
        assert_eq!(s.end(b, 50), Some(40));
        s.exhausted(Some(a.id()), 60, Some(0x905));
        assert!(!s.is_reserved(a.id()));
        assert!(s.is_head(a.id()));
        assert!(s.may_take_slot(Some(a.id())));
        // The next free goes to a again (oldest unreserved), not c.
        s.slot_freed();
        assert!(s.is_reserved(a.id()));
        assert!(!s.is_reserved(c.id()));
        assert_eq!(s.longest_wait_ns, 40);
        assert_eq!(s.waits, 3);
        let _ = (s.end(a, 100), s.end(c, 100));
        assert!(s.is_empty());
        assert!(s.may_take_slot(None));
    }

    #[test]
    fn leaving_passes_reservation_on() {
        let mut s = Scheduler::new();
        let a = s.begin(1, 0, None).unwrap();
        let b = s.begin(2, 0, None).unwrap();
        s.slot_freed();
        assert!(s.take_wakeup());
        // a is interrupted by a signal before retrying.
        s.end(a, 5);
        assert!(s.is_reserved(b.id()));
        assert!(s.take_wakeup());
        // Ending a stale ticket does nothing.
        assert_eq!(s.end(Ticket { id: 999 }, 5), None);
        // Closing b's file removes it.
        s.remove_space(2, 6);
        assert!(s.is_empty());
        assert!(!s.contains(b.id()));
    }

    #[test]
    fn head_leaving_wakes_the_next() {
        let mut s = Scheduler::new();
        let a = s.begin(1, 0, None).unwrap();
        let _b = s.begin(1, 0, None).unwrap();
        s.end(a, 1);
        assert!(s.take_wakeup());
    }

    #[test]
    fn steps() {
        let mut s = Scheduler::new();
        let a = s.begin(1, 0, None).unwrap();
        let b = s.begin(2, 0, None).unwrap();
        // Head polls every P; b sleeps until it could evict.
        assert_eq!(s.step(a.id(), 0, T, P), Action::Sleep(P));
        assert_eq!(s.step(a.id(), P, T, P), Action::Retry);
        s.exhausted(Some(a.id()), P, None);
        assert_eq!(s.step(b.id(), P, T, P), Action::Sleep(2 * P));
        // At T, a (first unreserved) may evict; b not yet (a is ahead).
        assert_eq!(s.step(a.id(), T, T, P), Action::Evict);
        assert_eq!(s.step(b.id(), T, T, P), Action::Sleep(T + P));
        s.eviction_attempted(a.id(), T);
        // Nothing evicted: a polls, next eviction attempt after P.
        assert_eq!(s.step(a.id(), T, T, P), Action::Retry);
        s.exhausted(Some(a.id()), T, Some(0x905));
        assert_eq!(s.step(a.id(), T + 1, T, P), Action::Sleep(T + P));
        // a gets a slot by eviction: Retry; now b is first unreserved and may evict.
        s.reserve(a.id());
        assert_eq!(s.step(a.id(), T + 1, T, P), Action::Retry);
        assert_eq!(s.step(b.id(), T + 1, T, P), Action::Evict);
        assert!(s.waited(b.id(), T, T));
        assert!(!s.waited(b.id(), T - 1, T));
        assert_eq!(s.step(77, 0, T, P), Action::Retry);
    }

    #[test]
    fn no_eviction_for_session_memory() {
        let mut s = Scheduler::new();
        let a = s.begin(1, 0, Some(0x903)).unwrap();
        // Head: polls, never evicts.
        assert_eq!(s.step(a.id(), T, T, P), Action::Retry);
        s.exhausted(Some(a.id()), T, None);
        assert_eq!(s.step(a.id(), T, T, P), Action::Sleep(T + P));
        s.exhausted(Some(a.id()), T + P, Some(0x905));
        assert_eq!(s.step(a.id(), T + P, T, P), Action::Evict);
    }

    fn e(handle: u32, id: u64, owner: Option<u64>, created: u64, owned: u64) -> SessionEntry {
        let mut e = SessionEntry::new(handle, id, 1, created);
        e.owner = owner;
        e.owned_since_ns = owned;
        e.state = SessionState::SavedByClient;
        e
    }

    #[test]
    fn victim_choice() {
        let now = 10 * T;
        // Owned, old.
        let mut v = std::vec![e(0x0300_0000, 1, Some(1), 0, 0)];
        assert_eq!(choose_victim(&v, now, T, None), Some(0x0300_0000));
        // Older owned session created later is not preferred over an earlier one.
        v.push(e(0x0300_0001, 2, Some(2), 5, 5));
        assert_eq!(choose_victim(&v, now, T, None), Some(0x0300_0000));
        // An abandoned one goes first, even if younger (but old enough).
        v.push(e(0x0300_0002, 3, None, now - T, now - T));
        assert_eq!(choose_victim(&v, now, T, None), Some(0x0300_0002));
        // Too young: never, abandoned or not.
        v[2].owned_since_ns = now - T + 1;
        assert_eq!(choose_victim(&v, now, T, None), Some(0x0300_0000));
        v[0].owned_since_ns = now - 1;
        v[1].owned_since_ns = now - 1;
        assert_eq!(choose_victim(&v, now, T, None), None);
        // A continued session (loaded from the abandoned list) restarts its protection.
        v[0].owned_since_ns = now - T;
        assert_eq!(choose_victim(&v, now, T, None), Some(0x0300_0000));
        // Flush-pending entries are not sessions of anyone.
        v[0].state = SessionState::FlushPending;
        assert_eq!(choose_victim(&v, now, T, None), None);
        assert_eq!(choose_victim(&[], now, T, None), None);
        // The waiter's own sessions come after every other space's.
        let v = std::vec![
            e(0x0300_0000, 1, Some(7), 0, 0),
            e(0x0300_0001, 2, Some(8), 5, 5)
        ];
        assert_eq!(choose_victim(&v, now, T, Some(7)), Some(0x0300_0001));
        assert_eq!(choose_victim(&v, now, T, Some(8)), Some(0x0300_0000));
        assert_eq!(choose_victim(&v[..1], now, T, Some(7)), Some(0x0300_0000));
    }
}
