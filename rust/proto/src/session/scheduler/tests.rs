// SPDX-License-Identifier: GPL-2.0
//! Unit tests of the scheduler.

use super::super::registry::{SessionEntry, SessionState};
use super::*;

const T: u64 = 2_000;
const P: u64 = 100;
/// The fair-share group of the spaces of these tests (one uid).
const G: u64 = 1000;

#[test]
fn fifo_gate_and_reservations() {
    let mut s = Scheduler::new();
    assert!(s.may_take_slot(None, 99));
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let b = s.begin(2, G, 0, 10, None).unwrap();
    let c = s.begin(3, G, 0, 20, None).unwrap();
    assert_eq!(s.len(), 3);
    // Only the head may try; a newcomer may not.
    assert!(s.may_take_slot(Some(a.id()), 99));
    assert!(!s.may_take_slot(Some(b.id()), 99));
    assert!(!s.may_take_slot(None, 99));
    // Two slots freed: a and b reserved, in order.
    s.slot_freed();
    s.slot_freed();
    assert!(s.take_wakeup());
    assert!(!s.take_wakeup());
    assert!(s.is_reserved(a.id()) && s.is_reserved(b.id()));
    assert!(!s.is_reserved(c.id()));
    assert!(s.may_take_slot(Some(b.id()), 99));
    assert!(!s.may_take_slot(Some(c.id()), 99));
    // b uses its slot and leaves; a's slot is stolen from outside.
    s.took_slot(Some(b.id()), 2, 50);
    assert_eq!(s.end(b, 50), Some(40));
    s.exhausted(Some(a.id()), 60, Some(0x905));
    assert!(!s.is_reserved(a.id()));
    assert!(s.is_head(a.id()));
    assert!(s.may_take_slot(Some(a.id()), 99));
    // The next free goes to a again (oldest unreserved), not c.
    s.slot_freed();
    assert!(s.is_reserved(a.id()));
    assert!(!s.is_reserved(c.id()));
    assert_eq!(s.longest_wait_ns, 40);
    assert_eq!(s.waits, 3);
    let _ = (s.end(a, 100), s.end(c, 100));
    assert!(s.is_empty());
    assert!(s.may_take_slot(None, 99));
}

#[test]
fn leaving_passes_reservation_on() {
    let mut s = Scheduler::new();
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let b = s.begin(2, G, 0, 0, None).unwrap();
    s.slot_freed();
    assert!(s.take_wakeup());
    // a is interrupted by a signal before retrying: its slot is given back, once.
    s.end(a, 5);
    assert_eq!(s.take_returned(), 1);
    assert_eq!(s.take_returned(), 0);
    s.slot_freed();
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
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let _b = s.begin(1, G, 0, 0, None).unwrap();
    s.end(a, 1);
    assert!(s.take_wakeup());
}

fn woken(s: &mut Scheduler) -> std::vec::Vec<Option<u64>> {
    let mut v = std::vec::Vec::new();
    s.take_wakeups(&mut |w| v.push(w));
    v
}

#[test]
fn only_the_waiters_that_can_use_a_slot_are_woken() {
    let mut s = Scheduler::new();
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let _b = s.begin(2, G, 0, 0, None).unwrap();
    let _c = s.begin(3, G, 0, 0, None).unwrap();
    assert!(woken(&mut s).is_empty(), "queueing wakes nobody");
    // A freed slot wakes its reservation holder only (a, the oldest), once.
    s.slot_freed();
    assert_eq!(woken(&mut s), [Some(1)]);
    assert!(woken(&mut s).is_empty());
    // a leaves with its reservation unused: it passes to b, and only b is woken.
    s.end(a, 1);
    for _ in 0..s.take_returned() {
        s.slot_freed();
    }
    assert_eq!(woken(&mut s), [Some(2)]);
    // A gang grant wakes the space it is for.
    assert!(s.add_gang(3, 2));
    assert_eq!(woken(&mut s), [Some(3)]);
    assert!(!s.take_wakeup());
}

#[test]
fn steps() {
    let mut s = Scheduler::new();
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let b = s.begin(2, G, 0, 0, None).unwrap();
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
    let a = s.begin(1, G, 0, 0, Some(0x903)).unwrap();
    // Head: polls, never evicts.
    assert_eq!(s.step(a.id(), T, T, P), Action::Retry);
    s.exhausted(Some(a.id()), T, None);
    assert_eq!(s.step(a.id(), T, T, P), Action::Sleep(T + P));
    s.exhausted(Some(a.id()), T + P, Some(0x905));
    assert_eq!(s.step(a.id(), T + P, T, P), Action::Evict);
}

fn e(handle: u32, id: u64, owner: Option<u64>, created: u64, owned: u64) -> SessionEntry {
    let mut e = SessionEntry::new(handle, id, 1, 1000, created);
    e.owner = owner;
    e.owned_since_ns = owned;
    e.state = SessionState::SavedByClient(None);
    e
}

#[test]
fn victim_choice_whole_spaces() {
    let now = 10 * T;
    let mut s = Scheduler::new();
    // Waiter 1 of space 9.
    let w = s.begin(9, G, 0, now, None).unwrap();
    // Spaces 1 and 2 hold sessions; 2's turn began earlier.
    let mut v = std::vec![
        e(0x0200_0000, 1, Some(1), 0, 0),
        e(0x0200_0001, 2, Some(2), 5, 5),
        e(0x0200_0002, 3, Some(1), 6, 6),
    ];
    s.session_added(1, 4 * T, 1);
    s.session_added(2, 3 * T, 1);
    let pick = |v: &[SessionEntry], s: &Scheduler, at: u64, ws: Option<u64>| {
        choose_victim(v, s, at, T, w.id(), ws)
    };
    assert_eq!(pick(&v, &s, now, Some(9)), Some(Victim::Space(2)));
    // Never the waiter's own space.
    assert_eq!(pick(&v, &s, now, Some(2)), Some(Victim::Space(1)));
    // Protection runs from the start of the turn: not before T.
    assert_eq!(pick(&v, &s, 3 * T + T - 1, Some(9)), None);
    assert_eq!(pick(&v, &s, 4 * T, Some(9)), Some(Victim::Space(2)));
    // An abandoned session (held T since abandoned) goes first.
    v.push(e(0x0300_0003, 4, None, 7, now - T));
    assert_eq!(
        pick(&v, &s, now, Some(9)),
        Some(Victim::Abandoned(0x0300_0003))
    );
    v[3].owned_since_ns = now - T + 1;
    assert_eq!(pick(&v, &s, now, Some(9)), Some(Victim::Space(2)));
    v.pop();
    // A space that waits ahead of the waiter is never a victim; one waiting behind it
    // only after every space that does not wait.
    let mut s2 = Scheduler::new();
    let a = s2.begin(2, G, 0, now, None).unwrap();
    let w2 = s2.begin(9, G, 0, now, None).unwrap();
    let b = s2.begin(1, G, 0, now, None).unwrap();
    s2.session_added(1, 4 * T, 1);
    s2.session_added(2, 3 * T, 1);
    s2.session_added(3, 5 * T, 1);
    v.push(e(0x0200_0004, 5, Some(3), 8, 8));
    let pick2 = |v: &[SessionEntry], at| choose_victim(v, &s2, at, T, w2.id(), Some(9));
    assert_eq!(pick2(&v, now), Some(Victim::Space(3)));
    v.pop();
    assert_eq!(pick2(&v, now), Some(Victim::Space(1)));
    assert!(a.id() < w2.id() && w2.id() < b.id());
    // Only the waiter's own sessions or flush-pending ones: nothing.
    assert_eq!(pick(&v[1..2], &s, now, Some(2)), None);
    v[1].state = SessionState::FlushPending;
    assert_eq!(pick(&v[1..2], &s, now, Some(9)), None);
    assert_eq!(pick(&[], &s, now, None), None);
}

#[test]
fn an_evicted_space_waits_from_its_eviction_at_the_tail() {
    let mut s = Scheduler::new();
    s.timeout_ns = T;
    let a = s.begin(1, G, 0, 0, None).unwrap();
    // Space 2's sessions are evicted at 100; its client finds out and asks at 700: its
    // wait counts from 100, but it queues behind a, who asked before it.
    s.evicted(2, 100);
    let b = s.begin(2, G, 0, 700, None).unwrap();
    assert!(b.id() > a.id());
    assert!(!s.waited(b.id(), 100 + T - 1, T));
    assert!(s.waited(b.id(), 100 + T, T));
    assert_eq!(s.waits, 2);
    // Once: its next wait, even within T, counts from its own start.
    s.end(b, 800);
    s.expire(800 + s.keep_ns);
    let b2 = s.begin(2, G, 0, 1_500, None).unwrap();
    assert!(!s.waited(b2.id(), 1_500 + T - 1, T));
    s.end(b2, 1_600);
    // Asking SESSION_TIMEOUT or more after the eviction, it waits from its request.
    s.evicted(3, 2_000);
    let c = s.begin(3, G, 0, 2_000 + T, None).unwrap();
    assert!(!s.waited(c.id(), 2_000 + 2 * T - 1, T));
    // The eviction of a space that waits already changes nothing: it keeps its clock.
    s.evicted(1, 3_000);
    assert!(s.waited(a.id(), T, T));
    s.end(a, 3_000);
    // An eviction ends a kept queue place: the space's turn is over.
    let d = s.begin(4, G, 0, 3_000, None).unwrap();
    s.end(d, 3_100);
    assert!(s.position(4, 3_200).is_some());
    s.evicted(4, 3_200);
    assert_eq!(s.position(4, 3_200), None);
    let d2 = s.begin(4, G, 0, 3_300, None).unwrap();
    assert!(!s.is_again(d2.id()));
    assert!(s.waited(d2.id(), 3_200 + T, T) && !s.waited(d2.id(), 3_200 + T - 1, T));
}

#[test]
fn kept_place_and_gang_expiry() {
    let mut s = Scheduler::new();
    s.keep_ns = 500;
    let a = s.begin(1, G, 0, 0, None).unwrap();
    let b = s.begin(2, G, 0, 10, None).unwrap();
    let a_id = a.id();
    s.reserve(a_id);
    s.took_slot(Some(a_id), 1, 100);
    s.session_added(1, 100, 1);
    s.end(a, 100);
    // Space 1 asks again within keep_ns: its old place and wait clock come back.
    assert_eq!(s.position(1, 200), Some(a_id));
    let a2 = s.begin(1, G, 0, 200, None).unwrap();
    assert_eq!(a2.id(), a_id);
    assert!(s.is_head(a2.id()));
    assert!(s.waited(a2.id(), 2_000, 2_000));
    assert_eq!(s.waits, 2, "one wait per turn");
    s.end(a2, 300);
    // After keep_ns the place lapses: a new request goes to the tail.
    assert_eq!(s.expire(801), 0);
    assert_eq!(s.position(1, 801), None);
    let a3 = s.begin(1, G, 0, 801, None).unwrap();
    assert!(a3.id() > b.id());
    // Gang reservations: the space may take slots, and they lapse to the queue.
    assert!(!s.may_take_slot(None, 3));
    assert!(s.add_gang(3, 1_000));
    assert!(s.add_gang(3, 1_000));
    assert!(s.may_take_slot(None, 3));
    s.took_slot(None, 3, 1_000);
    assert_eq!(s.gang(3), 1);
    assert_eq!(s.expire(1_499), 0);
    assert_eq!(s.expire(1_500), 1);
    assert_eq!(s.gang(3), 0);
    assert!(!s.may_take_slot(None, 3));
    // Closing forgets the turn and returns its gang slots.
    assert!(s.add_gang(4, 2_000));
    assert_eq!(s.remove_space(4, 2_000), 1);
    assert_eq!(s.peak(4), 0);
    let _ = (s.end(a3, 900), s.end(b, 900));
}

#[test]
fn gang_reservations_lapse_after_their_last_use() {
    let mut s = Scheduler::new();
    s.keep_ns = 500;
    s.spare_ns = 100;
    for _ in 0..3 {
        assert!(s.add_gang(3, 1_000));
    }
    // Used at 1_400: the other two last until 1_900, not 1_500.
    s.took_slot(None, 3, 1_400);
    assert_eq!(s.expire(1_500), 0);
    assert_eq!(s.gang(3), 2);
    assert_eq!(s.expire(1_899), 0);
    assert_eq!(s.expire(1_900), 2);
    // The rest of a victim lasts a retry interval after its last use.
    assert!(s.add_spare(4, 2_000));
    assert!(s.add_spare(4, 2_000));
    s.took_slot(None, 4, 2_050);
    assert_eq!(s.expire(2_149), 0);
    assert_eq!(s.expire(2_150), 1);
}

#[test]
fn early_victims_are_part_sets_waiting_behind() {
    let mut s = Scheduler::new();
    s.keep_ns = 500;
    // In queue order: space 1, the waiter (space 9), then spaces 2, 3 and 4.
    let ahead = s.begin(1, G, 0, 0, None).unwrap();
    let w = s.begin(9, G, 0, 0, None).unwrap();
    let _b2 = s.begin(2, G, 0, 0, None).unwrap();
    let _b3 = s.begin(3, G, 0, 0, None).unwrap();
    let last = s.begin(4, G, 0, 0, None).unwrap();
    let mut v = std::vec![
        e(0x0200_0000, 1, Some(1), 0, 0),
        e(0x0200_0001, 2, Some(2), 0, 0),
        e(0x0200_0002, 3, Some(2), 0, 0),
        // Space 3 holds a whole set: it keeps its protection.
        e(0x0200_0003, 4, Some(3), 0, 0),
        e(0x0200_0004, 5, Some(3), 0, 0),
        e(0x0200_0005, 6, Some(3), 0, 0),
        e(0x0200_0006, 7, Some(4), 0, 0),
        // The waiter's own.
        e(0x0200_0007, 8, Some(9), 0, 0),
    ];
    let early = |v: &[SessionEntry], s: &Scheduler, t: &Ticket, ws| {
        choose_early_victim(v, s, t.id(), Some(ws))
    };
    // The latest queue place first, however young; never a whole set, never the waiter's
    // own space, never one waiting ahead.
    assert_eq!(early(&v, &s, &w, 9), Some(Victim::Space(4)));
    assert_eq!(early_supply(&v, &s, w.id(), Some(9)), 3);
    v.pop();
    v.pop();
    assert_eq!(early(&v, &s, &w, 9), Some(Victim::Space(2)));
    assert_eq!(early(&v, &s, &last, 4), None);
    // Seen from the space ahead, the waiter's part-set is behind it.
    v.push(e(0x0200_0007, 8, Some(9), 0, 0));
    assert_eq!(early(&v, &s, &ahead, 1), Some(Victim::Space(2)));
    // Jammed: spaces that wait hold 7 of the 7 sessions of open spaces; with 7 more held
    // by a space that does not wait, exactly half; with 8 more, not.
    assert!(jammed(&v, &s));
    for i in 0..8u32 {
        v.push(e(0x0200_0010 + i, 20 + u64::from(i), Some(5), 0, 0));
    }
    assert!(!jammed(&v, &s));
    v.pop();
    assert!(jammed(&v, &s));
    // Abandoned sessions are nobody's: they count for neither side.
    v.push(e(0x0300_0000, 40, None, 0, 0));
    assert!(jammed(&v, &s));
    // A space between two requests of its turn (a kept place) does not wait: not a victim.
    v.push(e(0x0200_0006, 7, Some(4), 0, 0));
    assert_eq!(early(&v, &s, &w, 9), Some(Victim::Space(4)));
    let last_id = last.id();
    let _ = s.end(last, 10);
    assert_eq!(s.waiting_place(4), None);
    assert_eq!(s.position(4, 10), Some(last_id));
    assert_eq!(early(&v, &s, &w, 9), Some(Victim::Space(2)));
    assert_eq!(early(&[], &s, &w, 9), None);
    assert!(!jammed(&[], &s));
}

/// The order in which the queue serves its waiters: the spaces of the tickets, in id order.
fn queue_order(s: &Scheduler) -> std::vec::Vec<u64> {
    let mut w: std::vec::Vec<(u64, u64)> = s.waiters.iter().map(|w| (w.id, w.space)).collect();
    w.sort();
    w.into_iter().map(|(_, space)| space).collect()
}

#[test]
fn the_queue_goes_round_the_uids() {
    // uid 1 queues forty files at once, then uids 2..=4 one each: the queue serves one of
    // uid 1's, then each other uid, then uid 1's next, not all forty first.
    let mut s = Scheduler::new();
    let mut t = std::vec::Vec::new();
    for space in 1..=40 {
        t.push(s.begin(space, 1, 0, 0, None).unwrap());
    }
    for space in 41..=43 {
        t.push(s.begin(space, space - 39, 0, 1, None).unwrap());
    }
    let order = queue_order(&s);
    assert_eq!(&order[..6], &[1, 41, 42, 43, 2, 3], "{order:?}");
    // The head leaves; uid 2 asks again, with nothing else queued: it joins the round
    // being served, behind the uids that asked before it and ahead of uid 1's next file.
    let head = t.remove(0);
    assert!(s.is_head(head.id()));
    s.end(head, 2);
    let tb = t.remove(39);
    s.end(tb, 2);
    s.begin(41, 2, 0, 3 + s.keep_ns, None).unwrap();
    let order = queue_order(&s);
    assert_eq!(&order[..5], &[42, 43, 41, 2, 3], "{order:?}");
}

#[test]
fn with_one_group_the_queue_is_fifo() {
    // Every file in one group (one uid, or `fair_share_by_uid` off): tickets in the order
    // of asking, as a plain FIFO.
    let mut s = Scheduler::new();
    let mut ids = std::vec::Vec::new();
    for i in 0..50u64 {
        // Further apart than a kept place lasts: each is a new place.
        let now = i * (s.keep_ns + 1);
        let t = s.begin(i % 7, G, 0, now, None).unwrap();
        ids.push(t.id());
        if i % 3 == 0 {
            s.end(t, now);
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn a_uid_whose_files_hold_sets_waits_behind() {
    // uid 1's other files hold six sessions (two sets): its new waiter queues two rounds
    // back, behind uids that hold none, even ones that ask later.
    let mut s = Scheduler::new();
    let head = s.begin(9, 9, 0, 0, None).unwrap();
    let a = s.begin(1, 1, 6, 1, None).unwrap();
    let b = s.begin(2, 2, 0, 2, None).unwrap();
    let c = s.begin(3, 3, 2, 3, None).unwrap();
    assert!(head.id() < b.id() && b.id() < c.id() && c.id() < a.id());
}
