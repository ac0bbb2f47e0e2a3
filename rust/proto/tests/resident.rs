// SPDX-License-Identifier: GPL-2.0
//! Resident contexts (`Config::resident`, issue 21) against the fake TPM: the traffic of the
//! issue's workloads, the reserve, eviction, and every path the eager context switch takes
//! (flush, close, client saves, waiters, contexts the TPM lost, suspend).

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::workload::{taking_turns, Signer};
use common::Harness;
use tpmrs_proto::{Config, Space};

const LAYER: u32 = 0xB_0000;

fn config(resident: bool) -> Config {
    Config {
        resident,
        ..Config::default()
    }
}

fn harness() -> Harness<FakeTpm> {
    Harness::new(FakeTpm::new(), config(true))
}

fn eager() -> Harness<FakeTpm> {
    Harness::new(FakeTpm::new(), config(false))
}

/// What the TPM holds loaded: (objects, sessions).
fn loaded(h: &Harness<FakeTpm>) -> (usize, usize) {
    (h.tpm.loaded_objects(), h.tpm.loaded_sessions())
}

/// A signer that signed once: its key and session stay loaded.
fn resident_signer(h: &mut Harness<FakeTpm>) -> Signer {
    let mut a = Signer::new(h, false);
    a.sign(h);
    assert_eq!(loaded(h), (1, 1));
    a
}

fn per_command((client, tpm): (u64, u64)) -> f64 {
    tpm as f64 / client as f64
}

#[test]
fn init_reads_the_loaded_slots_in_the_same_command() {
    let h = harness();
    let e = eager();
    // The command table (3 pages) and one GetCapability of properties, either way.
    assert_eq!(
        h.tpm.count(CC_GET_CAPABILITY),
        e.tpm.count(CC_GET_CAPABILITY)
    );
    assert_eq!(h.rm.session_budget(), Some(62));
    assert_eq!(h.rm.loaded_slots(), ((3, 3), (2, 2)));
    let mut t = FakeTpm::new();
    t.max_loaded_objects = 7;
    t.max_loaded_sessions = 4;
    let h = Harness::new(
        t,
        Config {
            reserve_objects: 2,
            reserve_sessions: 0,
            ..config(true)
        },
    );
    assert_eq!(h.rm.loaded_slots(), ((7, 4), (5, 4)));
}

#[test]
fn a_steady_client_costs_one_tpm_command_per_sign() {
    let mut h = harness();
    let resident = taking_turns(&mut h, 1, 100, false);
    h.tpm.assert_empty();
    let mut e = eager();
    let eager = taking_turns(&mut e, 1, 100, false);
    // Issue 21: at most 1.2 (eager: 5 per sign, load key and session, sign, save, flush).
    assert!(per_command(resident) <= 1.2, "{resident:?}");
    assert!(per_command(eager) > 4.8, "{eager:?}");
    // CreatePrimary + save, StartAuthSession, 100 signs, the two flushes.
    assert_eq!(resident, (104, 105));
}

#[test]
fn two_clients_taking_turns_fit() {
    let mut h = harness();
    let r = taking_turns(&mut h, 2, 50, false);
    println!("two clients: {r:?}");
    assert!(per_command(r) <= 1.3, "{r:?}");
    h.tpm.assert_empty();
}

#[test]
fn four_clients_cost_no_more_than_without_residency() {
    let mut h = harness();
    let r = taking_turns(&mut h, 4, 25, false);
    let mut e = eager();
    let eager = taking_turns(&mut e, 4, 25, false);
    println!("four clients: resident {r:?}, eager {eager:?}");
    assert!(r.1 <= eager.1, "resident {r:?}, eager {eager:?}");
    assert_eq!(r.0, eager.0);
    h.tpm.assert_empty();
}

#[test]
fn the_reserve_stays_free_between_commands() {
    let mut h = harness();
    let mut clients: Vec<Signer> = (0..3).map(|_| Signer::new(&mut h, false)).collect();
    for _ in 0..3 {
        for c in clients.iter_mut() {
            c.sign(&mut h);
            // 3 slots of each kind, 1 kept free.
            assert!(h.tpm.loaded_objects() <= 2);
            assert!(h.tpm.loaded_sessions() <= 2);
        }
    }
    let stats = h.rm.stats();
    assert_eq!(stats.resident_objects, 2);
    assert_eq!(stats.resident_sessions, 2);
    assert!(stats.resident_evictions > 0);
    for c in clients {
        c.finish(&mut h);
    }
    h.tpm.assert_empty();
    assert_eq!(h.rm.stats().resident_objects, 0);
}

#[test]
fn residency_off_sends_the_eager_traffic() {
    // resident = 0: the same commands in the same order as before residency existed.
    let mut e = eager();
    let mut c = Signer::new(&mut e, false);
    e.tpm.log.clear();
    c.sign(&mut e);
    assert_eq!(
        e.tpm.log,
        vec![
            CC_CONTEXT_LOAD,
            CC_CONTEXT_LOAD,
            CC_SIGN,
            CC_CONTEXT_SAVE,
            CC_FLUSH_CONTEXT
        ]
    );
    assert_eq!(e.rm.stats().resident_objects, 0);
}

#[test]
fn outsiders_holding_slots_make_residents_give_way() {
    let mut h = harness();
    let mut a = resident_signer(&mut h);
    // A /dev/tpm0 user holds two sessions loaded: with a's resident session the TPM is full.
    h.tpm.external_loaded_session();
    h.tpm.external_loaded_session();
    let mut b = h.space();
    let r = h.success(&mut b, &start_auth_session(SE_HMAC, &[3; 16]));
    let s = rhandle(&r);
    // a's session was saved to make way (once), and a still signs.
    assert!(h.rm.sessions().get(a.session).unwrap().state.is_saved());
    assert!(h.rm.sessions().get(s).unwrap().state.is_loaded());
    h.success(&mut b, &flush_context(s));
    a.sign(&mut h);
    // Objects likewise: the TPM refuses a load only if outsiders hold every slot.
    let mut k = h.space();
    for _ in 0..2 {
        h.success(&mut k, &create_primary(&ecc_signing_public(&[])));
    }
    assert_eq!(h.tpm.loaded_objects(), 2);
    h.close(&mut k);
    h.close(&mut b);
    a.finish(&mut h);
}

#[test]
fn flush_and_close_of_residents() {
    let mut h = harness();
    let mut s = h.space();
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let sess = rhandle(&h.success(&mut s, &start_auth_session(SE_POLICY, &[1; 16])));
    assert_eq!(loaded(&h), (1, 1));
    let before = h.tpm_commands();
    h.success(&mut s, &flush_context(key));
    assert_eq!(h.tpm_commands() - before, 1, "the resident key is flushed");
    assert_eq!(h.tpm.loaded_objects(), 0);
    h.success(&mut s, &flush_context(sess));
    assert_eq!(h.tpm.loaded_sessions(), 0);
    // Close flushes whatever is resident.
    h.success(&mut s, &create_primary(&ecc_signing_public(&[])));
    h.success(&mut s, &start_auth_session(SE_POLICY, &[1; 16]));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn client_context_save_and_load_of_residents() {
    let mut h = harness();
    let mut s = h.space();
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let sess = rhandle(&h.success(&mut s, &start_auth_session(SE_POLICY, &[1; 16])));
    // The resident key's context, saved by the client: it stays resident.
    let r = h.success(&mut s, &context_save(key));
    let blob = context_save_blob(&r);
    let copy = rhandle(&h.success(&mut s, &context_load(&blob)));
    assert_ne!(copy, key);
    h.success(&mut s, &sign(copy, Auth::pw(KEY_AUTH)));
    // The resident session, saved by the client: saved, no longer resident.
    let r = h.success(&mut s, &context_save(sess));
    let e = h.rm.sessions().get(sess).unwrap();
    assert!(e.state.is_saved() && !e.resident);
    let again = rhandle(&h.success(&mut s, &context_load(&context_save_blob(&r))));
    assert_eq!(again, sess);
    h.success(&mut s, &sign(key, Auth::policy(sess, true, KEY_AUTH)));
    assert!(h.rm.sessions().get(sess).unwrap().is_resident());
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn sequence_objects_are_not_resident() {
    let mut h = harness();
    let mut s = h.space();
    let seq = rhandle(&h.success(&mut s, &hash_sequence_start()));
    assert_eq!(h.tpm.loaded_objects(), 0);
    h.tpm.log.clear();
    h.success(&mut s, &sequence_update(seq, b"abc"));
    assert_eq!(
        h.tpm.log,
        vec![
            CC_CONTEXT_LOAD,
            CC_SEQUENCE_UPDATE,
            CC_CONTEXT_SAVE,
            CC_FLUSH_CONTEXT
        ]
    );
    h.success(&mut s, &sequence_complete(seq, b"def"));
    assert!(h.rm.resident_objects().is_empty());
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn a_lost_resident_object_is_loaded_again() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    let p = h.rm.resident_objects()[0].phandle;
    // Flushed through /dev/tpm0 behind tpmrs' back.
    h.tpm.drop_object(p);
    h.tpm.log.clear();
    a.sign(&mut h);
    // The TPM's answer, the check that the key is gone, its reload, the command again.
    assert_eq!(
        h.tpm.log,
        vec![CC_SIGN, CC_GET_CAPABILITY, CC_CONTEXT_LOAD, CC_SIGN]
    );
    assert_eq!(h.rm.stats().resident_lost, 1);
    assert_eq!(h.rm.resident_objects().len(), 1);
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn a_lost_resident_session_is_forgotten_and_its_owner_told() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    h.tpm.drop_session(a.session);
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    assert_eq!(rc(&r), LAYER | 0x98B, "RM-layer TPM_RC_HANDLE at session 1");
    assert!(h.rm.sessions().get(a.session).is_none());
    assert_eq!(h.rm.stats().resident_lost, 1);
    // The key, resident and untouched, still works with a new session.
    a.restart_session(&mut h);
    a.sign(&mut h);
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn a_lost_resident_session_whose_number_another_space_gets_is_told_to_its_owner() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    let lost = a.session;
    // Flushed through /dev/tpm0 behind tpmrs' back: the TPM's lowest free number is free.
    h.tpm.drop_session(lost);
    let mut b = h.space();
    let sb = rhandle(&h.success(&mut b, &start_auth_session(SE_HMAC, &[2; 16])));
    assert_eq!(sb, lost, "the TPM hands the lost number out again");
    assert_eq!(h.rm.stats().resident_lost, 1);
    // a's next reference to its old number never reaches b's session (a stale nonce there
    // is an HMAC failure the TPM may count against the dictionary-attack lockout): a gets
    // what a lost session gets, TPM_RC_HANDLE at session 1 in the RM layer.
    h.tpm.log.clear();
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    assert_eq!(rc(&r), LAYER | 0x98B);
    assert!(
        h.tpm.log.is_empty(),
        "answered without the TPM: {:?}",
        h.tpm.log
    );
    assert_eq!(h.rm.sessions().get(sb).and_then(|e| e.owner), Some(b.id()));
    // b's session is b's, and works.
    h.success(&mut b, &policy_password(sb));
    a.restart_session(&mut h);
    a.sign(&mut h);
    a.finish(&mut h);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn a_tpm_reset_with_residents_is_handled_as_without() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    h.tpm.reset();
    // The key's blob no longer loads after a reset: the key is gone, as without residency.
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    assert_eq!(rc(&r), LAYER | 0x18B, "RM-layer TPM_RC_HANDLE at handle 1");
    assert!(a.space.objects().is_empty());
    assert!(h.rm.resident_objects().is_empty());
    // The session: the client hears of it at its next use.
    let r = h.ok(
        &mut a.space,
        &command(CC_POLICY_PASSWORD, &[a.session], &[], &[]),
    );
    assert_eq!(rc(&r), LAYER | 0x18B);
    assert!(h.rm.sessions().get(a.session).is_none());
    h.close(&mut a.space);
    h.tpm.assert_empty();
}

#[test]
fn suspend_saves_everything_and_resume_keeps_it_working() {
    let mut h = harness();
    let mut clients: Vec<Signer> = (0..2).map(|_| Signer::new(&mut h, false)).collect();
    for c in clients.iter_mut() {
        c.sign(&mut h);
    }
    assert_eq!(loaded(&h), (2, 2));
    h.rm.suspend(&mut h.tpm);
    assert_eq!(loaded(&h), (0, 0));
    assert_eq!(h.rm.stats().resident_sessions, 0);
    // Until resume, commands run without residency.
    clients[0].sign(&mut h);
    assert_eq!(loaded(&h), (0, 0));
    // TPM2_Shutdown(STATE), power cycle, TPM2_Startup(STATE): what was saved comes back.
    h.tpm.resume();
    h.rm.resume();
    for c in clients.iter_mut() {
        c.sign(&mut h);
    }
    assert_eq!(h.rm.stats().resident_lost, 0);
    assert_eq!(loaded(&h), (2, 2));
    for c in clients {
        c.finish(&mut h);
    }
    h.tpm.assert_empty();
}

#[test]
fn a_suspend_without_the_tpm_makes_nothing_resident_until_resume() {
    let mut h = harness();
    let mut a = resident_signer(&mut h);
    // The chip could not be taken: nothing was saved, and nothing used becomes resident
    // (the session is saved after the sign, the key loaded from its blob and flushed, as
    // without residency). The resident copy of the key stays where it was, out of reach:
    // a power cycle would lose it, and `rm/lost.rs` finds out.
    h.rm.suspend_unreachable();
    a.sign(&mut h);
    assert_eq!(h.rm.stats().resident_sessions, 0);
    assert_eq!(loaded(&h), (1, 0));
    h.rm.resume();
    a.sign(&mut h);
    assert_eq!(loaded(&h), (1, 1));
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn without_suspend_a_power_cycle_is_detected() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    h.tpm.resume();
    // The key comes back from its blob (saved contexts survive a resume); the session was
    // only in the TPM: its owner is told.
    let cmd = a.sign_command();
    let r = h.ok(&mut a.space, &cmd);
    assert_eq!(rc(&r), LAYER | 0x98B);
    assert_eq!(h.rm.stats().resident_lost, 2);
    h.success(&mut a.space, &sign(a.key, Auth::pw(KEY_AUTH)));
    h.close(&mut a.space);
    h.tpm.assert_empty();
}

#[test]
fn loaded_session_lists_show_a_resident_session_to_its_space_only() {
    let mut h = harness();
    let mut a = h.space();
    let mut b = h.space();
    let sa = rhandle(&h.success(&mut a, &start_auth_session(SE_POLICY, &[1; 16])));
    let sb = rhandle(&h.success(&mut b, &start_auth_session(SE_POLICY, &[1; 16])));
    let list = |h: &mut Harness<FakeTpm>, s: &mut Space, first| {
        handles_of(&h.success(s, &get_capability(CAP_HANDLES, first, 16))).1
    };
    assert_eq!(list(&mut h, &mut a, 0x0200_0000), vec![sa]);
    assert_eq!(list(&mut h, &mut b, 0x0200_0000), vec![sb]);
    assert_eq!(list(&mut h, &mut a, 0x0300_0000), vec![]);
    let key = rhandle(&h.success(&mut a, &create_primary(&ecc_signing_public(&[]))));
    assert_eq!(list(&mut h, &mut a, 0x8000_0000), vec![key]);
    assert_eq!(list(&mut h, &mut b, 0x8000_0000), vec![]);
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn a_resident_session_holds_no_context_gap_back() {
    let mut h = harness();
    h.tpm.gap_max = Some(8);
    let mut a = Signer::new(&mut h, false);
    // Another space's saved session, the oldest context: repaired when the gap is reached.
    let mut b = h.space();
    let sb = rhandle(&h.success(&mut b, &start_auth_session(SE_POLICY, &[1; 16])));
    let mut c = h.space();
    // c's sessions churn through saves (three spaces: someone is always evicted).
    let mut others: Vec<Signer> = (0..2).map(|_| Signer::new(&mut h, false)).collect();
    for _ in 0..12 {
        a.sign(&mut h);
        for o in others.iter_mut() {
            o.sign(&mut h);
        }
    }
    assert!(h.rm.stats().gap_repairs > 0);
    assert!(h.rm.sessions().get(sb).is_some(), "renewed, not evicted");
    for o in others {
        o.finish(&mut h);
    }
    h.close(&mut c);
    h.close(&mut b);
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn a_number_lost_behind_our_back_is_never_used_for_the_old_object() {
    let mut h = harness();
    let mut a = Signer::new(&mut h, false);
    a.sign(&mut h);
    let p = h.rm.resident_objects()[0].phandle;
    h.tpm.drop_object(p);
    // Another space's new object gets the freed number: the stale entry goes.
    let mut b = h.space();
    let kb = rhandle(&h.success(&mut b, &create_primary(&ecc_signing_public(&[]))));
    assert_eq!(h.rm.stats().resident_lost, 1);
    let mine = |h: &Harness<FakeTpm>, space: u64| {
        h.rm.resident_objects()
            .iter()
            .filter(|o| o.space == space)
            .map(|o| o.phandle)
            .collect::<Vec<_>>()
    };
    assert_eq!(mine(&h, b.id()), vec![p]);
    assert_eq!(mine(&h, a.space.id()), vec![]);
    // a's key loads again from its blob, under another number.
    h.tpm.log.clear();
    a.sign(&mut h);
    assert_eq!(h.tpm.log[..2], [CC_CONTEXT_LOAD, CC_SIGN]);
    let pa = mine(&h, a.space.id());
    assert_eq!(pa.len(), 1);
    assert_ne!(pa[0], p);
    h.success(&mut b, &flush_context(kb));
    h.close(&mut b);
    a.finish(&mut h);
    h.tpm.assert_empty();
}

#[test]
fn a_load_that_gets_a_lost_residents_number_loads_that_one_again() {
    let mut h = harness();
    let mut s = h.space();
    let k1 = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let k2 = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    // k2 is made not resident (evicted by a third object), k1 stays resident.
    h.success(&mut s, &sign(k1, Auth::pw(KEY_AUTH)));
    let k3 = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    h.success(&mut s, &sign(k1, Auth::pw(KEY_AUTH)));
    let resident: Vec<u32> = h.rm.resident_objects().iter().map(|o| o.vhandle).collect();
    assert!(
        resident.contains(&k1) && !resident.contains(&k2),
        "{resident:x?}"
    );
    let p1 =
        h.rm.resident_objects()
            .iter()
            .find(|o| o.vhandle == k1)
            .unwrap()
            .phandle;
    let others: Vec<u32> = h.tpm.object_handles();
    // k1 is lost behind tpmrs' back; the only free number is now k1's.
    h.tpm.drop_object(p1);
    assert!(others.len() == 2 && !h.tpm.object_handles().contains(&p1));
    h.success(&mut s, &flush_context(k3));
    // A command naming k1 (resident, lost) and k2 (to be loaded): k2's load gets k1's
    // number, so k1 is loaded again from its blob for this very command.
    h.tpm.log.clear();
    let r = h.ok(
        &mut s,
        &command(
            CC_START_AUTH_SESSION,
            &[k1, k2],
            &[],
            &start_auth_session(SE_HMAC, &[1; 16])[18..],
        ),
    );
    assert_eq!(rc(&r), 0, "{:#x}", rc(&r));
    assert_eq!(
        h.tpm.log,
        vec![CC_CONTEXT_LOAD, CC_CONTEXT_LOAD, CC_START_AUTH_SESSION]
    );
    assert_eq!(h.rm.stats().resident_lost, 1);
    h.close(&mut s);
    h.tpm.assert_empty();
}
