// SPDX-License-Identifier: GPL-2.0
//! Resident contexts (`Config::resident`, issue 21) against a real swtpm (3 loaded object
//! and 3 loaded session slots): the traffic targets of issue 21 with HMAC sessions the TPM
//! checks, and contexts lost to a TPM power cycle with and without the suspend path.

mod common;

use common::marshal::*;
use common::swtpm::SwTpm;
use common::workload::{taking_turns, Signer};
use common::Harness;
use tpmrs_proto::Config;

const LAYER: u32 = 0xB_0000;

fn harness(resident: bool) -> Harness<SwTpm> {
    Harness::new(
        SwTpm::start(),
        Config {
            resident,
            ..Config::default()
        },
    )
}

fn per_command((client, tpm): (u64, u64)) -> f64 {
    tpm as f64 / client as f64
}

#[test]
fn swtpm_reports_three_loaded_slots_of_each_kind() {
    let h = harness(true);
    assert_eq!(h.rm.loaded_slots(), ((3, 3), (2, 2)));
}

#[test]
fn traffic_targets_of_issue_21() {
    let mut lines = Vec::new();
    for (clients, signs) in [(1, 100), (2, 50), (4, 25)] {
        let mut h = harness(true);
        let resident = taking_turns(&mut h, clients, signs, true);
        h.tpm.assert_empty();
        let mut h = harness(false);
        let eager = taking_turns(&mut h, clients, signs, true);
        h.tpm.assert_empty();
        lines.push(format!(
            "{clients} client(s): resident {resident:?} = {:.2}/cmd, eager {eager:?} = {:.2}/cmd",
            per_command(resident),
            per_command(eager)
        ));
        match clients {
            1 => assert!(per_command(resident) <= 1.2, "{lines:?}"),
            2 => assert!(per_command(resident) <= 1.3, "{lines:?}"),
            _ => assert!(resident.1 <= eager.1, "{lines:?}"),
        }
    }
    println!("{}", lines.join("\n"));
}

#[test]
fn suspend_then_a_power_cycle_keeps_clients_working() {
    let mut h = harness(true);
    let mut clients: Vec<Signer> = (0..2).map(|_| Signer::new(&mut h, true)).collect();
    for c in clients.iter_mut() {
        c.sign(&mut h);
    }
    assert_eq!(h.tpm.raw_handles(0x8000_0000).len(), 2);
    h.rm.suspend(&mut h.tpm);
    assert_eq!(h.tpm.raw_handles(0x8000_0000), vec![]);
    assert_eq!(h.tpm.raw_handles(0x0200_0000), vec![]);
    assert_eq!(h.tpm.raw_handles(0x0300_0000).len(), 2);
    h.tpm.suspend_resume();
    h.rm.resume();
    // Their sessions come back from their saved contexts, with their nonces: the HMACs of
    // the next signatures verify.
    for c in clients.iter_mut() {
        c.sign(&mut h);
        c.sign(&mut h);
    }
    assert_eq!(h.rm.stats().resident_lost, 0);
    for c in clients {
        c.finish(&mut h);
    }
    h.tpm.assert_empty();
}

#[test]
fn without_suspend_a_power_cycle_loses_residents_and_that_is_handled() {
    let mut h = harness(true);
    let mut a = Signer::new(&mut h, true);
    a.sign(&mut h);
    h.tpm.suspend_resume();
    // The key comes back from its blob; the session, only ever in the TPM, is gone and its
    // owner is told (RM-layer TPM_RC_HANDLE at session 1).
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    assert_eq!(rc(&r), LAYER | 0x98B, "{:#x}", rc(&r));
    assert_eq!(h.rm.stats().resident_lost, 2);
    assert!(h.rm.sessions().get(a.session).is_none());
    a.restart_session(&mut h);
    a.sign(&mut h);
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn a_tpm_reset_with_residents_loses_them_as_without_residency() {
    let mut h = harness(true);
    let mut a = Signer::new(&mut h, true);
    a.sign(&mut h);
    h.tpm.reset();
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    // The key's blob does not load after a reset: gone, as without residency.
    assert_eq!(rc(&r), LAYER | 0x18B, "{:#x}", rc(&r));
    assert!(a.space.objects().is_empty());
    h.close(&mut a.space);
    h.tpm.assert_empty();
}
