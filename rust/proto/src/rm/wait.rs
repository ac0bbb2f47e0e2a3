// SPDX-License-Identifier: GPL-2.0
//! The wait protocol: what a command does when the TPM has no session slot for it.
//!
//! [`Rm::execute`] answers [`Outcome::Exhausted`] and changes nothing. The caller then
//! drives the command with [`Rm::step`], one call per step, in a loop that is the same
//! everywhere (the kernel glue, the host tests, the fuzzers):
//!
//! ```text
//! let mut req = Request::new();
//! loop {
//!     // rm locked; if rm.sleep_until(&req, now) says so, sleep without the TPM
//!     // else take a turn at the TPM (rm.turns(), see crate::turns), then:
//!     let step = rm.step(&mut req, space, tpm, now(), cmd, rsp);   // rm and the chip locked
//!     rm.take_wakeups(wake the waiter of each space named);
//!     match step {
//!         Step::Done(r) => break r,
//!         Step::Sleep { until_ns } => sleep, rm unlocked, until woken or until_ns,
//!     }
//! }
//! rm.end_request(req, now());                 // leaves the queue, also after a signal
//! rm.take_wakeups(wake the waiter of each space named);
//! ```
//!
//! Only the waiters a change concerns are woken: the space a slot was reserved for, the
//! space a gang grant is for, a new head of the queue. The others sleep until their own
//! deadline.
//!
//! The policy (FIFO order, reservations, eviction after SESSION_TIMEOUT) is the
//! [`scheduler`](super::super::session::scheduler)'s.

use super::super::error::RmError;
use super::super::event::{Event, WaitEnd};
use super::super::session::scheduler::{
    choose_early_victim, choose_victim, early_supply, jammed, next_victim_ns, Action, Ticket,
    Victim, WaitStep, SET_MAX,
};
use super::super::session::Why;
use super::super::space::{Gathering, Space};
use super::super::tpm::Tpm;
use super::Rm;

mod request;
pub use request::Request;

/// What [`Rm::execute`] did with a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response of this many bytes is in the response buffer (from the TPM, or written in
    /// the resource-manager layer).
    Response(usize),
    /// No session slot for this command now, or others wait for one ahead of it. Nothing
    /// was changed; wait ([`Rm::step`]) and run it again.
    Exhausted {
        /// The TPM's answer (TPM_RC_SESSION_HANDLES or TPM_RC_SESSION_MEMORY), or None if
        /// the FIFO gate held the command back before it reached the TPM.
        rc: Option<u32>,
    },
}

impl Outcome {
    /// The response length, or [`RmError::SessionsExhausted`] (`-EAGAIN`) for a caller
    /// that does not wait.
    ///
    /// # Errors
    /// [`RmError::SessionsExhausted`].
    #[cfg(not(tpmrs_kernel))]
    pub fn response(self) -> Result<usize, RmError> {
        match self {
            Outcome::Response(n) => Ok(n),
            Outcome::Exhausted { .. } => Err(RmError::SessionsExhausted),
        }
    }
}

/// What the caller of [`Rm::step`] does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The command is over: a response of n bytes, or the errno.
    Done(Result<usize, RmError>),
    /// Sleep (interruptibly, with the resource manager unlocked) until woken or until this
    /// time, then step again.
    Sleep {
        /// When to step again at the latest (ns).
        until_ns: u64,
    },
}

/// What a waiter does next, decided without the TPM ([`Rm::wait_decision`]).
enum WaitDecision {
    /// Its ticket is no longer queued (its space was closed): sleep a poll interval.
    Stale,
    /// Nothing tpmrs could evict would give it a slot: one last try, the TPM's answer.
    GiveUp,
    /// What the scheduler says.
    Act(Action),
}

/// Most runs of a command in one step (the scheduler rate-limits retries; this only keeps
/// one step short whatever it says).
const MAX_RUNS_PER_STEP: usize = 4;

/// Most victims (spaces or abandoned sessions) one eviction takes.
const MAX_VICTIMS_PER_EVICTION: usize = 64;

impl Rm {
    /// One step of the command `req` (`cmd` of `space`): runs it when it may, and otherwise
    /// queues it or advances its wait (which may evict a session for it).
    pub fn step(
        &mut self,
        req: &mut Request,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now_ns: u64,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Step {
        let step = self.step_inner(req, space, tpm, now_ns, cmd, rsp);
        if let Step::Done(r) = step {
            req.end = Some(match r {
                Ok(_) => WaitEnd::Answered,
                Err(e) => WaitEnd::Failed(e.to_errno()),
            });
        }
        step
    }

    /// [`Rm::step`], without noting how the command ended.
    fn step_inner(
        &mut self,
        req: &mut Request,
        space: &mut Space,
        tpm: &mut dyn Tpm,
        now_ns: u64,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Step {
        self.st.expire(now_ns);
        for _ in 0..MAX_RUNS_PER_STEP {
            if core::mem::take(&mut req.run) {
                match self.execute(space, tpm, now_ns, req.ticket.as_ref(), cmd, rsp) {
                    Ok(Outcome::Response(n)) => return Step::Done(Ok(n)),
                    Err(e) => return Step::Done(Err(e)),
                    Ok(Outcome::Exhausted { rc }) => {
                        if req.ticket.is_none() {
                            match self.wait_begin(space, now_ns, rc) {
                                Ok(t) => {
                                    req.ticket = Some(t);
                                    req.wait_began_ns = now_ns;
                                    req.space = space.id();
                                    self.st
                                        .events
                                        .record(Event::WaitBegin { space: space.id() });
                                }
                                Err(e) => return Step::Done(Err(e)),
                            }
                        }
                    }
                }
            }
            let Some(t) = req.ticket.as_ref() else {
                // Not run and not waiting: run it.
                req.run = true;
                continue;
            };
            match self.wait_step(t, tpm, now_ns) {
                Ok(WaitStep::Retry) => req.run = true,
                Ok(WaitStep::Sleep { until_ns }) => return Step::Sleep { until_ns },
                Err(e) => return Step::Done(Err(e)),
            }
        }
        req.run = true;
        Step::Sleep {
            until_ns: now_ns.saturating_add(self.config.retry_interval_ns.max(1)),
        }
    }

    /// If the next [`Rm::step`] of `req` would only say "sleep" without touching the TPM,
    /// until when; `None` if it needs the TPM (to run the command, retry a flush, give up,
    /// evict or retry). The glue calls this before it takes a turn at the TPM and the chip:
    /// a waiter that will sleep again does neither. Decides as [`Rm::wait_step`] does
    /// (both ask `Rm::wait_decision`).
    pub fn sleep_until(&mut self, req: &Request, now_ns: u64) -> Option<u64> {
        self.st.expire(now_ns);
        if req.run || !self.st.pending.is_empty() {
            return None;
        }
        match self.wait_decision(req.ticket.as_ref()?.id(), now_ns) {
            WaitDecision::Act(Action::Sleep(until_ns)) => Some(until_ns),
            WaitDecision::Stale => {
                Some(now_ns.saturating_add(self.config.retry_interval_ns.max(1)))
            }
            WaitDecision::GiveUp | WaitDecision::Act(Action::Retry | Action::Evict) => None,
        }
    }

    /// What the waiter `id` does at `now_ns`, before any TPM traffic.
    fn wait_decision(&self, id: u64, now_ns: u64) -> WaitDecision {
        let sched = &self.st.sched;
        if !sched.contains(id) {
            return WaitDecision::Stale;
        }
        let t = self.config.session_timeout_ns;
        let space = sched.space_of(id);
        let others = self
            .st
            .registry
            .entries()
            .iter()
            .any(|e| e.is_live() && (space.is_none() || e.owner != space));
        if sched.waited(id, now_ns, t) && !sched.is_reserved(id) && (sched.is_memory(id) || !others)
        {
            // Nothing of ours to evict would help (no session of ours at all, or only the
            // waiter's own: no self-eviction).
            return WaitDecision::GiveUp;
        }
        if self.early_eviction_due(id, now_ns) {
            return WaitDecision::Act(Action::Evict);
        }
        WaitDecision::Act(sched.step(id, now_ns, t, self.config.retry_interval_ns))
    }

    /// Whether waiter `id` may evict at `now` before it has waited SESSION_TIMEOUT, to break
    /// a hold-and-wait ([`choose_early_victim`]). All of these hold:
    /// - it has waited a retry interval P, and no slot was freed for the queue in the last
    ///   P (nothing else moves the queue);
    /// - it may evict at all ([`Scheduler::may_evict_early`]: first without a reservation,
    ///   not a loaded-memory waiter, no eviction round in the last P);
    /// - it holds less than a whole set ([`SET_MAX`]): a hog gathering more keeps waiting;
    /// - the TPM is jammed ([`jammed`]): spaces that wait hold at least half of our sessions;
    /// - the part-sets waiting behind it cover what it needs: its request and the rest of its
    ///   peak.
    ///
    /// [`Scheduler::may_evict_early`]: super::super::session::scheduler::Scheduler::may_evict_early
    fn early_eviction_due(&self, id: u64, now: u64) -> bool {
        let sched = &self.st.sched;
        let p = self.config.retry_interval_ns;
        if sched.waited(id, now, self.config.session_timeout_ns)
            || !sched.waited(id, now, p)
            || now.saturating_sub(self.st.last_freed_ns) < p
            || !sched.may_evict_early(id, now, p)
        {
            return false;
        }
        let Some(space) = sched.space_of(id) else {
            return false;
        };
        let held = self.st.registry.count_owned(space);
        if held >= SET_MAX {
            return false;
        }
        let entries = self.st.registry.entries();
        let need = 1 + self.st.gang_need(id, space);
        jammed(entries, sched) && early_supply(entries, sched, id, Some(space)) >= need
    }

    /// The command of `req` is over (answered, interrupted, or its file is closing): it
    /// leaves the wait queue. Call [`Rm::take_wakeups`] afterwards.
    pub fn end_request(&mut self, req: Request, now_ns: u64) {
        if let Some(t) = req.ticket {
            self.wait_end(t, now_ns);
            self.st.events.record(Event::WaitEnd {
                space: req.space,
                waited_ns: now_ns.saturating_sub(req.wait_began_ns),
                end: req.end.unwrap_or(WaitEnd::Interrupted),
            });
        }
    }

    /// Notes in `space` whether it is gathering its sessions after a wait, and so which of
    /// its next commands go first at the TPM ([`super::super::turns`]): with gang
    /// reservations while it holds fewer sessions than it held at once and its client has
    /// yet to hear of some of its evicted ones, every command ([`Gathering::All`]); the
    /// same for the one command after one that took a slot from the queue (its first use
    /// of what it waited for: its protection runs from there, and behind the commands of
    /// the spaces gathering after a wave of evictions, a client's first sign after its wait
    /// came 2.5 s later on the debug kernel); with gang reservations or a kept queue place,
    /// those that take a slot ([`Gathering::Slots`]).
    ///
    /// Without the last condition, a space whose peak was one more than its client ever
    /// uses (a session started again under a new number while the first was held) kept a
    /// gang slot it never took, and every sign of its client went first until that
    /// lapsed, after each of its waits: one client of 32 did 349 signs to the others'
    /// 64-84 (Jain 0.74 in a 32 x 3 run on the bench kernel). It then comes back for the rest of its set before
    /// those lapse, however many busy spaces share the TPM. Call after [`Rm::end_request`].
    pub fn note_gathering(&self, space: &mut Space, now_ns: u64) {
        let id = space.id();
        let sched = &self.st.sched;
        let gang = sched.gang(id) > 0;
        // Only with gang reservations is the registry counted (every command ends here).
        let short = gang && self.st.registry.count_owned(id) < sched.peak(id);
        let fresh = space.take_slot_taken();
        space.set_gathering(if fresh || (short && self.st.has_tombstones(id)) {
            Gathering::All
        } else if gang || sched.position(id, now_ns).is_some() {
            Gathering::Slots
        } else {
            Gathering::No
        });
    }

    /// Queues a command of `space` that got [`Outcome::Exhausted`] with `rc`, at the tail.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`] if the queue cannot grow (fail the command).
    pub fn wait_begin(
        &mut self,
        space: &Space,
        now_ns: u64,
        rc: Option<u32>,
    ) -> Result<Ticket, RmError> {
        let by_uid = self.config.fair_share_by_uid;
        let r = &self.st.registry;
        let held_by_others = if by_uid {
            r.count_held_by_uid(space.uid())
                .saturating_sub(r.count_owned(space.id()))
        } else {
            0
        };
        let group = space.share_group(by_uid);
        Ok(self
            .st
            .sched
            .begin(space.id(), group, held_by_others, now_ns, rc)?)
    }

    /// The command of `ticket` stops waiting. An unused reservation passes to the next
    /// waiter: call [`Rm::take_wakeups`] afterwards.
    pub fn wait_end(&mut self, ticket: Ticket, now_ns: u64) {
        self.st.sched.end(ticket, now_ns);
        for _ in 0..self.st.sched.take_returned() {
            self.st.slot_freed();
        }
    }

    /// Whether the command of `ticket` may retry now without being refused at once: it holds
    /// a reservation or heads the queue.
    #[cfg(not(tpmrs_kernel))]
    pub fn may_retry(&self, ticket: &Ticket) -> bool {
        let space = self.st.sched.space_of(ticket.id()).unwrap_or(0);
        self.st.sched.may_take_slot(Some(ticket.id()), space)
    }

    /// Whether waiters must be woken since the last call (a slot was reserved for one, or
    /// the head changed); forgets which (the host tests and simulations wake everyone).
    #[cfg(not(tpmrs_kernel))]
    pub fn take_wakeup(&mut self) -> bool {
        self.st.sched.take_wakeup()
    }

    /// Calls `wake` for each space whose waiting command must step again since the last
    /// call (a slot reserved for it, a gang grant, it heads the queue now), and only those;
    /// `None` means every waiter.
    pub fn take_wakeups(&mut self, wake: &mut dyn FnMut(Option<u64>)) {
        self.st.sched.take_wakeups(wake)
    }

    /// What the command of `ticket` should do now: retry, or sleep until woken or until the
    /// time given. Retries pending flushes, and evicts a session for this waiter when it is
    /// due: the oldest waiter without a reservation that has waited SESSION_TIMEOUT.
    ///
    /// # Errors
    /// [`RmError::Transport`] if an eviction's flush failed on the transport (queued; the
    /// caller may keep waiting or fail the command).
    pub fn wait_step(
        &mut self,
        ticket: &Ticket,
        tpm: &mut dyn Tpm,
        now_ns: u64,
    ) -> Result<WaitStep, RmError> {
        self.st.expire(now_ns);
        self.st.retry_pending(&mut self.io, tpm);
        let p = self.config.retry_interval_ns;
        let id = ticket.id();
        for _ in 0..2 {
            return match self.wait_decision(id, now_ns) {
                // A stale ticket (its space was closed): never a busy loop.
                WaitDecision::Stale => Ok(WaitStep::Sleep {
                    until_ns: now_ns.saturating_add(p.max(1)),
                }),
                // One last try, the TPM's answer.
                WaitDecision::GiveUp => {
                    self.st.sched.give_up(id);
                    Ok(WaitStep::Retry)
                }
                WaitDecision::Act(Action::Retry) => Ok(WaitStep::Retry),
                WaitDecision::Act(Action::Sleep(until_ns)) => Ok(WaitStep::Sleep { until_ns }),
                WaitDecision::Act(Action::Evict) => match self.evict_inner(id, tpm, now_ns)? {
                    true => Ok(WaitStep::Retry),
                    // Ask again: the attempt is recorded, so no second Evict.
                    false => continue,
                },
            };
        }
        Ok(WaitStep::Sleep {
            until_ns: now_ns.saturating_add(p.max(1)),
        })
    }

    /// Evicts one of our sessions for the command of `ticket`, if it is due: it is the
    /// oldest waiter without a reservation and has waited `session_timeout_ns`. The victim
    /// ([`choose_victim`]) is flushed, its owner gets a tombstone, and the slot is reserved
    /// for this waiter. Ok(true) if the waiter holds a reservation now; Ok(false) if nothing
    /// was eligible (keep waiting).
    ///
    /// # Errors
    /// [`RmError::Transport`] if the flush failed on the transport (it is queued).
    #[cfg(not(tpmrs_kernel))]
    pub fn evict_for(
        &mut self,
        ticket: &Ticket,
        tpm: &mut dyn Tpm,
        now_ns: u64,
    ) -> Result<bool, RmError> {
        self.st.retry_pending(&mut self.io, tpm);
        self.evict_inner(ticket.id(), tpm, now_ns)
    }

    fn evict_inner(&mut self, id: u64, tpm: &mut dyn Tpm, now: u64) -> Result<bool, RmError> {
        if self.st.sched.is_reserved(id) {
            return Ok(true);
        }
        let timeout = self.config.session_timeout_ns;
        // Before SESSION_TIMEOUT, only part-sets waiting behind (see `early_eviction_due`).
        let early = !self.st.sched.waited(id, now, timeout);
        if !self.st.sched.is_first_unreserved(id) || (early && !self.early_eviction_due(id, now)) {
            return Ok(false);
        }
        let sched = &mut self.st.sched;
        sched.eviction_attempted(id, now);
        let space = sched.space_of(id);
        // Victims until the waiter's space has again as many slots as it held at once (a
        // gang grant), or nothing more is eligible.
        let mut got = false;
        for _ in 0..MAX_VICTIMS_PER_EVICTION {
            let need = match space {
                Some(s) => self.st.gang_need(id, s),
                None => 0,
            };
            if got && need == 0 {
                break;
            }
            let entries = self.st.registry.entries();
            let victim = if early {
                choose_early_victim(entries, &self.st.sched, id, space)
            } else {
                choose_victim(entries, &self.st.sched, now, timeout, id, space)
            };
            let r = match victim {
                None => break,
                Some(Victim::Abandoned(h)) => {
                    let grant = self.st.next_grant(id, space, now);
                    self.st
                        .evict(&mut self.io, tpm, h, grant, Why::Waiter(space.unwrap_or(0)))
                }
                Some(Victim::Space(v)) => {
                    let before = self.io.stats.evictions;
                    let r = self.st.evict_space(&mut self.io, tpm, v, id, space, now);
                    if early {
                        let n = self.io.stats.evictions.wrapping_sub(before);
                        self.io.stats.early_evictions =
                            self.io.stats.early_evictions.wrapping_add(n);
                    }
                    r
                }
            };
            r?;
            got = true;
        }
        if !got && !early {
            // Nothing eligible yet: try again when the first protection ends, not a whole
            // retry interval later (each generation of sets at scale paid that).
            let entries = self.st.registry.entries();
            let next = next_victim_ns(entries, &self.st.sched, now, timeout, id, space);
            let p = self.config.retry_interval_ns;
            self.st.sched.eviction_found_none(id, now, next, p);
        }
        Ok(got)
    }
}
