// SPDX-License-Identifier: GPL-2.0
//! Queue places: in the order of asking between the files of one uid, and in turn between
//! uids (see [`Places`]).

use super::SET_MAX;

/// Bits of a ticket id that count waits; the rest is the round.
const SEQ_BITS: u32 = 24;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Where a new waiter queues. A ticket id is `round << 24 | seq`, and the queue is in id
/// order. A *group* is the files of one uid (module parameter `fair_share_by_uid`, the
/// default), or every file at once. A new waiter of a group queues in the round the queue
/// serves now, plus one round for every waiter its group has queued already, plus one for
/// every whole set ([`SET_MAX`]) of sessions the group's other files hold; and never ahead
/// of its group's waiters. So when one uid's forty files wait beside twenty other uids'
/// clients, the queue serves one of the forty, then each of the twenty, then the next of
/// the forty: per uid, not per file; and a uid whose files hold sessions already waits
/// behind uids that hold none. A uid with one file waiting is served in the order of
/// asking, as with one group, where the queue is the plain FIFO of files. Rounds count
/// waits (2^40 of them before they wrap).
#[derive(Default)]
pub(super) struct Places {
    /// The round the queue serves now: the highest round of a head of the queue so far, or
    /// of any place given once the queue was empty.
    vround: u64,
    /// The highest round given.
    last: u64,
    seq: u64,
}

/// What the queue holds of a group when one of its files begins to wait.
pub(super) struct GroupQueue {
    /// Its waiters.
    pub(super) waiting: u64,
    /// The highest round of its waiters (0 if none).
    pub(super) last_round: u64,
    /// Sessions its other files hold.
    pub(super) held_by_others: usize,
}

/// The round of ticket id `id`.
pub(super) const fn round_of(id: u64) -> u64 {
    id >> SEQ_BITS
}

impl Places {
    pub(super) const fn new() -> Self {
        Places {
            vround: 0,
            last: 0,
            seq: 1,
        }
    }

    /// The ticket id of a new waiter of a group that stands as `group` says in the queue;
    /// `head` is the id of the head of the queue now, and `taken(id)` whether a waiter
    /// holds that id already.
    pub(super) fn next(
        &mut self,
        group: GroupQueue,
        head: Option<u64>,
        taken: impl Fn(u64) -> bool,
    ) -> u64 {
        self.vround = self.vround.max(match head {
            Some(h) => round_of(h),
            // Nobody waits: ids still grow in the order of asking (kept places included).
            None => self.last,
        });
        let sets = u64::try_from(group.held_by_others / SET_MAX).unwrap_or(u64::MAX);
        let round = self
            .vround
            .saturating_add(group.waiting)
            .saturating_add(sets)
            .max(group.last_round);
        self.last = self.last.max(round);
        let seq = self.seq & SEQ_MASK;
        self.seq = self.seq.wrapping_add(1);
        let mut id = (round << SEQ_BITS) | seq;
        while taken(id) {
            id = id.wrapping_add(1 << SEQ_BITS);
        }
        id
    }
}
