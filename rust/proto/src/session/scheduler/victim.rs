// SPDX-License-Identifier: GPL-2.0
//! Whom a waiter evicts: abandoned sessions first, then whole spaces that have had their
//! turn (see [`choose_victim`]); before SESSION_TIMEOUT, only part-sets held by spaces
//! waiting behind it (see [`choose_early_victim`]).

use super::super::registry::SessionEntry;
use super::Scheduler;

/// What a waiter evicts (see [`choose_victim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// One abandoned session (its handle).
    Abandoned(u32),
    /// Every session of this space.
    Space(u64),
}

/// What to evict at `now` for waiter `waiter` (ticket id) of space `waiter_space`:
///
/// 1. an abandoned session held at least `timeout` since its last owner got it (the
///    oldest first);
/// 2. else a whole space, never the waiter's: one that does not wait and whose turn began
///    longest ago, at least `timeout` ago (it has had its turn);
/// 3. else a space that waits *behind* the waiter (a later queue place) and whose turn
///    began at least `timeout` ago, the latest place first: it would not be served before
///    the waiter anyway, and without this, spaces each holding part of what they need could
///    wait for each other forever;
/// 4. else a space that waits ahead of the waiter and whose turn began at least
///    2 x `timeout` ago (it keeps its queue place and wait clock, only its sessions go).
///
/// A space waiting ahead of the waiter is otherwise never a victim. Only tracked sessions are
/// candidates, never one created outside tpmrs.
pub fn choose_victim(
    entries: &[SessionEntry],
    sched: &Scheduler,
    now: u64,
    timeout: u64,
    waiter: u64,
    waiter_space: Option<u64>,
) -> Option<Victim> {
    let old = |t: u64| now.saturating_sub(t) >= timeout;
    if let Some(e) = entries
        .iter()
        .filter(|e| e.is_live() && e.is_abandoned() && old(e.owned_since_ns))
        .min_by_key(|e| (e.created_ns, e.id))
    {
        return Some(Victim::Abandoned(e.handle));
    }
    let mut best: Option<((u8, u64, u64), u64)> = None;
    for e in entries.iter().filter(|e| e.is_live()) {
        let Some(space) = e.owner else { continue };
        if Some(space) == waiter_space {
            continue;
        }
        let began = turn_began(entries, sched, space, now);
        let place = sched.position(space, now);
        if now.saturating_sub(began) < protection(place, waiter, timeout) {
            continue;
        }
        let key = match place {
            None => (0, began, space),
            Some(p) if p > waiter => (1, u64::MAX - p, space),
            Some(_) => (2, began, space),
        };
        let better = match best {
            Some((k, _)) => key < k,
            None => true,
        };
        if better {
            best = Some((key, space));
        }
    }
    best.map(|(_, s)| Victim::Space(s))
}

/// When the first victim of [`choose_victim`] for `waiter` (of `waiter_space`) may become
/// eligible, if none is at `now`: the earliest end of a protection, by the same rules (an
/// abandoned session `timeout` after its last owner got it; a space `timeout` after its turn
/// began, or twice that if it waits ahead of the waiter). `None` if nothing of ours could
/// be.
pub fn next_victim_ns(
    entries: &[SessionEntry],
    sched: &Scheduler,
    now: u64,
    timeout: u64,
    waiter: u64,
    waiter_space: Option<u64>,
) -> Option<u64> {
    entries
        .iter()
        .filter(|e| e.is_live())
        .filter_map(|e| {
            if e.is_abandoned() {
                return Some(e.owned_since_ns.saturating_add(timeout));
            }
            let space = e.owner.filter(|s| Some(*s) != waiter_space)?;
            let began = turn_began(entries, sched, space, now);
            Some(began.saturating_add(protection(sched.position(space, now), waiter, timeout)))
        })
        .min()
}

/// When the turn of `space` began: the scheduler's record, else when it got the oldest
/// session it holds (`now` if none).
fn turn_began(entries: &[SessionEntry], sched: &Scheduler, space: u64, now: u64) -> u64 {
    sched.turn_began(space).unwrap_or_else(|| {
        entries
            .iter()
            .filter(|x| x.owner == Some(space))
            .map(|x| x.owned_since_ns)
            .min()
            .unwrap_or(now)
    })
}

/// How long a space at queue place `place` is protected from `waiter` after its turn began
/// ([`choose_victim`]'s rules 2 to 4): `timeout` if it does not wait or waits behind the
/// waiter; twice that if it waits ahead (gathering ahead of the waiter for over twice the
/// protection, it has had its turn: a hog must not stay immune by always asking for one
/// more).
fn protection(place: Option<u64>, waiter: u64, timeout: u64) -> u64 {
    match place {
        Some(p) if p <= waiter => timeout.saturating_mul(2),
        _ => timeout,
    }
}

/// The most sessions one TPM command uses (TPM 2.0 Part 1, 18.2: up to three authorization
/// sessions): the set a client gathers to run a command.
pub const SET_MAX: usize = 3;

/// Whether every session of `space` may go to `waiter` (of `waiter_space`) before its
/// protection is over: the space waits, behind the waiter, and holds part of a set (fewer
/// than [`SET_MAX`] sessions). While it waits its client cannot use them; it would not be
/// served before the waiter anyway; and it keeps its queue place and wait clock.
fn holds_part_set_behind(
    entries: &[SessionEntry],
    sched: &Scheduler,
    waiter: u64,
    waiter_space: Option<u64>,
    space: u64,
) -> Option<u64> {
    if Some(space) == waiter_space {
        return None;
    }
    let place = sched.waiting_place(space).filter(|p| *p > waiter)?;
    let held = entries
        .iter()
        .filter(|e| e.is_live() && e.owner == Some(space))
        .count();
    (held < SET_MAX).then_some(place)
}

/// Whether the TPM is jammed by a hold-and-wait: spaces that wait for a slot hold at least
/// half of the sessions of open spaces. They cannot use them while they wait, so at least
/// half of what tpmrs holds does nothing until someone gives way.
pub fn jammed(entries: &[SessionEntry], sched: &Scheduler) -> bool {
    let (mut owned, mut idle) = (0usize, 0usize);
    for e in entries.iter().filter(|e| e.is_live()) {
        let Some(space) = e.owner else { continue };
        owned += 1;
        if sched.waiting_place(space).is_some() {
            idle += 1;
        }
    }
    owned > 0 && 2 * idle >= owned
}

/// How many sessions [`choose_early_victim`] could free for `waiter` (of `waiter_space`):
/// every session of every space that holds part of a set and waits behind it.
pub fn early_supply(
    entries: &[SessionEntry],
    sched: &Scheduler,
    waiter: u64,
    waiter_space: Option<u64>,
) -> usize {
    entries
        .iter()
        .filter(|e| e.is_live())
        .filter(|e| {
            e.owner.is_some_and(|s| {
                holds_part_set_behind(entries, sched, waiter, waiter_space, s).is_some()
            })
        })
        .count()
}

/// What `waiter` (of `waiter_space`) evicts before it has waited SESSION_TIMEOUT: every
/// session of a space that waits behind it and holds part of a set (fewer than
/// [`SET_MAX`]), the latest queue place first, however young its sessions are.
///
/// This breaks a hold-and-wait. When many clients start at once, most get part of their
/// set before the slots run out and then wait for the rest, holding what they got; a few
/// got a whole set and work alone. Without this, nobody could take the part-sets for
/// SESSION_TIMEOUT, and those few did up to four times the others' work in a 20 s run.
/// The caller only asks when the TPM is [`jammed`], for a waiter that holds less than a
/// whole set (at 128 x 3 the first waiter holds nothing: 62 others got one session each),
/// when the part-sets behind it cover what it needs (see `Rm::wait_step`). A victim waits
/// behind its evictor, so early evictions only go backwards along the queue: none comes
/// back to the evictor. A space that holds a
/// whole set or more (a hog gathering sixty sessions) keeps its protection: taking it
/// early cost the others their fairness in the simulation.
pub fn choose_early_victim(
    entries: &[SessionEntry],
    sched: &Scheduler,
    waiter: u64,
    waiter_space: Option<u64>,
) -> Option<Victim> {
    entries
        .iter()
        .filter(|e| e.is_live())
        .filter_map(|e| {
            let s = e.owner?;
            holds_part_set_behind(entries, sched, waiter, waiter_space, s).map(|p| (p, s))
        })
        .max()
        .map(|(_, s)| Victim::Space(s))
}
