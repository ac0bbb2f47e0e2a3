// SPDX-License-Identifier: GPL-2.0
//! Tests of the turns shared between uids first (`by_uid`), then between each uid's files.

use super::*;

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

/// Spaces 1 to 40 of uid 1, space 41 of uid 2 and space 42 of uid 3.
fn forty_files_and_two_users() -> std::vec::Vec<Space> {
    let mut spaces: std::vec::Vec<Space> = (1..=40).map(|id| user(id, 1)).collect();
    spaces.push(user(41, 2));
    spaces.push(user(42, 3));
    spaces
}

#[test]
fn a_user_of_many_files_gets_one_users_share() {
    // uid 1 has forty busy files, uids 2 and 3 one each: each uid gets a third of the
    // turns, and uid 1's turns are shared evenly between its files.
    let mut t = Turns::new(true);
    let mut spaces = forty_files_and_two_users();
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
    let mut spaces = forty_files_and_two_users();
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
