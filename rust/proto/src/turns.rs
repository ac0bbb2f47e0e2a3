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
//! **Users first** (with `by_uid`, the default: module parameter `fair_share_by_uid`). The
//! turns are shared in two levels, as CFS group scheduling shares a CPU: first between the
//! uids whose commands wait -- each uid (a *group*) carries a finish tag of its own, in a
//! virtual time of its own (`gvclock`), by the same rules -- then between that uid's
//! spaces as above. One user who keeps forty files busy gets one user's share of the TPM,
//! not forty, and each of its files a fortieth of it. With one uid, with one file per uid,
//! or with `by_uid` off (every file in one group) the order is exactly the one of the files
//! alone. A command that goes first (below) goes first within its uid's share, and before
//! other uids only while its uid is not ahead of them: one user's forty files, each given
//! a slot in turn, would otherwise take a turn each ahead of everyone.
//!
//! One turn is used at a time: [`Turns::try_take`] succeeds only while no turn is held, and
//! the holder gives it back with [`Turns::done`]. The queue is kept apart from the resource
//! manager (the glue has it under a lock of its own, held only to queue, take and give
//! back), so waiting for a turn never waits on the lock the TPM work holds. [`Turns::done`]
//! and [`Turns::cancel`] name the space to wake next, so only that waiter is woken.
//!
//! **Cost.** Choosing the next command reads each waiting command once, and its group's
//! tags by index (`Waiting::slot`): a handoff costs O(waiting + groups), a constant per
//! waiter however many wait. A command finds its group by the slot its space used last
//! ([`Space`] keeps it), so asking costs O(1) while the group stays known.

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
    /// Its group (the opener's uid with `by_uid`, else 0 for all), the group's start and
    /// finish tags when it asked (as `start` and `prev`, in group time), and the group's
    /// finish tag then (`gprev` is 0 for a command that goes first).
    group: u64,
    /// Its group's slot in [`Turns::groups`], which is not reused while a command of the
    /// group waits (`group` is kept to check that).
    slot: usize,
    gstart: u64,
    gprev: u64,
    gfinish: u64,
}

/// A group of spaces (one uid's) with commands waiting, or a finish tag ahead of `gvclock`.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// `None`: a free slot.
    key: Option<u64>,
    /// Finish tag of the group's last turn, in group time.
    finish: u64,
    /// Its commands waiting.
    waiting: u32,
    /// The cost of its last turn: how far ahead of `gvclock` its finish tag may be for its
    /// commands that go first to go before other groups. A group that takes no more than
    /// its share is never further ahead, so with one space per group the order is the one
    /// of the spaces; a group that is, took more than its share.
    lead: u64,
}

/// The commands waiting for the TPM, in start-tag order.
#[derive(Default)]
pub struct Turns {
    /// Unordered; the next is the smallest `(start, prev, seq)`.
    queue: Vec<Waiting>,
    /// Start tag of the command that used the TPM last.
    vclock: u64,
    next_seq: u64,
    /// A turn is taken and not given back yet: its group's slot and the group's start tag.
    busy: Option<(usize, u64)>,
    /// Share between uids first (see the module documentation).
    by_uid: bool,
    /// Groups that wait, hold the turn, or were served ahead of `gvclock`, in slots that
    /// stay put while the group is kept (waiting commands name theirs); a forgotten group
    /// frees its slot for the next new one. Never more slots than groups kept at once.
    groups: Vec<Group>,
    /// Start tag of the group that used the TPM last.
    gvclock: u64,
}

impl Turns {
    /// An empty queue; `by_uid`: share between the openers' uids first, then between each
    /// uid's files (else between files).
    pub const fn new(by_uid: bool) -> Self {
        Turns {
            queue: Vec::new(),
            vclock: 0,
            next_seq: 0,
            busy: None,
            by_uid,
            groups: Vec::new(),
            gvclock: 0,
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

    /// The slot of group `key`: `hint` (the one its space used last) if it still holds it,
    /// else found by a walk of the slots.
    fn find_group(&self, key: u64, hint: usize) -> Option<usize> {
        if self.groups.get(hint).is_some_and(|g| g.key == Some(key)) {
            return Some(hint);
        }
        self.groups.iter().position(|g| g.key == Some(key))
    }

    /// Keeps a new group `g` in a free slot, or a new one.
    fn add_group(&mut self, g: Group) -> Result<usize, OutOfMemory> {
        let free = self
            .groups
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.key.is_none());
        if let Some((i, s)) = free {
            *s = g;
            return Ok(i);
        }
        self.groups.try_push(g)?;
        Ok(self.groups.len() - 1)
    }

    /// The group tags of `w` now: those it got when it asked, unless its group took a turn
    /// since (another of its spaces did): then the group's new finish tag.
    fn group_tags(&self, w: &Waiting) -> (u64, u64) {
        let g = self.groups.get(w.slot);
        debug_assert_eq!(
            g.and_then(|g| g.key),
            Some(w.group),
            "a waiting command's group slot"
        );
        let finish = g.map_or(w.gfinish, |g| g.finish);
        if finish == w.gfinish {
            (w.gstart, w.gprev)
        } else {
            (w.gstart.max(finish), finish)
        }
    }

    /// The group whose command goes next (its slot): the smallest `(gstart, gprev, seq)` of
    /// the waiting commands' group tags now.
    fn next_group(&self) -> Option<usize> {
        self.queue
            .iter()
            .map(|w| {
                let (gstart, gprev) = self.group_tags(w);
                ((gstart, gprev, w.seq), w.slot)
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, g)| g)
    }

    /// The next command: of the next group, the smallest `(start, prev, seq)`. Two reads
    /// of the queue.
    fn next(&self) -> Option<Waiting> {
        let slot = self.next_group()?;
        self.queue
            .iter()
            .filter(|w| w.slot == slot)
            .copied()
            .min_by_key(|w| (w.start, w.prev, w.seq))
    }

    /// Forgets the groups that neither wait, nor hold the turn, nor have a finish tag ahead
    /// of `gvclock` (a new group starts at `gvclock` anyway): frees their slots, and drops
    /// the free slots at the end.
    fn prune(&mut self) {
        let (gv, busy) = (self.gvclock, self.busy.map(|b| b.0));
        for (i, g) in self.groups.iter_mut().enumerate() {
            if g.waiting == 0 && g.finish <= gv && Some(i) != busy {
                g.key = None;
            }
        }
        while self.groups.last().is_some_and(|g| g.key.is_none()) {
            self.groups.pop();
        }
    }

    /// `w` left the queue (taken or cancelled).
    fn left(&mut self, w: &Waiting) {
        if let Some(g) = self.groups.get_mut(w.slot) {
            g.waiting = g.waiting.saturating_sub(1);
        }
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
    /// A command that holds a place in the wait queue for a session slot (`queued`: it asks
    /// for the TPM only when the queue says it may retry or must evict) goes first too: the
    /// queue has its own order, and everyone behind the waiter that must evict waits for
    /// its turn here. (Sharing by uid without it, a head of the queue whose uid had forty
    /// files waited for a fortieth of its uid's turns, and the queue stood still for
    /// seconds.)
    ///
    /// # Errors
    /// [`OutOfMemory`] if the queue cannot grow (fail the command).
    pub fn enter(&mut self, space: &Space, cmd: &[u8], queued: bool) -> Result<Turn, OutOfMemory> {
        let first = queued
            || match space.gathering() {
                Gathering::No => false,
                Gathering::Slots => takes_slot(cmd),
                Gathering::All => true,
            };
        let prev = if first { 0 } else { space.tpm_finish() };
        let start = self.vclock.max(prev);
        let seq = self.next_seq;
        let group = space.share_group(self.by_uid);
        let found = self
            .find_group(group, space.tpm_group_slot())
            .and_then(|i| self.groups.get(i).map(|g| (i, g.finish, g.lead)));
        let (slot, gfinish, lead) = match found {
            Some(kept) => kept,
            None => {
                // Forgotten (or new): the group's tag as this space last saw it, which for
                // a uid of one file is the tag it had.
                let finish = space.tpm_group_finish();
                let i = self.add_group(Group {
                    key: Some(group),
                    finish,
                    waiting: 0,
                    lead: 1,
                })?;
                (i, finish, 1)
            }
        };
        let gfirst = first && gfinish <= self.gvclock.saturating_add(lead);
        let gprev = if gfirst { 0 } else { gfinish };
        self.queue.try_push(Waiting {
            seq,
            start,
            prev,
            space: space.id(),
            group,
            slot,
            gstart: self.gvclock.max(gprev),
            gprev,
            gfinish,
        })?;
        if let Some(g) = self.groups.get_mut(slot) {
            g.waiting = g.waiting.saturating_add(1);
        }
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
        if self.busy.is_some() || self.next().map(|w| w.seq) != Some(turn.seq) {
            return false;
        }
        let Some(w) = self
            .queue
            .iter()
            .position(|w| w.seq == turn.seq)
            .and_then(|i| self.queue.swap_remove(i))
        else {
            return false;
        };
        self.left(&w);
        let (gstart, _) = self.group_tags(&w);
        self.gvclock = self.gvclock.max(gstart);
        self.busy = Some((w.slot, gstart));
        self.vclock = self.vclock.max(turn.start);
        true
    }

    /// The taken `turn` of `space` is over, after `cost` (one per turn, or TPM time: any
    /// unit, as long as it is the same for everyone). Returns the space whose command goes next (to wake).
    pub fn done(&mut self, turn: Turn, space: &mut Space, cost: u64) -> Option<u64> {
        debug_assert_eq!(turn.space, space.id());
        let cost = cost.max(1);
        if let Some((slot, gstart)) = self.busy.take() {
            let finish = gstart.saturating_add(cost);
            if let Some(g) = self.groups.get_mut(slot) {
                g.finish = finish;
                g.lead = cost;
            }
            space.set_tpm_group_finish(finish);
            space.set_tpm_group_slot(slot);
        }
        space.set_tpm_finish(turn.start.saturating_add(cost));
        self.prune();
        self.next().map(|w| w.space)
    }

    /// `turn` is given up before it was taken (a signal, a closed file, a wait that turned
    /// out not to need the TPM). Returns the space to wake if the next command changed and
    /// no turn is held.
    pub fn cancel(&mut self, turn: Turn) -> Option<u64> {
        let was_next = self.busy.is_none() && self.next().map(|w| w.seq) == Some(turn.seq);
        if let Some(w) = self
            .queue
            .iter()
            .position(|w| w.seq == turn.seq)
            .and_then(|i| self.queue.swap_remove(i))
        {
            self.left(&w);
        }
        self.prune();
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
mod tests;
