// SPDX-License-Identifier: GPL-2.0
//! Whose command uses the TPM next: start-time fair queuing of turns over open files.
//!
//! The TPM runs one command at a time. With one lock taken in arrival order (the kernel
//! mutex of /dev/tpmrm0), a command queues behind every command already waiting: with 30
//! clients signing, a fresh open's GetRandom(8) waits for 30 signatures, longer than the
//! 1-second start-up probe of tpm2-tss's device TCTI allows. And a client woken because a
//! session slot was freed for it queues behind all of them again before it can use it.
//!
//! Here each command asks for a *turn* ([`Turns::enter`]) and the TPM goes to the waiting
//! command whose space has used the least lately. Every space carries a finish tag
//! ([`Space`]): the virtual time at which its last turn was paid for, at the cost the caller
//! charges per turn (the kernel glue charges one per turn: spaces are served turn about,
//! whatever their commands cost). A command starts at `max(vclock, finish)`, where `vclock`
//! is the start of the command that ran last, and the smallest start goes first; of equal
//! starts, the space served least recently (smallest finish tag), then arrival order. A
//! space that was idle -- a new open file, a client that slept waiting for a session slot --
//! starts at `vclock` and goes next, ahead of the busy spaces whose turn in this round has
//! not come yet; spaces that keep the TPM busy share it
//! evenly, whatever the number of their commands waiting. A space that was idle for long
//! gains no credit: its start is never below `vclock` (start-time fair queuing, Goyal et
//! al., 1996).
//!
//! One turn is used at a time: [`Turns::try_take`] succeeds only while no turn is held, and
//! the holder gives it back with [`Turns::done`]. The queue is kept apart from the resource
//! manager (the glue has it under a lock of its own, held only to queue, take and give
//! back), so waiting for a turn never waits on the lock the TPM work holds. [`Turns::done`]
//! and [`Turns::cancel`] name the space to wake next, so only that waiter is woken.

use super::command::CommandHeader;
use super::constants::{TPM_CC_CONTEXT_LOAD, TPM_CC_START_AUTH_SESSION};
use super::platform::{OutOfMemory, Vec};
use super::space::{Gathering, Space};

/// A command's place in the queue for the TPM. Deliberately not `Clone`: one per command
/// that asked for a turn; give it back with [`Turns::done`] or [`Turns::cancel`].
#[derive(Debug, PartialEq, Eq)]
pub struct Turn {
    seq: u64,
    start: u64,
    space: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    seq: u64,
    start: u64,
    /// The space's finish tag when it asked: ties of `start` go to the space served least
    /// recently.
    prev: u64,
    space: u64,
}

/// The commands waiting for the TPM, in start-tag order.
#[derive(Default)]
pub struct Turns {
    /// Unordered; the next is the smallest `(start, prev, seq)`.
    queue: Vec<Waiting>,
    /// Start tag of the command that used the TPM last.
    vclock: u64,
    next_seq: u64,
    /// A turn is taken and not given back yet.
    busy: bool,
}

impl Turns {
    /// An empty queue.
    pub const fn new() -> Self {
        Turns {
            queue: Vec::new(),
            vclock: 0,
            next_seq: 0,
            busy: false,
        }
    }

    /// How many commands wait for a turn.
    #[cfg(not(tpmrs_kernel))]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no command waits for a turn.
    #[cfg(not(tpmrs_kernel))]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn next(&self) -> Option<Waiting> {
        self.queue
            .iter()
            .copied()
            .min_by_key(|w| (w.start, w.prev, w.seq))
    }

    /// A command `cmd` of `space` asks for the TPM. Its start tag is `max(vclock, finish)`.
    ///
    /// A space gathering its sessions after a wait (see `Rm::note_gathering` and
    /// [`Gathering`]) goes first, so that it comes back for the slots reserved for it
    /// before they lapse. Only while it is short of what it held at once, and for the one
    /// command after one that took a slot from the queue, do all its commands go first;
    /// otherwise only those that take a session slot (StartAuthSession, ContextLoad). With every command first as long as it kept its queue place, two
    /// spaces that signed in a loop kept the TPM to themselves for SESSION_TIMEOUT / 4,
    /// and the waiters they had to wake could neither retry nor evict (one eviction per
    /// SESSION_TIMEOUT / 4; gaps of 8-11 s in the 32 x 3 run).
    ///
    /// # Errors
    /// [`OutOfMemory`] if the queue cannot grow (fail the command).
    pub fn enter(&mut self, space: &Space, cmd: &[u8]) -> Result<Turn, OutOfMemory> {
        let first = match space.gathering() {
            Gathering::No => false,
            Gathering::Slots => takes_slot(cmd),
            Gathering::All => true,
        };
        let prev = if first { 0 } else { space.tpm_finish() };
        let start = self.vclock.max(prev);
        let seq = self.next_seq;
        self.queue.try_push(Waiting {
            seq,
            start,
            prev,
            space: space.id(),
        })?;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(Turn {
            seq,
            start,
            space: space.id(),
        })
    }

    /// Whether `turn` goes now: no turn is held and it has the smallest start tag of every
    /// waiting command. If so, it leaves the queue and holds the TPM until [`Turns::done`].
    pub fn try_take(&mut self, turn: &Turn) -> bool {
        if self.busy || self.next().map(|w| w.seq) != Some(turn.seq) {
            return false;
        }
        self.busy = true;
        if let Some(i) = self.queue.iter().position(|w| w.seq == turn.seq) {
            self.queue.swap_remove(i);
        }
        self.vclock = self.vclock.max(turn.start);
        true
    }

    /// The taken `turn` of `space` is over, after `cost` (one per turn, or TPM time: any
    /// unit, as long as it is the same for everyone). Returns the space whose command goes next (to wake).
    pub fn done(&mut self, turn: Turn, space: &mut Space, cost: u64) -> Option<u64> {
        debug_assert_eq!(turn.space, space.id());
        self.busy = false;
        space.set_tpm_finish(turn.start.saturating_add(cost.max(1)));
        self.next().map(|w| w.space)
    }

    /// `turn` is given up before it was taken (a signal, a closed file, a wait that turned
    /// out not to need the TPM). Returns the space to wake if the next command changed and
    /// no turn is held.
    pub fn cancel(&mut self, turn: Turn) -> Option<u64> {
        let was_next = !self.busy && self.next().map(|w| w.seq) == Some(turn.seq);
        if let Some(i) = self.queue.iter().position(|w| w.seq == turn.seq) {
            self.queue.swap_remove(i);
        }
        if was_next {
            self.next().map(|w| w.space)
        } else {
            None
        }
    }

    /// The space whose command goes next, if any waits.
    #[cfg(not(tpmrs_kernel))]
    pub fn next_space(&self) -> Option<u64> {
        self.next().map(|w| w.space)
    }
}

/// Whether `cmd` may take a session slot: StartAuthSession, or ContextLoad (of a session).
fn takes_slot(cmd: &[u8]) -> bool {
    CommandHeader::parse(cmd)
        .is_ok_and(|h| matches!(h.cc, TPM_CC_START_AUTH_SESSION | TPM_CC_CONTEXT_LOAD))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn alone_goes_at_once() {
        let mut t = Turns::new();
        let mut a = space(1);
        let ta = t.enter(&a, &SIGN).unwrap();
        assert!(t.try_take(&ta));
        assert!(t.is_empty());
        assert_eq!(t.done(ta, &mut a, 10), None);
        assert_eq!(a.tpm_finish(), 10);
    }

    #[test]
    fn an_idle_space_goes_before_busy_ones() {
        // Three busy spaces each used the TPM; a new one (finish 0) arrives last and goes
        // first after the command that runs now.
        let mut t = Turns::new();
        let mut busy: std::vec::Vec<Space> = (1..=3).map(space).collect();
        for s in busy.iter_mut() {
            let turn = t.enter(s, &SIGN).unwrap();
            assert!(t.try_take(&turn));
            t.done(turn, s, 100);
        }
        let turns: std::vec::Vec<Turn> = busy.iter().map(|s| t.enter(s, &SIGN).unwrap()).collect();
        let mut fresh = space(9);
        let tf = t.enter(&fresh, &SIGN).unwrap();
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
        let mut t = Turns::new();
        let mut busy: std::vec::Vec<Space> = (1..=10).map(space).collect();
        for _ in 0..3 {
            let turns: std::vec::Vec<Turn> =
                busy.iter().map(|s| t.enter(s, &SIGN).unwrap()).collect();
            for (turn, s) in turns.into_iter().zip(busy.iter_mut()) {
                assert!(t.try_take(&turn));
                t.done(turn, s, 1);
            }
        }
        let turns: std::vec::Vec<Turn> = busy.iter().map(|s| t.enter(s, &SIGN).unwrap()).collect();
        let mut fresh = space(99);
        let tf = t.enter(&fresh, &SIGN).unwrap();
        assert_eq!(t.next_space(), Some(99));
        assert!(t.try_take(&tf));
        t.done(tf, &mut fresh, 1);
        // Then the round goes on, in arrival order; the newcomer's next command waits for it.
        let tf = t.enter(&fresh, &SIGN).unwrap();
        for (turn, s) in turns.into_iter().zip(busy.iter_mut()) {
            assert!(t.try_take(&turn), "{}", s.id());
            t.done(turn, s, 1);
        }
        assert!(t.try_take(&tf));
    }

    /// A busy space waits for its turn while a space in state `g` sends `cmds`: each goes
    /// first; then the busy one.
    fn goes_first(g: Gathering, cmds: &[[u8; 10]]) {
        let mut t = Turns::new();
        let mut b = space(2);
        for _ in 0..3 {
            let turn = t.enter(&b, &SIGN).unwrap();
            assert!(t.try_take(&turn));
            t.done(turn, &mut b, 1);
        }
        let tb = t.enter(&b, &SIGN).unwrap();
        let mut s = space(3);
        s.set_gathering(g);
        for cmd in cmds {
            let ts = t.enter(&s, cmd).unwrap();
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
        let mut t = Turns::new();
        let mut g: std::vec::Vec<Space> = (1..=2).map(space).collect();
        let mut busy = space(3);
        for s in g.iter_mut().chain([&mut busy]) {
            s.set_gathering(if s.id() == 3 {
                Gathering::No
            } else {
                Gathering::Slots
            });
            for _ in 0..3 {
                let turn = t.enter(s, &SIGN).unwrap();
                assert!(t.try_take(&turn));
                t.done(turn, s, 1);
            }
        }
        let mut w = space(4);
        let mut served = std::vec::Vec::new();
        let mut queued: std::vec::Vec<Turn> =
            g.iter().map(|s| t.enter(s, &SIGN).unwrap()).collect();
        queued.push(t.enter(&busy, &SIGN).unwrap());
        queued.push(t.enter(&w, &START).unwrap());
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
                queued.push(t.enter(s, &SIGN).unwrap());
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
        let mut t = Turns::new();
        let (mut cheap, mut dear) = (space(1), space(2));
        let (mut n_cheap, mut n_dear) = (0u32, 0u32);
        let mut tc = t.enter(&cheap, &SIGN).unwrap();
        let mut td = t.enter(&dear, &SIGN).unwrap();
        for _ in 0..1100 {
            if t.try_take(&tc) {
                t.done(tc, &mut cheap, 1);
                n_cheap += 1;
                tc = t.enter(&cheap, &SIGN).unwrap();
            } else {
                assert!(t.try_take(&td));
                t.done(td, &mut dear, 10);
                n_dear += 1;
                td = t.enter(&dear, &SIGN).unwrap();
            }
        }
        assert!((900..=1010).contains(&n_cheap), "{n_cheap} {n_dear}");
        assert!((90..=110).contains(&n_dear), "{n_cheap} {n_dear}");
    }

    #[test]
    fn an_idle_space_gains_no_credit() {
        let mut t = Turns::new();
        let (mut a, mut b) = (space(1), space(2));
        // a runs alone for a long time.
        for _ in 0..100 {
            let ta = t.enter(&a, &SIGN).unwrap();
            assert!(t.try_take(&ta));
            t.done(ta, &mut a, 10);
        }
        // b arrives: it goes next, but only once before a gets a turn again.
        let ta = t.enter(&a, &SIGN).unwrap();
        let tb = t.enter(&b, &SIGN).unwrap();
        assert!(t.try_take(&tb));
        assert_eq!(t.done(tb, &mut b, 10), Some(1));
        let tb = t.enter(&b, &SIGN).unwrap();
        assert!(t.try_take(&ta));
        assert_eq!(t.done(ta, &mut a, 10), Some(2));
        assert!(t.try_take(&tb));
    }

    #[test]
    fn cancel_names_the_next_only_when_it_changes() {
        let mut t = Turns::new();
        let (a, b, c) = (space(1), space(2), space(3));
        let ta = t.enter(&a, &SIGN).unwrap();
        let tb = t.enter(&b, &SIGN).unwrap();
        let tc = t.enter(&c, &SIGN).unwrap();
        assert_eq!(t.cancel(tb), None, "b was not next");
        assert_eq!(t.cancel(ta), Some(3), "a was next: c is now");
        assert!(t.try_take(&tc));
        assert!(t.is_empty());
    }

    #[test]
    fn one_turn_at_a_time() {
        let mut t = Turns::new();
        let (mut a, b) = (space(1), space(2));
        let ta = t.enter(&a, &SIGN).unwrap();
        assert!(t.try_take(&ta));
        // b is first in the queue but a holds the TPM.
        let tb = t.enter(&b, &SIGN).unwrap();
        assert!(!t.try_take(&tb));
        assert_eq!(t.done(ta, &mut a, 5), Some(2));
        assert!(t.try_take(&tb));
        // Cancelling while a turn is held names nobody: the holder wakes the next.
        let ta = t.enter(&a, &SIGN).unwrap();
        assert_eq!(t.cancel(ta), None);
    }

    #[test]
    fn tags_saturate() {
        let mut t = Turns::new();
        let mut a = space(1);
        a.set_tpm_finish(u64::MAX - 1);
        let ta = t.enter(&a, &SIGN).unwrap();
        assert!(t.try_take(&ta));
        t.done(ta, &mut a, u64::MAX);
        assert_eq!(a.tpm_finish(), u64::MAX);
        let ta = t.enter(&a, &SIGN).unwrap();
        assert!(t.try_take(&ta));
    }
}
