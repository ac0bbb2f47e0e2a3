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

/// Runs `rounds` turns of `spaces`, every one of them always waiting with one command of
/// cost 1 (a closed loop: a space asks again as soon as its turn is over). Returns the
/// order in which the spaces went.
fn closed_loop(t: &mut Turns, spaces: &mut [Space], rounds: usize) -> std::vec::Vec<u64> {
    let mut queued: std::vec::Vec<Option<Turn>> = spaces
        .iter()
        .map(|s| Some(t.enter(s, &SIGN, false).unwrap()))
        .collect();
    let mut order = std::vec::Vec::new();
    for _ in 0..rounds {
        let i = (0..spaces.len())
            .find(|i| queued[*i].as_ref().is_some_and(|q| t.try_take(q)))
            .expect("one of the waiting commands goes");
        let turn = queued[i].take().unwrap();
        order.push(turn.space);
        t.done(turn, &mut spaces[i], 1);
        queued[i] = Some(t.enter(&spaces[i], &SIGN, false).unwrap());
    }
    for q in queued.into_iter().flatten() {
        t.cancel(q);
    }
    order
}

#[test]
fn a_user_of_many_files_gets_one_users_share() {
    // uid 1 has forty busy files, uids 2 and 3 one each: each uid gets a third of the
    // turns, and uid 1's turns are shared evenly between its files.
    let mut t = Turns::new(true);
    let mut spaces: std::vec::Vec<Space> = (1..=40).map(|id| user(id, 1)).collect();
    spaces.push(user(41, 2));
    spaces.push(user(42, 3));
    let order = closed_loop(&mut t, &mut spaces, 1200);
    let turns_of = |f: &dyn Fn(u64) -> bool| order.iter().filter(|s| f(**s)).count();
    let (u1, u2, u3) = (
        turns_of(&|s| s <= 40),
        turns_of(&|s| s == 41),
        turns_of(&|s| s == 42),
    );
    for n in [u1, u2, u3] {
        assert!(
            (395..=405).contains(&n),
            "uids got {u1}, {u2}, {u3} of 1200 turns"
        );
    }
    for id in 1..=40 {
        let n = turns_of(&|s| s == id);
        assert!(
            (9..=11).contains(&n),
            "file {id} of uid 1 got {n} of uid 1's {u1} turns"
        );
    }
}

#[test]
fn by_file_each_file_gets_a_share() {
    // The same files with `by_uid` off: each file gets a share, so uid 1 gets 40 of 42.
    let mut t = Turns::new(false);
    let mut spaces: std::vec::Vec<Space> = (1..=40).map(|id| user(id, 1)).collect();
    spaces.push(user(41, 2));
    spaces.push(user(42, 3));
    let order = closed_loop(&mut t, &mut spaces, 1260);
    for id in 1..=42 {
        let n = order.iter().filter(|s| **s == id).count();
        assert_eq!(n, 30, "file {id}");
    }
}

#[test]
fn one_uid_is_served_as_files_alone() {
    // With a single uid, sharing by uid first changes nothing: the same turns in the same
    // order as with `by_uid` off, newcomers and gathering spaces included.
    let run = |by_uid: bool| {
        let mut t = Turns::new(by_uid);
        let mut spaces: std::vec::Vec<Space> = (1..=6).map(|id| user(id, 7)).collect();
        let mut order = closed_loop(&mut t, &mut spaces, 50);
        spaces.push(user(9, 7));
        spaces[2].set_gathering(Gathering::Slots);
        let mut more = std::vec::Vec::new();
        let mut queued: std::vec::Vec<Option<Turn>> = spaces
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Some(
                    t.enter(s, if i == 2 { &START } else { &SIGN }, false)
                        .unwrap(),
                )
            })
            .collect();
        for _ in 0..40 {
            let i = (0..spaces.len())
                .find(|i| queued[*i].as_ref().is_some_and(|q| t.try_take(q)))
                .unwrap();
            let turn = queued[i].take().unwrap();
            more.push(turn.space);
            t.done(turn, &mut spaces[i], 1 + (i as u64 % 3));
            queued[i] = Some(t.enter(&spaces[i], &SIGN, false).unwrap());
        }
        order.extend(more);
        order
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn a_gathering_space_goes_before_other_uids() {
    // uid 2's space gathers the slots reserved for it: its StartAuthSession goes before
    // uid 1's waiting command, although uid 1 has had fewer turns (one against three).
    let mut t = Turns::new(true);
    let (mut a, mut b) = (user(1, 1), user(2, 2));
    let ta = t.enter(&a, &SIGN, false).unwrap();
    assert!(t.try_take(&ta));
    t.done(ta, &mut a, 1);
    for _ in 0..3 {
        let tb = t.enter(&b, &SIGN, false).unwrap();
        assert!(t.try_take(&tb));
        t.done(tb, &mut b, 1);
    }
    let ta = t.enter(&a, &SIGN, false).unwrap();
    b.set_gathering(Gathering::Slots);
    let tb = t.enter(&b, &START, false).unwrap();
    assert_eq!(t.next_space(), Some(2));
    assert!(!t.try_take(&ta));
    assert!(t.try_take(&tb));
    assert_eq!(t.done(tb, &mut b, 1), Some(1));
    assert!(t.try_take(&ta));
    t.done(ta, &mut a, 1);
}

#[test]
fn a_waiter_of_the_session_queue_goes_first() {
    // A command that holds a place in the wait queue (it retries or evicts when the queue
    // says so) goes before the busy files, which would otherwise go round first.
    let mut t = Turns::new(true);
    let mut files: std::vec::Vec<Space> = (1..=5).map(|id| user(id, 1)).collect();
    let mut w = user(6, 1);
    for s in files.iter_mut().chain([&mut w]) {
        let turn = t.enter(s, &SIGN, false).unwrap();
        assert!(t.try_take(&turn));
        t.done(turn, s, 1);
    }
    let queued: std::vec::Vec<Turn> = files
        .iter()
        .map(|s| t.enter(s, &SIGN, false).unwrap())
        .collect();
    let tw = t.enter(&w, &START, true).unwrap();
    assert_eq!(t.next_space(), Some(6));
    assert!(t.try_take(&tw));
    t.done(tw, &mut w, 1);
    for q in queued {
        t.cancel(q);
    }
}

#[test]
fn one_file_per_uid_is_served_as_files_alone() {
    // Each space its own uid: sharing by uid changes nothing, whatever the mix of costs,
    // newcomers, gathering spaces and waiters of the session queue.
    let run = |by_uid: bool| {
        let mut t = Turns::new(by_uid);
        let mut spaces: std::vec::Vec<Space> = (1..=8).map(|id| user(id, id as u32)).collect();
        let mut x = 12345u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut queued: std::vec::Vec<Option<Turn>> = spaces.iter().map(|_| None).collect();
        let mut order = std::vec::Vec::new();
        for step in 0..3000 {
            // Some spaces ask (a few of them gathering, or queued for a slot).
            for i in 0..spaces.len() {
                if queued[i].is_none() && rnd(3) == 0 {
                    let g = match rnd(6) {
                        0 => Gathering::Slots,
                        1 => Gathering::All,
                        _ => Gathering::No,
                    };
                    spaces[i].set_gathering(g);
                    let cmd = if rnd(2) == 0 { &START } else { &SIGN };
                    queued[i] = Some(t.enter(&spaces[i], cmd, rnd(5) == 0).unwrap());
                }
            }
            if step % 97 == 0 {
                // One gives up its place.
                if let Some(i) = (0..spaces.len()).find(|i| queued[*i].is_some()) {
                    t.cancel(queued[i].take().unwrap());
                }
            }
            if let Some(i) =
                (0..spaces.len()).find(|i| queued[*i].as_ref().is_some_and(|q| t.try_take(q)))
            {
                let turn = queued[i].take().unwrap();
                order.push(turn.space);
                t.done(turn, &mut spaces[i], 1 + rnd(3));
            }
        }
        order
    };
    let (a, b) = (run(true), run(false));
    let first = a.iter().zip(b.iter()).position(|(x, y)| x != y);
    assert_eq!(
        first,
        None,
        "by uid {:?}\nby file {:?}",
        &a[..a.len().min(60)],
        &b[..b.len().min(60)]
    );
}

#[test]
fn a_uids_slot_is_freed_and_reused() {
    // Three waves of five busy uids each, one after the other: a wave's uids are forgotten
    // once the next wave's turns have passed their tags, and the third wave takes the
    // slots the first freed. One slot per uid still needed, not one per uid ever seen.
    let mut t = Turns::new(true);
    for wave in 0..3u32 {
        let mut five: std::vec::Vec<Space> = (0..5u32)
            .map(|u| user(u64::from(10 * wave + u), 10 * wave + u))
            .collect();
        let order = closed_loop(&mut t, &mut five, 50);
        for s in &five {
            assert_eq!(order.iter().filter(|id| **id == s.id()).count(), 10);
        }
        assert!(
            t.groups.len() <= 10,
            "{} slots after wave {wave}",
            t.groups.len()
        );
    }
}
