// SPDX-License-Identifier: GPL-2.0
//! What one handoff of the TPM costs in [`Turns`], by the number of waiting commands and of
//! uids: `cargo run --release --example turn_handoff`.
//!
//! Every space always has one command waiting (a closed loop: it asks again as soon as its
//! turn is over). A handoff is what the glue does between two commands: the next waiter
//! takes its turn, gives it back with a cost of one, and asks again. Prints nanoseconds per
//! handoff, and per handoff and waiter: the second column stays flat if a handoff costs a
//! constant per waiter.

use std::time::Instant;
use tpmrs_proto::{Space, Turn, Turns};

/// TPM2_Sign's header (only the header matters to the turns).
const SIGN: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x5D];

fn handoffs(waiters: u64, uids: u64, rounds: u64) -> f64 {
    let mut t = Turns::new(true);
    let mut spaces: Vec<Space> = (0..waiters)
        .map(|i| Space::new(i, (i % uids) as u32))
        .collect();
    let mut queued: Vec<Option<Turn>> = spaces
        .iter()
        .map(|s| Some(t.enter(s, &SIGN, false).expect("memory")))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        let i = t.next_space().expect("a command waits") as usize;
        let turn = queued[i].take().expect("its command waits");
        assert!(t.try_take(&turn), "the next command takes its turn");
        t.done(turn, &mut spaces[i], 1);
        queued[i] = Some(t.enter(&spaces[i], &SIGN, false).expect("memory"));
    }
    start.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    println!("| waiters | uids | ns per handoff | ns per handoff and waiter |");
    println!("|---|---|---|---|");
    for (waiters, uids) in [
        (32, 1),
        (32, 32),
        (256, 1),
        (256, 21),
        (256, 256),
        (1024, 1024),
    ] {
        handoffs(waiters, uids, 2_000);
        let ns = handoffs(waiters, uids, 20_000);
        println!(
            "| {waiters} | {uids} | {ns:.0} | {:.1} |",
            ns / waiters as f64
        );
    }
}
