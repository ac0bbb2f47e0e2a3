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

use common::sim::{jain, run, Report, Speed, Workload, BENCH, DEBUG, MS, SEC, T};

/// Runs `wants` (sessions per client, all of one uid; `hog`: the index of a client that only
/// checks its sessions every so often) for `secs` simulated seconds on a TPM with `slots`
/// session slots.
fn simulate(
    seed: u64,
    slots: usize,
    wants: &[usize],
    hog: Option<(usize, u64)>,
    secs: u64,
    speed: Speed,
) -> Report {
    run(
        seed,
        &Workload {
            slots,
            wants,
            uids: &[],
            hog,
            secs,
            speed,
            by_uid: true,
        },
    )
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
