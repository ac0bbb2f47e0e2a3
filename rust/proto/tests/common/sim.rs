// SPDX-License-Identifier: GPL-2.0
//! The fair-share simulation: many clients on the fake TPM (its `max_sessions` are the TPM's
//! slots) with a controllable clock, each driven through `Rm::step` -- the one wait loop the
//! kernel glue runs -- and the wake-ups it asks for, taking turns at the TPM from [`Turns`]
//! as the glue does. See `tests/fairness.rs` (one uid) and `tests/fair_users.rs` (many uids,
//! and many clients) for what is asserted.

use super::fake::FakeTpm;
use super::marshal::*;
use super::Harness;
use tpmrs_proto::{Config, Request, RmError, Space, Step, Turn, Turns, TPM_BUFSIZE};

pub const LAYER: u32 = 0xB_0000;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000 * MS;
/// SESSION_TIMEOUT (the default).
pub const T: u64 = 2 * SEC;

struct Client {
    space: Space,
    /// Sessions it needs at once.
    want: usize,
    sessions: Vec<u32>,
    /// The command in flight and its place in the wait protocol.
    req: Option<(Request, Vec<u8>)>,
    next_at: u64,
    /// Only uses its sessions every `idle` ns (the hog), else 0.
    idle: u64,
    ops: u64,
    first_op: u64,
    last_op: u64,
    longest_gap: u64,
    rotate: usize,
    blocked_since: Option<u64>,
    blocked_ns: u64,
    longest_wait: u64,
    /// Its place in the queue for the TPM, while it waits for a turn.
    turn: Option<Turn>,
    /// The sessions its last command used, in order.
    used: Vec<u32>,
    /// Told one of its sessions was evicted, it flushes them all (see `answered`).
    flushes_all: bool,
    /// Sessions to flush before its next command.
    to_flush: Vec<u32>,
    /// New sessions it got under a number it still held dead.
    dups: u64,
}

impl Client {
    /// What it sends next: a StartAuthSession while it has fewer sessions than it needs,
    /// else a command that uses up to three of them.
    fn next_cmd(&mut self) -> Vec<u8> {
        self.used.clear();
        if self.sessions.len() < self.want {
            start_auth_session(SE_HMAC, &[7; 16])
        } else {
            let n = self.sessions.len();
            let k = n.min(3);
            self.used = (0..k)
                .map(|j| self.sessions[(self.rotate + j) % n])
                .collect();
            use_cmd(&self.used)
        }
    }

    /// The answer `r` to its command came at `now`. Returns whether it was a refusal.
    fn answered(&mut self, r: &[u8], now: u64, think: u64) -> bool {
        let code = rc(r);
        let starting = self.used.is_empty();
        self.next_at = now + think;
        if starting {
            if code != 0 {
                return true;
            }
            if self.sessions.contains(&rhandle(r)) {
                // A number it holds dead: it forgets the dead one (a real client's old
                // reference would reach the new session, with a stale nonce).
                self.dups += 1;
                let h = rhandle(r);
                self.sessions.retain(|s| *s != h);
            }
            self.sessions.push(rhandle(r));
        } else if code == 0 {
            self.ops += 1;
            if self.ops == 1 {
                self.first_op = now;
            } else {
                self.longest_gap = self.longest_gap.max(now - self.last_op);
            }
            self.last_op = now;
            self.rotate = self.rotate.wrapping_add(3);
            if self.idle > 0 {
                self.next_at = now.saturating_add(self.idle);
            }
        } else {
            // Evicted (the whole space at once): it hears of one session at a time, the one
            // the answer names, and starts it again (as tests/guest/fairshare.py and the TSS
            // stacks do). A session it started after that is still its own.
            assert_eq!(
                code & !0x7FF,
                LAYER | 0x800,
                "an evicted session: {code:#x}"
            );
            assert_eq!(code & 0x3F, 0x23, "TPM_RC_EXPIRED: {code:#x}");
            if self.flushes_all {
                // Eviction takes a whole space: all of them are gone. A client that held
                // more than three should not find them one at a time: the TPM hands out
                // the lowest free session number, so its new sessions get numbers it still
                // holds dead, and tpmrs starts such a session again under another number
                // only while the TPM has slots to spare for the numbers it skips (two,
                // beyond tpmrs's budget: the headroom). Finding them one at a time, a
                // five-session client got such a number once in four 60 s runs.
                self.to_flush.append(&mut self.sessions);
                return false;
            }
            let pos = usize::try_from((code >> 8) & 7).unwrap();
            let gone = self.used[pos - 1];
            self.sessions.retain(|s| *s != gone);
        }
        false
    }
}

/// What a run measured; per client (the hog left out) unless said otherwise.
pub struct Report {
    pub ops: Vec<u64>,
    /// Operations of the hog, if any.
    pub hog_ops: u64,
    pub gaps: Vec<u64>,
    /// Every client's longest gap between two of its operations (0 with fewer than two).
    pub between: Vec<u64>,
    pub refusals: u64,
    pub evictions: u64,
    /// New sessions handed out under a number their client still held dead.
    pub dups: u64,
    pub longest_wait: u64,
    pub blocked_fraction: f64,
    /// Per uid (the hog left out), in order of first appearance in the workload.
    pub users: Vec<UserReport>,
}

/// What one uid's clients did together.
#[derive(Debug, Clone, Copy)]
pub struct UserReport {
    pub uid: u32,
    pub ops: u64,
    /// Longest time between two operations of any of its clients, counting from the start
    /// and to the end of the run.
    pub gap: u64,
    last: u64,
}

/// Client `uid` did an operation at `now`.
fn user_op(users: &mut [UserReport], uid: u32, now: u64) {
    if let Some(u) = users.iter_mut().find(|u| u.uid == uid) {
        u.ops += 1;
        u.gap = u.gap.max(now - u.last);
        u.last = now;
    }
}

/// Jain's fairness index of `x`.
pub fn jain(x: &[u64]) -> f64 {
    let s: f64 = x.iter().map(|v| *v as f64).sum();
    let q: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    if q == 0.0 {
        return 0.0;
    }
    s * s / (x.len() as f64 * q)
}

/// A command that uses `sess` (GetRandom with them as authorizations).
fn use_cmd(sess: &[u32]) -> Vec<u8> {
    let auths: Vec<Auth> = sess.iter().map(|s| Auth::policy(*s, true, &[])).collect();
    command(CC_GET_RANDOM, &[], &auths, &Buf::new().u16(8).done())
}

/// How fast the simulated machine is.
#[derive(Clone, Copy)]
pub struct Speed {
    /// Time of one TPM command.
    pub cmd: u64,
    /// A client thinks up to this long between two commands.
    pub think: u64,
}

/// The bench kernel: 1 ms per TPM command, up to 10 ms of thought.
pub const BENCH: Speed = Speed {
    cmd: MS,
    think: 10 * MS,
};

/// The debug kernel (KASAN, lockdep, QEMU TCG): about 5 ms per TPM command and tens of
/// milliseconds of Python per command (41 signs/s in a 32 x 3 run, 4-5 TPM commands each).
pub const DEBUG: Speed = Speed {
    cmd: 3 * MS,
    think: 20 * MS,
};

/// A workload: clients wanting `wants[i]` sessions each, opened by `uids[i]` (1000 for all
/// if empty); `hog`: the index of a client that only checks its sessions every so often.
pub struct Workload<'a> {
    /// The TPM's session slots.
    pub slots: usize,
    pub wants: &'a [usize],
    pub uids: &'a [u32],
    pub hog: Option<(usize, u64)>,
    pub secs: u64,
    pub speed: Speed,
    /// `Config::fair_share_by_uid`.
    pub by_uid: bool,
}

/// Runs workload `w` for `w.secs` simulated seconds on a TPM with `w.slots` session slots.
pub fn run(seed: u64, w: &Workload) -> Report {
    let Workload {
        slots,
        wants,
        uids,
        hog,
        secs,
        speed,
        by_uid,
    } = *w;
    let mut tpm = FakeTpm::new();
    tpm.max_sessions = slots;
    let mut h = Harness::new(
        tpm,
        Config {
            fair_share_by_uid: by_uid,
            ..Config::default()
        },
    );
    let mut rnd = super::seeded_rng(seed);
    let start = h.now;
    let end = start + secs * SEC;
    let mut clients: Vec<Client> = wants
        .iter()
        .enumerate()
        .map(|(i, w)| Client {
            space: h.space_as(uids.get(i).copied().unwrap_or(1000)),
            want: *w,
            sessions: vec![],
            req: None,
            // Everyone starts within 100 ms, the hog too (as in tests/guest/fairshare.py).
            next_at: start + rnd(100) * MS,
            idle: match hog {
                Some((j, every)) if j == i => every,
                _ => 0,
            },
            ops: 0,
            first_op: 0,
            last_op: start,
            longest_gap: 0,
            rotate: 0,
            blocked_since: None,
            blocked_ns: 0,
            longest_wait: 0,
            turn: None,
            used: vec![],
            flushes_all: *w > 3,
            to_flush: vec![],
            dups: 0,
        })
        .collect();
    let mut users: Vec<UserReport> = vec![];
    for (i, c) in clients.iter().enumerate() {
        let uid = c.space.uid();
        if Some(i) != hog.map(|h| h.0) && users.iter().all(|u| u.uid != uid) {
            users.push(UserReport {
                uid,
                ops: 0,
                gap: 0,
                last: start,
            });
        }
    }
    let mut refusals = 0;
    let mut idle_steps = 0u64;
    let mut at_once = 0u64;
    let mut rsp = vec![0u8; TPM_BUFSIZE];
    let mut turns = Turns::new(by_uid);
    loop {
        // Every client whose time has come asks, as the glue does, whether its next step
        // needs the TPM: if not it sleeps without a turn, else it queues for one. A new
        // command owed an answer without the TPM gets it at once.
        let mut woken = vec![];
        let now = h.now;
        for (i, c) in clients
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.turn.is_none() && c.next_at <= now)
        {
            for s in c.to_flush.drain(..) {
                let r = h.ok(&mut c.space, &flush_context(s));
                assert!(rc(&r) == 0 || rc(&r) & LAYER != 0);
            }
            if c.req.is_none() {
                let cmd = c.next_cmd();
                if let Some(r) = h.rm.answer_at_once(&c.space, &cmd, &mut rsp) {
                    let n = r.unwrap();
                    h.rm.note_gathering(&mut c.space, h.now);
                    h.rm.take_wakeups(&mut |s| woken.push(s));
                    let before = c.ops;
                    refusals += u64::from(c.answered(&rsp[..n], h.now, rnd(speed.think / MS) * MS));
                    if c.ops > before && Some(i) != hog.map(|h| h.0) {
                        user_op(&mut users, c.space.uid(), h.now);
                    }
                    at_once += 1;
                    continue;
                }
                c.req = Some((Request::new(), cmd));
            }
            let req = c.req.as_ref().map(|r| &r.0).unwrap();
            if let Some(until_ns) = h.rm.sleep_until(req, h.now) {
                c.blocked_since.get_or_insert(h.now);
                c.next_at = until_ns;
                idle_steps += 1;
                continue;
            }
            let (req, cmd) = c.req.as_ref().unwrap();
            c.turn = Some(turns.enter(&c.space, cmd, req.queued()).unwrap());
        }
        wake(&mut clients, &woken, h.now);
        // The TPM goes to the command whose turn it is; if none waits, time passes.
        let Some(i) = (0..clients.len())
            .find(|i| clients[*i].turn.as_ref().is_some_and(|t| turns.try_take(t)))
        else {
            let next = clients.iter().map(|c| c.next_at).min().unwrap();
            h.now = h.now.max(next);
            if h.now >= end {
                break;
            }
            continue;
        };
        if h.now >= end {
            break;
        }
        let c = &mut clients[i];
        let turn = c.turn.take().unwrap();
        let (mut req, cmd) = c.req.take().unwrap();
        let before = h.tpm_commands();
        let step =
            h.rm.step(&mut req, &mut c.space, &mut h.tpm, h.now, &cmd, &mut rsp);
        // The TPM's time.
        h.now += (h.tpm_commands() - before).max(1) * speed.cmd;
        let mut woken = vec![];
        h.rm.take_wakeups(&mut |s| woken.push(s));
        let done = match step {
            Step::Sleep { until_ns } => {
                c.blocked_since.get_or_insert(h.now);
                c.next_at = until_ns.max(h.now);
                c.req = Some((req, cmd));
                None
            }
            Step::Done(r) => {
                h.rm.end_request(req, h.now);
                h.rm.note_gathering(&mut c.space, h.now);
                h.rm.take_wakeups(&mut |s| woken.push(s));
                Some(r)
            }
        };
        // Its turn passes on; the next is woken (it queued already, nothing to do here).
        turns.done(turn, &mut c.space, 1);
        if let Some(r) = done {
            if let Some(b) = c.blocked_since.take() {
                c.blocked_ns += h.now - b;
                c.longest_wait = c.longest_wait.max(h.now - b);
            }
            match r {
                Ok(n) => {
                    let before = c.ops;
                    refusals += u64::from(c.answered(&rsp[..n], h.now, rnd(speed.think / MS) * MS));
                    if c.ops > before && Some(i) != hog.map(|h| h.0) {
                        user_op(&mut users, c.space.uid(), h.now);
                    }
                }
                Err(RmError::SessionsExhausted) => {
                    refusals += 1;
                    c.next_at = h.now + 10 * MS;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        wake(&mut clients, &woken, h.now);
    }
    assert!(idle_steps > 0, "some steps sleep without the TPM");
    assert!(at_once > 0, "evicted sessions are heard of without the TPM");
    let hog_i = hog.map_or(usize::MAX, |h| h.0);
    if let Some((j, _)) = hog {
        println!(
            "  hog: {} ops, {} sessions at the end",
            clients[j].ops,
            clients[j].sessions.len()
        );
    }
    let mut report = Report {
        ops: vec![],
        hog_ops: hog.map_or(0, |(j, _)| clients[j].ops),
        gaps: vec![],
        between: vec![],
        refusals,
        evictions: h.rm.stats().evictions,
        dups: clients.iter().map(|c| c.dups).sum(),
        longest_wait: 0,
        blocked_fraction: 0.0,
        users: vec![],
    };
    for u in users.iter_mut() {
        u.gap = u.gap.max(end.saturating_sub(u.last));
    }
    report.users = users;
    let mut blocked = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        if let Some(b) = c.blocked_since.take() {
            c.blocked_ns += end.saturating_sub(b);
            c.longest_wait = c.longest_wait.max(end.saturating_sub(b));
        }
        blocked += c.blocked_ns;
        if i == hog_i {
            continue;
        }
        report.ops.push(c.ops);
        // The first gap counts from the start.
        let first = if c.ops > 0 { c.first_op } else { end } - start;
        let gap = c.longest_gap.max(end.saturating_sub(c.last_op)).max(first);
        report.gaps.push(gap);
        report.between.push(c.longest_gap);
        report.longest_wait = report.longest_wait.max(c.longest_wait);
    }
    report.blocked_fraction = blocked as f64 / (clients.len() as f64 * (end - start) as f64);
    // Nothing leaks.
    for c in clients.iter_mut() {
        if let Some(t) = c.turn.take() {
            turns.cancel(t);
        }
        if let Some((req, _)) = c.req.take() {
            h.rm.end_request(req, h.now);
        }
        h.close(&mut c.space);
    }
    assert!(h.rm.sessions().is_empty());
    h.tpm.assert_empty();
    report
}

/// Only the waiters named in `woken` are woken (`None`: all of them).
fn wake(clients: &mut [Client], woken: &[Option<u64>], now: u64) {
    for c in clients
        .iter_mut()
        .filter(|c| c.req.is_some() && c.turn.is_none())
    {
        if woken.iter().any(|w| w.is_none_or(|s| s == c.space.id())) {
            c.next_at = c.next_at.min(now);
        }
    }
}
