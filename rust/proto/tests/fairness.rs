// SPDX-License-Identifier: GPL-2.0
//! Fair share under global session exhaustion, simulated: many clients on the fake TPM (its
//! `max_sessions` are the TPM's slots) with a controllable clock, each driven through
//! `Rm::step` -- the one wait loop the kernel glue runs -- and the wake-ups it asks for.
//!
//! Every TPM command costs 1 ms of the clock (the TPM is one, commands are serialized); a
//! client thinks 0-9 ms between two operations. As in the kernel glue, a command whose next
//! step needs the TPM (`Rm::sleep_until` says so) takes a turn at it from [`Turns`], and
//! only the waiters `Rm::take_wakeups` names are woken. Without the turns, the simulation
//! missed what the guest showed: spaces gathering their sessions kept the TPM to
//! themselves, and gaps were 8-11 s there against under 4 s here. An *operation* is one command that uses all
//! the sessions it needs (up to three at once: a TPM command takes at most three); a client
//! whose sessions were evicted hears so (TPM_RC_EXPIRED in the resource-manager layer) one
//! command at a time, answered without a turn at the TPM (`Rm::answer_at_once`), and starts
//! each again; a client of more than three flushes them all at the first.
//!
//! Asserted for several seeds of each workload: no command is refused, Jain's index over
//! the operations of each client is >= 0.95, and every client's longest gap between two
//! operations (counting from the start and to the end of the run) is at most
//! 2 x SESSION_TIMEOUT + 1 s; at the debug kernel's speed, every gap between two operations
//! is at most 3 x SESSION_TIMEOUT. No client ever gets a new session under a number it
//! still holds dead.

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::Harness;
use tpmrs_proto::{Config, Request, RmError, Space, Step, Turn, Turns, TPM_BUFSIZE};

const LAYER: u32 = 0xB_0000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const T: u64 = 2 * SEC;

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

struct Report {
    ops: Vec<u64>,
    /// Operations of the hog, if any.
    hog_ops: u64,
    gaps: Vec<u64>,
    /// Every client's longest gap between two of its operations (0 with fewer than two).
    between: Vec<u64>,
    refusals: u64,
    evictions: u64,
    /// New sessions handed out under a number their client still held dead.
    dups: u64,
    longest_wait: u64,
    blocked_fraction: f64,
}

fn jain(x: &[u64]) -> f64 {
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
struct Speed {
    /// Time of one TPM command.
    cmd: u64,
    /// A client thinks up to this long between two commands.
    think: u64,
}

/// The bench kernel: 1 ms per TPM command, up to 10 ms of thought.
const BENCH: Speed = Speed {
    cmd: MS,
    think: 10 * MS,
};

/// The debug kernel (KASAN, lockdep, QEMU TCG): about 5 ms per TPM command and tens of
/// milliseconds of Python per command (41 signs/s in a 32 x 3 run, 4-5 TPM commands each).
const DEBUG: Speed = Speed {
    cmd: 3 * MS,
    think: 20 * MS,
};

/// Runs `wants` (sessions per client; `hog`: the index of a client that only checks its
/// sessions every 5 s) for `secs` simulated seconds on a TPM with `slots` session slots.
fn simulate(
    seed: u64,
    slots: usize,
    wants: &[usize],
    hog: Option<(usize, u64)>,
    secs: u64,
    speed: Speed,
) -> Report {
    let mut tpm = FakeTpm::new();
    tpm.max_sessions = slots;
    let mut h = Harness::new(tpm, Config::default());
    let mut rnd = common::seeded_rng(seed);
    let start = h.now;
    let end = start + secs * SEC;
    let mut clients: Vec<Client> = wants
        .iter()
        .enumerate()
        .map(|(i, w)| Client {
            space: h.space(),
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
    let mut refusals = 0;
    let mut idle_steps = 0u64;
    let mut at_once = 0u64;
    let mut rsp = vec![0u8; TPM_BUFSIZE];
    let mut turns = Turns::new();
    loop {
        // Every client whose time has come asks, as the glue does, whether its next step
        // needs the TPM: if not it sleeps without a turn, else it queues for one. A new
        // command owed an answer without the TPM gets it at once.
        let mut woken = vec![];
        let now = h.now;
        for c in clients
            .iter_mut()
            .filter(|c| c.turn.is_none() && c.next_at <= now)
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
                    refusals += u64::from(c.answered(&rsp[..n], h.now, rnd(speed.think / MS) * MS));
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
            c.turn = Some(turns.enter(&c.space, &c.req.as_ref().unwrap().1).unwrap());
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
                    refusals += u64::from(c.answered(&rsp[..n], h.now, rnd(speed.think / MS) * MS));
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
    };
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

fn check(name: &str, seed: u64, r: &Report) {
    let j = jain(&r.ops);
    let gap = *r.gaps.iter().max().unwrap();
    println!(
        "{name} seed {seed}: ops {} (fewest {}) Jain {j:.3} longest gap {} ms \
         longest wait {} ms blocked {:.2} refusals {} evictions {} dups {}",
        r.ops.iter().sum::<u64>(),
        r.ops.iter().min().unwrap(),
        gap / MS,
        r.longest_wait / MS,
        r.blocked_fraction,
        r.refusals,
        r.evictions,
        r.dups,
    );
    if std::env::var("SIM_OPS").is_ok() {
        println!("{:?}", r.ops);
    }
    assert_eq!(r.refusals, 0, "{name} seed {seed}");
    assert_eq!(
        r.dups, 0,
        "{name} seed {seed}: a session under a number held dead"
    );
    assert!(j >= 0.95, "{name} seed {seed}: Jain {j:.3} {:?}", r.ops);
    assert!(
        gap <= 2 * T + SEC,
        "{name} seed {seed}: longest gap {} ms {:?}",
        gap / MS,
        r.gaps
    );
    assert!(r.ops.iter().all(|o| *o > 0), "every client progresses");
}

const SEEDS: [u64; 4] = [1, 2, 3, 4];

/// The lengths of the runs, as `make bench` runs them: over 20 s the start weighs more.
const RUNS: [u64; 2] = [20, 60];

/// 32 clients x 3 sessions on 64 slots (62 after the headroom).
#[test]
fn fair_share_32x3() {
    for seed in SEEDS {
        for secs in RUNS {
            let r = simulate(seed, 64, &[3; 32], None, secs, BENCH);
            check(&format!("32x3 {secs} s"), seed, &r);
            assert!(r.evictions > 0, "the workload exhausts the TPM");
        }
    }
}

/// 16 clients with 1 session and 16 with 5.
#[test]
fn fair_share_mixed() {
    let wants: Vec<usize> = (0..32).map(|i| if i % 2 == 0 { 1 } else { 5 }).collect();
    for seed in SEEDS {
        for secs in RUNS {
            let r = simulate(seed, 64, &wants, None, secs, BENCH);
            check(&format!("mixed 16x1+16x5 {secs} s"), seed, &r);
        }
    }
}

/// A hog holds 60 idle sessions (it never uses them once it has them) while 20 clients
/// with 3 sessions sign: the hog rotates out, the others do not starve.
#[test]
fn fair_share_hog() {
    let mut wants = vec![60];
    wants.extend([3; 20]);
    for seed in SEEDS {
        for secs in RUNS {
            let r = simulate(seed, 64, &wants, Some((0, u64::MAX)), secs, BENCH);
            check(&format!("hog 60 + 20x3 {secs} s"), seed, &r);
            assert!(r.evictions >= 60, "the hog rotated out");
        }
    }
}

/// The same hog, but it uses its sessions every 5 s and, evicted, comes back for all 60
/// (of 62): it rotates in and out, and the others still keep the bounds.
#[test]
fn fair_share_returning_hog() {
    let mut wants = vec![60];
    wants.extend([3; 20]);
    for seed in SEEDS {
        let r = simulate(seed, 64, &wants, Some((0, 5 * SEC)), 60, BENCH);
        check("returning hog 60 + 20x3", seed, &r);
        assert!(r.hog_ops >= 2, "the hog came back: {} ops", r.hog_ops);
    }
}

#[test]
fn jain_index() {
    assert!((jain(&[5, 5, 5]) - 1.0).abs() < 1e-9);
    assert!((jain(&[1, 0, 0, 0]) - 0.25).abs() < 1e-9);
}

/// The three workloads at the debug kernel's speed, 20 s as in its guest test: no refusal,
/// every client progresses, and every gap between two operations (from the first) is within
/// 3 x SESSION_TIMEOUT, the bound issue 10 asks of the guest test there. Jain's index is at
/// least 0.95 on 32 x 3 and the hog. At this speed 32 x 3 starts with about 30 clients
/// holding two sessions and waiting for a third while one or two that got all three work
/// alone; until waiters could take those part-sets before SESSION_TIMEOUT
/// (`choose_early_victim`), one client did about four times the others' operations (Jain
/// 0.83 on two seeds of four). The mixed workload is asserted at 0.9 only: it gives
/// 0.95-0.97 here, and 0.99 at the bench kernel's speed (60 s).
#[test]
fn fair_share_at_debug_speed() {
    let mixed: Vec<usize> = (0..32).map(|i| if i % 2 == 0 { 1 } else { 5 }).collect();
    let mut hog = vec![60];
    hog.extend([3; 20]);
    for seed in SEEDS {
        for (name, wants, h) in [
            ("32x3", vec![3; 32], None),
            ("mixed 16x1+16x5", mixed.clone(), None),
            ("hog 60 + 20x3", hog.clone(), Some((0, u64::MAX))),
        ] {
            let r = simulate(seed, 64, &wants, h, 20, DEBUG);
            println!(
                "debug speed {name} seed {seed}: ops {} Jain {:.3} longest gap between \
                 operations {} ms refusals {} evictions {}",
                r.ops.iter().sum::<u64>(),
                jain(&r.ops),
                r.between.iter().max().unwrap() / MS,
                r.refusals,
                r.evictions,
            );
            if std::env::var("SIM_OPS").is_ok() {
                println!("{:?}", r.ops);
            }
            let least = if name.starts_with("mixed") { 0.9 } else { 0.95 };
            assert!(jain(&r.ops) >= least, "{name} seed {seed}: {:?}", r.ops);
            assert_eq!(r.refusals, 0, "{name} seed {seed}");
            assert_eq!(r.dups, 0, "{name} seed {seed}");
            assert!(
                r.ops.iter().all(|o| *o > 0),
                "{name} seed {seed}: {:?}",
                r.ops
            );
            assert!(
                r.between.iter().all(|g| *g <= 3 * T),
                "{name} seed {seed}: {:?}",
                r.between
            );
        }
    }
}
