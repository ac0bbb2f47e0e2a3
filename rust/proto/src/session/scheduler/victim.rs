// SPDX-License-Identifier: GPL-2.0
//! Whom a waiter evicts: abandoned sessions first, then whole spaces that have had their
//! turn (see [`choose_victim`]).

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
        let began = match sched.turn_began(space) {
            Some(b) => b,
            None => entries
                .iter()
                .filter(|x| x.owner == Some(space))
                .map(|x| x.owned_since_ns)
                .min()
                .unwrap_or(now),
        };
        if !old(began) {
            continue;
        }
        let key = match sched.position(space, now) {
            None => (0, began, space),
            Some(p) if p > waiter => (1, u64::MAX - p, space),
            // Gathering ahead of the waiter for over twice the protection: it has had its
            // turn (a hog must not stay immune by always asking for one more).
            Some(_) if now.saturating_sub(began) >= timeout.saturating_mul(2) => (2, began, space),
            Some(_) => continue,
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
