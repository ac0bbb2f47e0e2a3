// SPDX-License-Identifier: GPL-2.0
//! Tests of the turns at the TPM: start-time fair queuing of spaces, and of uids first.

use super::*;

/// A command header of code `cc`.
const fn cmd(cc: u32) -> [u8; 10] {
    let c = cc.to_be_bytes();
    [0x80, 0x01, 0, 0, 0, 10, c[0], c[1], c[2], c[3]]
}

/// TPM2_Sign and TPM2_StartAuthSession (only the header matters here).
const SIGN: [u8; 10] = cmd(0x15D);
const START: [u8; 10] = cmd(TPM_CC_START_AUTH_SESSION);

fn space(id: u64) -> Space {
    Space::new(id, 1000)
}

fn user(id: u64, uid: u32) -> Space {
    Space::new(id, uid)
}

#[test]
fn alone_goes_at_once() {
    let mut t = Turns::new(true);
    let mut a = space(1);
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
    assert!(t.is_empty());
    assert_eq!(t.done(ta, &mut a, 10), None);
    assert_eq!(a.tpm_finish(), 10);
}

#[test]
fn an_idle_space_goes_before_busy_ones() {
    // Three busy spaces each used the TPM; a new one (finish 0) arrives last and goes
    // first after the command that runs now.
    let mut t = Turns::new(true);
    let mut busy: std::vec::Vec<Space> = (1..=3).map(space).collect();
    for s in busy.iter_mut() {
        let turn = t.enter(s, &SIGN, false).unwrap();
        assert!(t.try_take(&turn));
        t.done(turn, s, 100);
    }
    let turns: std::vec::Vec<Turn> = busy
        .iter()
        .map(|s| t.enter(s, &SIGN, false).unwrap())
        .collect();
    let mut fresh = space(9);
    let tf = t.enter(&fresh, &SIGN, false).unwrap();
    assert_eq!(t.next_space(), Some(9));
    assert!(!t.try_take(&turns[0]));
    assert!(t.try_take(&tf));
    // Then the busy ones, in arrival order (equal tags).
    assert_eq!(t.done(tf, &mut fresh, 100), Some(1));
    for (turn, s) in turns.into_iter().zip(busy.iter_mut()) {
        assert!(t.try_take(&turn));
        t.done(turn, s, 100);
    }
    assert!(t.is_empty());
}

#[test]
fn a_newcomer_goes_before_busy_spaces_of_the_same_round() {
    // Unit costs: ten busy spaces all start the round at the same tag; a new space
    // arriving after them goes next, not after the ten.
    let mut t = Turns::new(true);
    let mut busy: std::vec::Vec<Space> = (1..=10).map(space).collect();
    for _ in 0..3 {
        let turns: std::vec::Vec<Turn> = busy
            .iter()
            .map(|s| t.enter(s, &SIGN, false).unwrap())
            .collect();
        for (turn, s) in turns.into_iter().zip(busy.iter_mut()) {
            assert!(t.try_take(&turn));
            t.done(turn, s, 1);
        }
    }
    let turns: std::vec::Vec<Turn> = busy
        .iter()
        .map(|s| t.enter(s, &SIGN, false).unwrap())
        .collect();
    let mut fresh = space(99);
    let tf = t.enter(&fresh, &SIGN, false).unwrap();
    assert_eq!(t.next_space(), Some(99));
    assert!(t.try_take(&tf));
    t.done(tf, &mut fresh, 1);
    // Then the round goes on, in arrival order; the newcomer's next command waits for it.
    let tf = t.enter(&fresh, &SIGN, false).unwrap();
    for (turn, s) in turns.into_iter().zip(busy.iter_mut()) {
        assert!(t.try_take(&turn), "{}", s.id());
        t.done(turn, s, 1);
    }
    assert!(t.try_take(&tf));
}

/// A busy space waits for its turn while a space in state `g` sends `cmds`: each goes
/// first; then the busy one.
fn goes_first(g: Gathering, cmds: &[[u8; 10]]) {
    let mut t = Turns::new(true);
    let mut b = space(2);
    for _ in 0..3 {
        let turn = t.enter(&b, &SIGN, false).unwrap();
        assert!(t.try_take(&turn));
        t.done(turn, &mut b, 1);
    }
    let tb = t.enter(&b, &SIGN, false).unwrap();
    let mut s = space(3);
    s.set_gathering(g);
    for cmd in cmds {
        let ts = t.enter(&s, cmd, false).unwrap();
        assert_eq!(t.next_space(), Some(3));
        assert!(t.try_take(&ts));
        t.done(ts, &mut s, 1);
    }
    assert!(t.try_take(&tb));
    t.done(tb, &mut b, 1);
}

#[test]
fn a_gathering_space_goes_first() {
    goes_first(Gathering::Slots, &[START; 3]);
}

#[test]
fn a_gathering_space_signs_in_turn() {
    // Two gathering spaces that sign in a loop, and a waiter woken for a freed slot (its
    // StartAuthSession): the waiter goes at the next turn, not after the gathering
    // spaces' kept places lapse. And the busy spaces' signs alternate with theirs.
    let mut t = Turns::new(true);
    let mut g: std::vec::Vec<Space> = (1..=2).map(space).collect();
    let mut busy = space(3);
    for s in g.iter_mut().chain([&mut busy]) {
        s.set_gathering(if s.id() == 3 {
            Gathering::No
        } else {
            Gathering::Slots
        });
        for _ in 0..3 {
            let turn = t.enter(s, &SIGN, false).unwrap();
            assert!(t.try_take(&turn));
            t.done(turn, s, 1);
        }
    }
    let mut w = space(4);
    let mut served = std::vec::Vec::new();
    let mut queued: std::vec::Vec<Turn> = g
        .iter()
        .map(|s| t.enter(s, &SIGN, false).unwrap())
        .collect();
    queued.push(t.enter(&busy, &SIGN, false).unwrap());
    queued.push(t.enter(&w, &START, false).unwrap());
    while !queued.is_empty() {
        let i = queued.iter().position(|q| t.try_take(q)).unwrap();
        let turn = queued.swap_remove(i);
        let id = turn.space;
        served.push(id);
        let s = match id {
            1 | 2 => &mut g[usize::try_from(id - 1).unwrap()],
            3 => &mut busy,
            _ => &mut w,
        };
        t.done(turn, s, 1);
        // The signers come straight back, for six rounds.
        if id != 4 && served.len() < 18 {
            queued.push(t.enter(s, &SIGN, false).unwrap());
        }
    }
    assert_eq!(served.first(), Some(&4), "{served:?}");
    for id in 1..=3 {
        let n = served.iter().filter(|s| **s == id).count();
        assert!((5..=7).contains(&n), "space {id}: {n} turns of {served:?}");
    }
}

#[test]
fn a_space_short_of_its_set_goes_first_with_every_command() {
    // Its client finds its evicted sessions one command at a time (a sign answered
    // TPM_RC_EXPIRED, then a StartAuthSession): both kinds go first.
    goes_first(Gathering::All, &[SIGN, START, SIGN, START]);
}

#[test]
fn time_is_shared_by_space_not_by_command_count() {
    // A space whose commands cost 10x more gets about a tenth of the turns.
    let mut t = Turns::new(true);
    let (mut cheap, mut dear) = (space(1), space(2));
    let (mut n_cheap, mut n_dear) = (0u32, 0u32);
    let mut tc = t.enter(&cheap, &SIGN, false).unwrap();
    let mut td = t.enter(&dear, &SIGN, false).unwrap();
    for _ in 0..1100 {
        if t.try_take(&tc) {
            t.done(tc, &mut cheap, 1);
            n_cheap += 1;
            tc = t.enter(&cheap, &SIGN, false).unwrap();
        } else {
            assert!(t.try_take(&td));
            t.done(td, &mut dear, 10);
            n_dear += 1;
            td = t.enter(&dear, &SIGN, false).unwrap();
        }
    }
    assert!((900..=1010).contains(&n_cheap), "{n_cheap} {n_dear}");
    assert!((90..=110).contains(&n_dear), "{n_cheap} {n_dear}");
}

#[test]
fn an_idle_space_gains_no_credit() {
    let mut t = Turns::new(true);
    let (mut a, mut b) = (space(1), space(2));
    // a runs alone for a long time.
    for _ in 0..100 {
        let ta = t.enter(&a, &SIGN, false).unwrap();
        assert!(t.try_take(&ta));
        t.done(ta, &mut a, 10);
    }
    // b arrives: it goes next, but only once before a gets a turn again.
    let ta = t.enter(&a, &SIGN, false).unwrap();
    let tb = t.enter(&b, &SIGN, false).unwrap();
    assert!(t.try_take(&tb));
    assert_eq!(t.done(tb, &mut b, 10), Some(1));
    let tb = t.enter(&b, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
    assert_eq!(t.done(ta, &mut a, 10), Some(2));
    assert!(t.try_take(&tb));
}

#[test]
fn cancel_names_the_next_only_when_it_changes() {
    let mut t = Turns::new(true);
    let (a, b, c) = (space(1), space(2), space(3));
    let ta = t.enter(&a, &SIGN, false).unwrap();
    let tb = t.enter(&b, &SIGN, false).unwrap();
    let tc = t.enter(&c, &SIGN, false).unwrap();
    assert_eq!(t.cancel(tb), None, "b was not next");
    assert_eq!(t.cancel(ta), Some(3), "a was next: c is now");
    assert!(t.try_take(&tc));
    assert!(t.is_empty());
}

#[test]
fn one_turn_at_a_time() {
    let mut t = Turns::new(true);
    let (mut a, b) = (space(1), space(2));
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
    // b is first in the queue but a holds the TPM.
    let tb = t.enter(&b, &SIGN, false).unwrap();
    assert!(!t.try_take(&tb));
    assert_eq!(t.done(ta, &mut a, 5), Some(2));
    assert!(t.try_take(&tb));
    // Cancelling while a turn is held names nobody: the holder wakes the next.
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert_eq!(t.cancel(ta), None);
}

#[test]
fn tags_saturate() {
    let mut t = Turns::new(true);
    let mut a = space(1);
    a.set_tpm_finish(u64::MAX - 1);
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
    t.done(ta, &mut a, u64::MAX);
    assert_eq!(a.tpm_finish(), u64::MAX);
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
}

mod uids;
