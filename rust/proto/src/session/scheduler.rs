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
//!   that holds a *reservation* (its own, or one of its space's gang grant, below); anybody
//!   else (a newcomer included) is answered `SessionsExhausted` and queues behind. No one
//!   can overtake a waiter.
//! * **Reservations.** Whenever a session of ours is freed, the oldest waiter without a
//!   reservation gets one: the freed slot is its own until it has retried or left. A waiter
//!   that leaves with its reservation unused (signal, close) gives it back, and it is handed
//!   on like any freed slot, so no wake-up is lost. A reservation is used up when its holder's StartAuthSession succeeds,
//!   and dropped when the TPM still says "exhausted" (someone outside tpmrs -- the kernel,
//!   /dev/tpm0, /dev/tpmrm0 -- took the slot: the TPM's answer, not our count, is the truth).
//! * **Polling.** The head retries every `retry_interval_ns` even without a reservation:
//!   slots held outside tpmrs can free up without us knowing.
//! * **Turns.** The unit of fairness is the space. A space's *turn* begins when it gets a
//!   session while it holds none (`session_added`); a wait of the turn that ends with a
//!   session moves the start on, by at most `timeout_ns / 2` in all (`took_slot`). After a
//!   request ends -- answered, or interrupted by a signal -- the space keeps its queue place
//!   and wait clock for `keep_ns` (SESSION_TIMEOUT / 4): its next request, or the restarted
//!   write, takes them back (`begin`). It waits once per turn, not once per session.
//!   A space whose sessions were all evicted while it did not wait queues at the tail when
//!   its client asks again, but waits from the eviction if that was less than
//!   `timeout_ns` ago (`evicted`): its client finds out only at its next use.
//! * **Eviction.** The oldest waiter without a reservation that has waited
//!   `session_timeout_ns` may evict (see [`choose_victim`]): an abandoned session, else
//!   *every* session of one space -- never its own -- whose turn began at least
//!   `session_timeout_ns` ago: first one that does not wait, then one waiting behind it,
//!   then one waiting ahead whose turn began twice that long ago. The first freed slot is
//!   reserved for it; the next ones, up to as many sessions as its space held at once
//!   (its *peak*), are reserved for its space (a *gang grant*: `add_gang`, lapsing to the
//!   queue `keep_ns` after its last use), and more victims are taken until that need is covered.
//!   The rest goes to the queue, except when the waiter's space asks for more again in
//!   the same turn (it took back its kept place) and no waiter ahead needs a slot: then it
//!   stays reserved for that space for `spare_ns` (a retry interval: `add_spare`), since a
//!   space that grows past its peak comes back for it at once.
//!   At most one eviction round per waiter per
//!   `retry_interval_ns`.
//! * **Breaking a hold-and-wait.** When spaces that wait hold at least half of our sessions
//!   (the TPM is *jammed*: typically many clients started at once, and each got part of
//!   its set before the slots ran out), the first waiter without a reservation may evict
//!   after one retry interval instead of SESSION_TIMEOUT, if it holds less than a whole set
//!   (three sessions: a command takes at most three), no slot was freed for the queue
//!   in the last interval, and the part-sets held by spaces waiting *behind* it cover its
//!   need. Only those go ([`choose_early_victim`]), the latest queue place first, however
//!   young: their clients cannot use them while they wait, they would not be served before
//!   the waiter anyway, and they keep their queue places and wait clocks. A space that
//!   works, or holds a whole set, keeps its protection. Not for a waiter whose last answer from the TPM was
//!   TPM_RC_SESSION_MEMORY: that is loaded-session memory, which evicting a saved session
//!   does not free (resident sessions, which tpmrs does keep loaded between commands with
//!   `Config::resident`, were evicted before that answer counted: `rm/resident.rs`); such a
//!   waiter polls.
//! * **Giving up.** A waiter that has waited `session_timeout_ns` while nothing tpmrs
//!   could do would give it a slot -- tpmrs holds no session of another space (every slot
//!   is held outside tpmrs, or by the waiter's own space: no self-eviction), or the
//!   shortage is loaded-session memory -- tries once more outside the queue and gets the
//!   TPM's own answer (TPM_RC_SESSION_HANDLES or TPM_RC_SESSION_MEMORY), as on
//!   /dev/tpmrm0: the wait ends even when the slots are not ours to free. At the session
//!   budget (TPM_PT_ACTIVE_SESSIONS_MAX minus the headroom) that answer is synthesized.
//!
//! **Bound, per space.** Let T = `session_timeout_ns`, P = `retry_interval_ns`, d the time
//! one eviction and retry take (a few TPM commands) and Q the most spaces waiting at once.
//! If the slots held outside tpmrs do not change meanwhile, every space needs at most k
//! sessions at once and the budget holds at least k sessions of spaces other than the
//! waiter's, a space that starts to wait at t0 holds what it needs by
//! t0 + 1.5·T + P + Q·d, and a client that keeps using its sessions sees no gap between
//! two operations longer than 2·T + P + Q·d:
//!
//! 1. freed slots go in the order of the spaces' queue places, which a space keeps for its
//!    turn, and a gang grant serves a space's whole need in one round, so at most the Q − 1
//!    spaces ahead are served first, each once;
//! 2. at t0 + 1.5·T every space holding sessions waits ahead (≤ Q − 1), or began its turn
//!    before t0 (protection over, even moved on by T/2), or was served after t0 (only
//!    those ahead were): victims for W exist once those ahead are through;
//! 3. from t0 + T each waiter ahead is due and evicts as soon as it is the first without a
//!    reservation (woken by the previous grant), within P, costing d;
//! 4. a client's sessions go only after its turn began T ago, or while it waits behind the
//!    evictor (then its gap is already running, and bounded by its wait as above: its
//!    peak, lost sessions included, is served in one round); it hears so at its next use
//!    (TPM_RC_EXPIRED) and queues within one operation, its wait counted from the eviction.
//!
//! `tests/fairness.rs` checks Jain >= 0.95 and the gap <= 2·T + 1 s on three workloads;
//! `simulation_many_clients` checks the wait bound per request, and that nothing is evicted
//! when clients hold their sessions for less than T.

use super::super::constants::TPM_RC_SESSION_MEMORY;
use super::super::platform::{OutOfMemory, Vec};

mod place;
mod step;
#[cfg(test)]
mod tests;
mod turn;
mod victim;
mod wake;

use place::{round_of, GroupQueue, Places};
pub use step::Action;
use turn::Turn;
pub use victim::{
    choose_early_victim, choose_victim, early_supply, jammed, next_victim_ns, Victim, SET_MAX,
};

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
    /// Sleep until woken (see `Rm::take_wakeups`) or until this time (ns), then ask again.
    Sleep {
        /// When to ask again at the latest.
        until_ns: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    id: u64,
    space: u64,
    /// Its fair-share group (see [`Places`]).
    group: u64,
    since_ns: u64,
    reserved: bool,
    last_try_ns: u64,
    last_evict_ns: Option<u64>,
    /// Its last eviction attempt found no victim: when to try again (the earliest end of a
    /// protection then, within a retry interval), instead of a retry interval after it.
    evict_due_ns: Option<u64>,
    /// The TPM's last answer was TPM_RC_SESSION_MEMORY (no room to *load* a session, which
    /// only holders outside tpmrs keep between commands once tpmrs' resident sessions made
    /// way): evicting a saved session of ours would not help, so this waiter only polls.
    memory: bool,
    /// Gave up waiting (see [`Scheduler::give_up`]): its next try goes to the TPM whatever
    /// the queue, and the TPM's answer goes to the client.
    gave_up: bool,
    /// Its space waited earlier in the same turn: it took back its kept queue place.
    again: bool,
}

/// The wait queue and its reservations.
#[derive(Default)]
pub struct Scheduler {
    /// Unordered; FIFO order is the order of `id`.
    waiters: Vec<Waiter>,
    /// Per-space turns (spaces that held a session or waited).
    turns: Vec<Turn>,
    /// How long a kept queue place and gang reservations last unused (ns).
    pub keep_ns: u64,
    /// SESSION_TIMEOUT (ns): the most a turn's start moves on while it gathers its set.
    pub timeout_ns: u64,
    /// How long slots reserved for a space beyond what it held at once last unused (ns).
    pub spare_ns: u64,
    /// Where new waiters queue: by rounds per uid (see [`Places`]).
    places: Places,
    /// Spaces whose waiters must be woken (a reservation or gang grant for them, or they head
    /// the queue now); `wake_all` if the list could not grow.
    wake: Vec<u64>,
    wake_all: bool,
    /// Reservations left unused by waiters that left (see [`Scheduler::take_returned`]).
    returned: usize,
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
            turns: Vec::new(),
            keep_ns: 500_000_000,
            timeout_ns: 2_000_000_000,
            spare_ns: 100_000_000,
            places: Places::new(),
            wake: Vec::new(),
            wake_all: false,
            returned: 0,
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

    /// Queues a waiter of space `space`, whose fair-share group is `group` (its opener's
    /// uid, or 0 for every space when files share alike) and whose group's other spaces
    /// hold `held_by_others` sessions, at the tail of its group's next round (see
    /// `place.rs`). `rc` is the TPM's answer that made it
    /// wait, if it got one.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the queue cannot grow.
    pub fn begin(
        &mut self,
        space: u64,
        group: u64,
        held_by_others: usize,
        now: u64,
        rc: Option<u32>,
    ) -> Result<Ticket, OutOfMemory> {
        // A space that waited earlier in this turn gets its place and wait clock back.
        let kept = self
            .turn_mut(space)
            .and_then(|t| {
                if now < t.place_until_ns {
                    t.place.take()
                } else {
                    None
                }
            })
            .filter(|(id, _)| !self.waiters.iter().any(|w| w.id == *id));
        // A space whose sessions were all evicted lately waits from then, at the tail: its
        // client lost its set then, and finds out only at its next use of a session.
        let timeout = self.timeout_ns;
        let evicted = self
            .turn_mut(space)
            .and_then(|t| t.evicted_ns.take())
            .filter(|e| now < e.saturating_add(timeout));
        let (id, since) = match kept {
            Some(k) => k,
            None => {
                let head = self.head();
                let waiters = &self.waiters;
                let mut q = GroupQueue {
                    waiting: 0,
                    last_round: 0,
                    held_by_others,
                };
                for w in waiters.iter().filter(|w| w.group == group) {
                    q.waiting += 1;
                    q.last_round = q.last_round.max(round_of(w.id));
                }
                let id = self
                    .places
                    .next(q, head, |id| waiters.iter().any(|w| w.id == id));
                (id, evicted.unwrap_or(now).min(now))
            }
        };
        self.waiters.try_push(Waiter {
            id,
            space,
            group,
            since_ns: since,
            reserved: false,
            last_try_ns: now,
            last_evict_ns: None,
            evict_due_ns: None,
            memory: rc == Some(TPM_RC_SESSION_MEMORY),
            gave_up: false,
            again: kept.is_some(),
        })?;
        if kept.is_none() {
            self.waits = self.waits.wrapping_add(1);
        }
        Ok(Ticket { id })
    }

    /// Removes waiter `id` (success, signal, close); returns how long it waited. An unused
    /// reservation is given back ([`Scheduler::take_returned`]); a new head is woken to
    /// poll.
    fn remove(&mut self, id: u64, now: u64) -> Option<u64> {
        let was_head = self.head() == Some(id);
        let i = self.index(id)?;
        let w = self.waiters.swap_remove(i)?;
        let waited = now.saturating_sub(w.since_ns);
        self.longest_wait_ns = self.longest_wait_ns.max(waited);
        if w.reserved {
            self.returned = self.returned.saturating_add(1);
        } else if was_head {
            if let Some(h) = self.head().and_then(|h| self.space_of(h)) {
                self.wake_space(h);
            }
        }
        Some(waited)
    }

    /// `ticket` leaves the queue; returns how long it waited (`None` if it was not queued).
    /// Its space keeps the place (and wait clock) for its next request for `keep_ns`.
    pub fn end(&mut self, ticket: Ticket, now: u64) -> Option<u64> {
        let w = self.waiter(ticket.id).copied();
        let r = self.remove(ticket.id, now);
        if let Some(w) = w.filter(|w| !w.gave_up) {
            let until = now.saturating_add(self.keep_ns);
            if let Some(t) = self.turn_or_new(w.space, now) {
                t.place = Some((w.id, w.since_ns));
                t.place_until_ns = until;
            }
        }
        r
    }

    /// Every waiter of space `space` leaves (the file is being closed), and its turn is
    /// forgotten. Returns the gang reservations it held (slots to hand to the queue).
    pub fn remove_space(&mut self, space: u64, now: u64) -> usize {
        while let Some(id) = self.waiters.iter().find(|w| w.space == space).map(|w| w.id) {
            self.remove(id, now);
        }
        let mut gang = 0;
        if let Some(i) = self.turns.iter().position(|t| t.space == space) {
            if let Some(t) = self.turns.swap_remove(i) {
                gang = t.gang;
            }
        }
        gang
    }

    /// How many reservations waiters left unused since the last call: slots for the queue.
    /// The caller hands each on as any freed slot (to the first waiter whose space needs
    /// one, `Sessions::slot_freed`), so that a leaving waiter's slot follows the same rule.
    pub fn take_returned(&mut self) -> usize {
        core::mem::take(&mut self.returned)
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
    /// A space holding gang reservations (`space`) may, too.
    pub fn may_take_slot(&self, id: Option<u64>, space: u64) -> bool {
        if self.gang(space) > 0 {
            return true;
        }
        // Slots reserved for another space's gang are not up for grabs: only a waiter's own
        // reservation lets it try while there are any.
        let gangs = self.turns.iter().any(|t| t.gang > 0);
        match id.and_then(|id| self.waiter(id)) {
            Some(w) => w.reserved || (!gangs && self.is_head(w.id)),
            None => !gangs && self.waiters.is_empty(),
        }
    }

    /// The first waiter in FIFO order for which `pick(id, space, reserved)` holds: its id,
    /// space and whether it holds a reservation.
    pub fn first_waiter(&self, pick: impl Fn(u64, u64, bool) -> bool) -> Option<(u64, u64, bool)> {
        self.waiters
            .iter()
            .filter(|w| pick(w.id, w.space, w.reserved))
            .min_by_key(|w| w.id)
            .map(|w| (w.id, w.space, w.reserved))
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
            let space = w.space;
            self.wake_space(space);
        }
    }

    /// Whether waiter `id` took back its space's kept queue place: its space waited before
    /// in the same turn, and asks for more again.
    pub fn is_again(&self, id: u64) -> bool {
        self.waiter(id).is_some_and(|w| w.again)
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
}
