// SPDX-License-Identifier: GPL-2.0
//! Fair share between users, simulated (`common::sim`): one uid that opens forty files and
//! wants one session in each, beside twenty other uids that each run one client wanting
//! three (issue 22's workload). With `Config::fair_share_by_uid` (the default) the wait
//! queue for session slots and the turns at the TPM go round the uids, then round each
//! uid's files: Jain's index over the uids' operations is >= 0.95, no command is refused,
//! and every uid's longest gap between two operations is within
//! ceil(demand / budget) x SESSION_TIMEOUT + 1 s (100 sessions wanted, 62 in the budget:
//! 2 x T + 1 s). Per file, the forty-file uid does most of the work.

mod common;

use common::sim::{jain, run, Report, Workload, BENCH, SEC, T};

const SEEDS: [u64; 4] = [1, 2, 3, 4];

/// The forty-file uid first, then the twenty others.
fn many_files() -> (Vec<usize>, Vec<u32>) {
    let mut wants = vec![1; 40];
    let mut uids = vec![2000; 40];
    for u in 0..20 {
        wants.push(3);
        uids.push(3001 + u);
    }
    (wants, uids)
}

fn many_files_run(seed: u64, secs: u64, by_uid: bool) -> Report {
    let (wants, uids) = many_files();
    run(
        seed,
        &Workload {
            slots: 64,
            wants: &wants,
            uids: &uids,
            hog: None,
            secs,
            speed: BENCH,
            by_uid,
        },
    )
}

/// The share of all operations that the forty-file uid did.
fn share_of_many(r: &Report) -> f64 {
    let all: u64 = r.users.iter().map(|u| u.ops).sum();
    r.users[0].ops as f64 / all as f64
}

#[test]
fn a_user_of_forty_files_gets_one_users_share() {
    for seed in SEEDS {
        for secs in [20, 60] {
            let r = many_files_run(seed, secs, true);
            let ops: Vec<u64> = r.users.iter().map(|u| u.ops).collect();
            let j = jain(&ops);
            let gap = r.users.iter().map(|u| u.gap).max().unwrap();
            println!(
                "many files by uid {secs} s seed {seed}: Jain over uids {j:.3}, forty-file uid \
                 {:.1}% of {} ops, longest uid gap {} ms, refusals {}",
                100.0 * share_of_many(&r),
                ops.iter().sum::<u64>(),
                gap / (SEC / 1000),
                r.refusals
            );
            assert_eq!(r.users.len(), 21);
            assert_eq!(r.refusals, 0, "seed {seed}");
            assert_eq!(r.dups, 0, "seed {seed}");
            assert!(
                j >= 0.95,
                "seed {seed} {secs} s: Jain {j:.3} over uids {ops:?}"
            );
            assert!(gap <= 2 * T + SEC, "seed {seed} {secs} s: {:?}", r.users);
            // About 1/21 each: the forty-file uid gets one user's share, not most.
            assert!(share_of_many(&r) < 0.10, "seed {seed}: {ops:?}");
        }
    }
}

#[test]
fn by_file_a_user_of_forty_files_gets_forty_shares() {
    // The per-file behaviour (`fair_share_by_uid` off), for admins who want it: each open
    // file gets a share, so the forty-file uid gets most of the work.
    for seed in SEEDS {
        let r = many_files_run(seed, 20, false);
        let ops: Vec<u64> = r.users.iter().map(|u| u.ops).collect();
        println!(
            "many files by file seed {seed}: forty-file uid {:.1}% of {} ops, Jain over uids {:.3}",
            100.0 * share_of_many(&r),
            ops.iter().sum::<u64>(),
            jain(&ops)
        );
        assert_eq!(r.refusals, 0);
        assert!(share_of_many(&r) > 0.3, "seed {seed}: {ops:?}");
    }
}

/// 128 and 256 clients x 3 sessions, one uid and a uid each (issue 22): 384 and 768
/// sessions wanted, 62 in the budget (20 sets of 3). No refusal, every client progresses,
/// Jain >= 0.95, and a uid of one file each is served exactly as files of one uid. The
/// longest gap (from the start) is within issue 22's bound, ceil(demand / budget) x T + 1 s
/// (Documentation/tpmrs.rst, "At scale"): 12.9 s against 15 s, and 26.7-26.8 s against
/// 27 s. It took a first waiter that holds nothing breaking the jam at the start, and a
/// waiter that found no victim trying again when the first protection ends: before, they
/// were 14.9 s and 28.3-28.6 s.
#[test]
fn fair_share_at_scale() {
    for n in [128usize, 256] {
        let wants = vec![3; n];
        let uids: Vec<u32> = (0..n as u32).map(|i| 5000 + i).collect();
        let rounds = (3 * n as u64).div_ceil(62);
        for seed in [1u64, 2] {
            let one = |uids: &[u32]| {
                run(
                    seed,
                    &Workload {
                        slots: 64,
                        wants: &wants,
                        uids,
                        hog: None,
                        secs: 60,
                        speed: BENCH,
                        by_uid: true,
                    },
                )
            };
            let (r, each) = (one(&[]), one(&uids));
            let gap = *r.gaps.iter().max().unwrap();
            let j = jain(&r.ops);
            println!(
                "{n}x3 seed {seed}: Jain {j:.3} ops {} (fewest {}) longest gap {} ms (bound {} s) \
                 longest wait {} ms refusals {} evictions {}",
                r.ops.iter().sum::<u64>(),
                r.ops.iter().min().unwrap(),
                gap / (SEC / 1000),
                rounds * (T / SEC) + 1,
                r.longest_wait / (SEC / 1000),
                r.refusals,
                r.evictions
            );
            assert_eq!(r.refusals, 0);
            assert_eq!(r.dups, 0);
            assert!(
                r.ops.iter().all(|o| *o > 0),
                "{n}x3 seed {seed}: {:?}",
                r.ops
            );
            assert!(j >= 0.95, "{n}x3 seed {seed}: Jain {j:.3}");
            assert!(
                gap <= rounds * T + SEC,
                "{n}x3 seed {seed}: {} ms",
                gap / (SEC / 1000)
            );
            assert_eq!(r.ops, each.ops, "a uid each is served as one uid's files");
        }
    }
}
