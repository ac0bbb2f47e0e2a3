// SPDX-License-Identifier: GPL-2.0
//! Deterministic tests of the pipeline against a fake TPM with fault injection.

mod common;

use common::fake::{FakeTpm, Fault, CC_VENDOR};
use common::marshal::*;
use common::rc::*;
use common::Harness;
use tpmrs_proto::{Config, Rm, RmError, Space, TransportError, TPM_BUFSIZE};

fn harness() -> Harness<FakeTpm> {
    Harness::new(FakeTpm::new(), Config::default())
}

fn new_key(h: &mut Harness<FakeTpm>, s: &mut Space) -> u32 {
    let r = h.success(s, &create_primary(&ecc_signing_public(&[])));
    rhandle(&r)
}

fn new_session(h: &mut Harness<FakeTpm>, s: &mut Space) -> u32 {
    let r = h.success(s, &start_auth_session(SE_POLICY, &[1; 16]));
    rhandle(&r)
}

/// Session `h` in the HMAC form, as the TPM lists saved sessions.
fn hmac_form(h: u32) -> u32 {
    0x0200_0000 | (h & 0x00FF_FFFF)
}

#[test]
fn init_follows_more_data() {
    let h = harness();
    // 13 commands, 5 per page: 3 GetCapability round trips, then TPM_PT_ACTIVE_SESSIONS_MAX.
    assert_eq!(h.tpm.count(CC_GET_CAPABILITY), 4);
    assert_eq!(h.rm.session_budget(), Some(62));
    assert_eq!(h.rm.command_table().len(), 13);
    assert!(h.rm.command_table().lookup(CC_VENDOR).unwrap().vendor());
    assert_eq!(h.rm.command_table().lookup(CC_VENDOR & 0xFFFF), None);
}

#[test]
fn init_errors() {
    let mut rm = Rm::new(Config::default()).unwrap();
    let mut t = FakeTpm::new();
    t.down = true;
    assert_eq!(rm.init(&mut t), Err(RmError::Transport(-19)));
    let mut sp = rm.new_space(common::UID).unwrap();
    let mut rsp = vec![0; TPM_BUFSIZE];
    assert_eq!(
        rm.execute(&mut sp, &mut t, 0, None, &get_random(8), &mut rsp),
        Err(RmError::NotInitialized)
    );
    t.down = false;
    t.fail(CC_GET_CAPABILITY, 1, Fault::Rc(TPM_RC_FAILURE));
    assert_eq!(rm.init(&mut t), Err(RmError::BadResponse));
    t.fail(CC_GET_CAPABILITY, 0, Fault::Garbage);
    assert_eq!(rm.init(&mut t), Err(RmError::BadResponse));
    assert_eq!(rm.init(&mut t), Ok(()));
    assert_eq!(rm.session_budget(), Some(62));
    // A TPM that does not answer TPM_PT_ACTIVE_SESSIONS_MAX leaves the bound to the TPM's
    // own TPM_RC_SESSION_HANDLES; the command table is still read.
    t.fail(CC_GET_CAPABILITY, 3, Fault::Rc(TPM_RC_FAILURE));
    assert_eq!(rm.init(&mut t), Ok(()));
    assert_eq!(rm.session_budget(), None);
    assert_eq!(rm.command_table().len(), 13);
    t.fail(CC_GET_CAPABILITY, 3, Fault::Garbage);
    assert_eq!(rm.init(&mut t), Ok(()));
    assert_eq!(rm.session_budget(), None);
}

#[test]
fn space_ids_are_unique() {
    let mut h = harness();
    let a = h.space();
    let b = h.space();
    assert_ne!(a.id(), b.id());
}

/// The kernel's tpm2 selftests (tpm2.py `get_cap`) walk TPM_CAP_HANDLES one handle at a
/// time with `property += 1` until moreData is clear: that only ends if virtual handles are
/// dense and ascending from 0x80000000, as the TPM's own are.
#[test]
fn capability_walk_of_the_kernel_selftests_terminates() {
    let mut h = harness();
    let mut s = h.space();
    new_key(&mut h, &mut s);
    new_key(&mut h, &mut s);
    let mut pt = 0x8000_0000u32;
    let mut seen = Vec::new();
    loop {
        let (more, list) = handles_of(&h.success(&mut s, &get_capability(CAP_HANDLES, pt, 1)));
        seen.extend(list);
        pt += 1;
        if more == 0 {
            break;
        }
        assert!(seen.len() < 10, "walk does not end: {seen:x?}");
    }
    assert_eq!(seen, vec![0x8000_0000, 0x8000_0001]);
}

#[test]
fn sign_costs_five_and_leaves_nothing_loaded() {
    let mut h = harness();
    let mut s = h.space();
    let key = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    assert_eq!(key, 0x8000_0000);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    let before = h.tpm_commands();
    h.success(&mut s, &sign(key, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(h.tpm_commands() - before, 5);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    let before = h.tpm_commands();
    h.success(&mut s, &get_random(8));
    assert_eq!(h.tpm_commands() - before, 1);
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn object_load_resource_error_is_returned_and_entry_kept() {
    let mut h = harness();
    let mut s = h.space();
    let k1 = new_key(&mut h, &mut s);
    let k2 = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    // Second ContextLoad (the session) fails with TPM_RC_OBJECT_MEMORY... use a 2-object
    // command: the vendor command has one handle, so fail the object load itself.
    h.tpm
        .fail(CC_CONTEXT_LOAD, 0, Fault::Rc(TPM_RC_OBJECT_MEMORY));
    let r = h.ok(&mut s, &sign(k1, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), 0x902);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    // Session load fails with TPM_RC_SESSION_MEMORY after the key was loaded: the key is
    // flushed again, both entries kept, and the caller is told to wait for a session slot.
    h.tpm
        .fail(CC_CONTEXT_LOAD, 1, Fault::Rc(TPM_RC_SESSION_MEMORY));
    assert_eq!(
        h.exec(&mut s, &sign(k2, Auth::policy(sess, true, KEY_AUTH))),
        Err(RmError::SessionsExhausted)
    );
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    // Everything still works.
    h.success(&mut s, &sign(k1, Auth::policy(sess, true, KEY_AUTH)));
    h.success(&mut s, &sign(k2, Auth::policy(sess, true, KEY_AUTH)));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn object_load_other_error_drops_entry() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    h.tpm.fail(CC_CONTEXT_LOAD, 0, Fault::Rc(TPM_RC_INTEGRITY)); // TPM_RC_INTEGRITY-like
    let r = h.ok(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert_eq!(rc(&r), rm(rc_handle_at_handle(1)));
    assert_eq!(
        h.exec(&mut s, &sign(k, Auth::pw(KEY_AUTH))),
        Err(RmError::InvalidCommand)
    );
    h.tpm.assert_empty();
}

#[test]
fn session_load_failure_forgets_session() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    h.tpm
        .fail(CC_CONTEXT_LOAD, 1, Fault::Rc(rc_handle_at_handle(1)));
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), rm(rc_handle_at_session(1)));
    assert!(h.rm.sessions().get(sess).is_none());
    assert_eq!(h.tpm.loaded_objects(), 0);
    // Now unknown: a handle error from the RM, nothing sent.
    let before = h.tpm_commands();
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), rm(rc_handle_at_session(1)));
    assert_eq!(h.tpm_commands(), before);
    // The fake still holds the (saved) session: we forgot it, as tpmrm0 would.
    assert_eq!(h.tpm.sessions(), vec![sess]);
}

#[test]
fn session_save_failures() {
    let mut h = harness();
    let mut s = h.space();
    let s1 = new_session(&mut h, &mut s);
    // Reference error on save: the session is gone, forget it, no flush.
    h.tpm
        .fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_REFERENCE_H0));
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    h.success(&mut s, &policy_password(s1));
    assert!(h.rm.sessions().get(s1).is_none());
    assert_eq!(h.tpm.count(CC_FLUSH_CONTEXT), flushes);
    // TPM_RC_CONTEXT_GAP with nothing to renew: flushed and forgotten.
    let s2 = new_session(&mut h, &mut s);
    h.tpm
        .fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_CONTEXT_GAP));
    h.success(&mut s, &policy_password(s2));
    assert!(h.rm.sessions().get(s2).is_none());
    assert!(!h.tpm.sessions().contains(&s2));
    // "Not executed" on every try: the session stays as it was (loaded, registered), and
    // its next use saves it.
    let s3 = new_session(&mut h, &mut s);
    let loaded = h.tpm.loaded_sessions(); // s1 is still loaded in the fake: we forgot it
    for _ in 0..3 {
        h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_RETRY));
    }
    h.success(&mut s, &policy_password(s3));
    assert!(h.rm.sessions().get(s3).unwrap().state.is_loaded());
    assert_eq!(h.tpm.loaded_sessions(), loaded + 1);
    h.success(&mut s, &policy_password(s3));
    assert!(h.rm.sessions().get(s3).unwrap().state.is_saved());
    assert_eq!(h.tpm.loaded_sessions(), loaded);
    h.close(&mut s);
    h.tpm.drop_session(s1);
    h.tpm.assert_empty();
}

#[test]
fn new_session_save_failure_on_start_auth_session() {
    let mut h = harness();
    let mut s = h.space();
    h.tpm
        .fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_CONTEXT_GAP));
    let r = h.ok(&mut s, &start_auth_session(SE_HMAC, &[1; 16]));
    assert_eq!(rc(&r), 0); // the command itself worked, the session is flushed
    assert!(h.rm.sessions().is_empty());
    h.tpm.assert_empty();
}

#[test]
fn new_object_save_failure() {
    let mut h = harness();
    let mut s = h.space();
    // A "not executed" warning on the save of the new object is tried again.
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_RETRY));
    let r = h.ok(&mut s, &create_primary(&ecc_signing_public(&[])));
    assert_eq!(rc(&r), 0);
    assert_eq!(s.objects().len(), 1);
    assert_eq!(h.tpm.loaded_objects(), 0);
    // On every try (issue 20, item 8): the TPM ran the command, so its answer stands, with
    // a virtual handle; the object stays loaded without a blob. (Answered with the warning,
    // ESAPI would run the command again with the nonces it already used.)
    for _ in 0..3 {
        h.tpm
            .fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_OBJECT_MEMORY));
    }
    let r = h.ok(&mut s, &create_primary(&ecc_signing_public(&[])));
    assert_eq!(rc(&r), 0);
    let k = rhandle(&r);
    assert_eq!(s.objects().len(), 2);
    assert_eq!(h.tpm.loaded_objects(), 1);
    let obj = s.object(k).unwrap();
    assert!(obj.loaded.is_some() && obj.blob.is_none());
    // Its next use finds it where it is, and saves it after.
    let loads = h.tpm.count(CC_CONTEXT_LOAD);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert_eq!(h.tpm.count(CC_CONTEXT_LOAD), loads, "used where it is");
    let obj = s.object(k).unwrap();
    assert!(obj.loaded.is_none() && obj.blob.is_some());
    assert_eq!(h.tpm.loaded_objects(), 0);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    // Another error on the save (here TPM_RC_TOO_MANY_CONTEXTS): the same.
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(0x12E));
    let k2 = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    assert!(s.object(k2).unwrap().loaded.is_some());
    assert_eq!(h.tpm.loaded_objects(), 1);
    // Kept loaded at close: flushed.
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn transport_failure_on_command_cleans_up() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    h.tpm.fail(CC_SIGN, 0, Fault::Transport(-62));
    assert_eq!(
        h.exec(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH))),
        Err(RmError::Transport(-62))
    );
    assert_eq!(RmError::Transport(-62).to_errno(), -62);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn transport_failure_on_flush_is_settled_at_once() {
    // The key's flush after a sign fails on the transport: still holding the chip, the RM
    // asks the TPM whether the object is there (it is) and flushes it again. The sign's
    // own answer stands (issue 20, item 8: never an errno in place of what the TPM ran);
    // nothing stays queued or loaded.
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Transport(-5));
    let r = h.exec(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert_eq!(r.map(|r| rc(&r)), Ok(0));
    assert!(h.rm.pending_flushes().is_empty());
    assert!(h.rm.unverified_flushes().is_empty());
    assert_eq!(h.tpm.loaded_objects(), 0);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn close_with_transport_down_gives_up_what_it_cannot_check() {
    // The transport is down for the whole close: the flushes and the checks fail. When the
    // TPM answers again, both sessions are still there, and tpmrs cannot tell them from
    // sessions another user got meanwhile: it gives them up rather than guess (counted).
    let mut h = harness();
    let mut a = h.space();
    let mut b = h.space();
    let s1 = new_session(&mut h, &mut a);
    let s2 = new_session(&mut h, &mut a);
    new_key(&mut h, &mut a);
    h.tpm.down = true;
    h.close(&mut a);
    assert_eq!(h.rm.unverified_flushes().len(), 2);
    assert_eq!(h.rm.stats().pending_flushes, 2);
    assert!(h.rm.sessions().is_empty());
    h.tpm.down = false;
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    h.success(&mut b, &get_random(4));
    assert_eq!(
        h.tpm.count(CC_FLUSH_CONTEXT),
        flushes,
        "never flushed blind"
    );
    assert!(h.rm.unverified_flushes().is_empty());
    assert_eq!(h.rm.stats().flushes_given_up, 2);
    let mut left = h.tpm.sessions();
    left.sort_unstable();
    assert_eq!(left, vec![s1.min(s2), s1.max(s2)]);
    for s in left {
        h.tpm.drop_session(s);
    }
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn transport_failure_on_save_of_new_object() {
    // The CreatePrimary ran; the save of the new object fails on the transport: the answer
    // is the TPM's, with a virtual handle, and the object stays loaded (a save flushes
    // nothing), saved after its next use (issue 20, item 8).
    let mut h = harness();
    let mut s = h.space();
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Transport(-5));
    let r = h.exec(&mut s, &create_primary(&ecc_signing_public(&[])));
    let k = rhandle(&r.expect("the TPM's answer"));
    assert_eq!(s.objects().len(), 1);
    assert!(s.object(k).unwrap().loaded.is_some());
    assert_eq!(h.tpm.loaded_objects(), 1);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert!(s.object(k).unwrap().blob.is_some());
    assert_eq!(h.tpm.loaded_objects(), 0);
    h.success(&mut s, &get_random(4));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn lost_response_of_context_load() {
    // The TPM loads the object but the response is lost: it stays loaded (we cannot know
    // its handle) -- the one leak nothing can avoid. It is exactly that one object: the RM
    // must not crash, and the space keeps working and leaves nothing else behind.
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    h.tpm.fail(CC_CONTEXT_LOAD, 0, Fault::TransportAfter(-5));
    assert_eq!(
        h.exec(&mut s, &sign(k, Auth::pw(KEY_AUTH))),
        Err(RmError::Transport(-5))
    );
    assert_eq!(h.tpm.loaded_objects(), 1, "the one lost load");
    assert_eq!(s.objects().len(), 1);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert_eq!(h.tpm.loaded_objects(), 1, "nothing more left loaded");
    h.close(&mut s);
    assert_eq!(h.tpm.loaded_objects(), 1);
    assert!(h.tpm.sessions().is_empty());
}

#[test]
fn malformed_tpm_response_is_eio() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    h.tpm.fail(CC_SIGN, 0, Fault::Garbage);
    let e = h.exec(&mut s, &sign(k, Auth::pw(KEY_AUTH))).unwrap_err();
    assert_eq!(e, RmError::BadResponse);
    assert_eq!(e.to_errno(), -5);
    assert_eq!(h.tpm.loaded_objects(), 0);
}

#[test]
fn sequence_objects_are_resaved() {
    let mut h = harness();
    let mut s = h.space();
    let seq = rhandle(&h.success(&mut s, &hash_sequence_start()));
    assert!(s.objects()[0].sequence);
    let before = h.tpm_commands();
    h.success(&mut s, &sequence_update(seq, b"a"));
    // load, update, save, flush
    assert_eq!(h.tpm_commands() - before, 4);
    h.success(&mut s, &sequence_update(seq, b"b"));
    let before = h.tpm_commands();
    let r = h.success(&mut s, &sequence_complete(seq, b""));
    assert_eq!(u32_at(&r, 10), 2, "both updates were kept");
    // load, complete (the TPM flushed it): nothing else.
    assert_eq!(h.tpm_commands() - before, 2);
    assert!(s.objects().is_empty());
    h.tpm.assert_empty();
}

#[test]
fn warnings_on_the_resave_of_a_sequence_keep_it() {
    let mut h = harness();
    let mut s = h.space();
    let seq = rhandle(&h.success(&mut s, &hash_sequence_start()));
    // Once: tried again, saved.
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_RETRY)); // TPM_RC_RETRY
    h.success(&mut s, &sequence_update(seq, b"a"));
    assert_eq!(s.objects().len(), 1);
    assert_eq!(h.tpm.loaded_objects(), 0);
    // On every try: its state is only in the TPM, so it stays loaded there (not dropped,
    // and its stale blob never used), and the next command uses it and saves it.
    for _ in 0..3 {
        h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_YIELDED)); // TPM_RC_YIELDED
    }
    h.success(&mut s, &sequence_update(seq, b"b"));
    assert_eq!(s.objects().len(), 1);
    assert_eq!(h.tpm.loaded_objects(), 1);
    assert!(s.object(seq).unwrap().loaded.is_some());
    let loads = h.tpm.count(CC_CONTEXT_LOAD);
    h.success(&mut s, &sequence_update(seq, b"c"));
    assert_eq!(h.tpm.count(CC_CONTEXT_LOAD), loads, "used where it is");
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert!(s.object(seq).unwrap().loaded.is_none());
    // Kept loaded at close: flushed.
    for _ in 0..3 {
        h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(TPM_RC_RETRY));
    }
    h.success(&mut s, &sequence_update(seq, b"d"));
    assert_eq!(h.tpm.loaded_objects(), 1);
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn continue_session_accounting() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    // Failure: the session lives on.
    h.tpm
        .fail(CC_SIGN, 0, Fault::Rc(rc_at_session(TPM_RC_AUTH_FAIL, 1)));
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, false, KEY_AUTH)));
    assert_eq!(rc(&r), 0x98E);
    assert!(h.rm.sessions().get(sess).is_some());
    // Success with continueSession clear: the TPM ended it; no save attempted.
    let saves = h.tpm.count(CC_CONTEXT_SAVE);
    h.success(&mut s, &sign(k, Auth::policy(sess, false, KEY_AUTH)));
    assert_eq!(h.tpm.count(CC_CONTEXT_SAVE), saves);
    assert!(h.rm.sessions().get(sess).is_none());
    h.tpm.assert_empty_sessions_and(0);
}

trait Extra {
    fn assert_empty_sessions_and(&self, objects: usize);
}

impl Extra for FakeTpm {
    fn assert_empty_sessions_and(&self, objects: usize) {
        assert_eq!(self.sessions(), vec![]);
        assert_eq!(self.loaded_objects(), objects);
    }
}

#[test]
fn per_space_session_limit() {
    let mut h = Harness::new(
        FakeTpm::new(),
        Config {
            max_objects: 64,
            max_sessions: 2,
            ..Config::default()
        },
    );
    let mut s = h.space();
    new_session(&mut h, &mut s);
    new_session(&mut h, &mut s);
    let r = h.ok(&mut s, &start_auth_session(SE_HMAC, &[1; 16]));
    assert_eq!(rc(&r), rm(TPM_RC_SESSION_MEMORY));
    assert_eq!(h.tpm.sessions().len(), 2);
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn capability_handles_are_filtered_per_space() {
    let mut h = harness();
    let mut a = h.space();
    let mut b = h.space();
    let sa = new_session(&mut h, &mut a);
    let sb = new_session(&mut h, &mut b);
    new_key(&mut h, &mut a);
    new_key(&mut h, &mut a);
    let kb = new_key(&mut h, &mut b);
    // Saved sessions are listed in the HMAC form, as the TPM lists them.
    let (_, la) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, 0x0300_0000, 64)));
    assert_eq!(la, vec![hmac_form(sa)]);
    let (_, lb) = handles_of(&h.success(&mut b, &get_capability(CAP_HANDLES, 0x0300_0000, 64)));
    assert_eq!(lb, vec![hmac_form(sb)]);
    let before = h.tpm_commands();
    let (more, ta) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, 0x8000_0000, 64)));
    assert_eq!((more, ta), (0, vec![0x8000_0000, 0x8000_0001]));
    let (more, ta) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, 0x8000_0000, 1)));
    assert_eq!((more, ta), (1, vec![0x8000_0000]));
    let (_, tb) = handles_of(&h.success(&mut b, &get_capability(CAP_HANDLES, 0x8000_0000, 64)));
    assert_eq!(tb, vec![kb]);
    assert_eq!(h.tpm_commands(), before);
}

#[test]
fn fuzzed_commands_never_panic_or_leak() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    let seeds = [
        sign(k, Auth::policy(sess, true, KEY_AUTH)),
        flush_context(k),
        context_save(sess),
        get_capability(CAP_HANDLES, 0x8000_0000, 5),
        start_auth_session(SE_HMAC, &[3; 16]),
    ];
    let mut x: u32 = 12345;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for round in 0..4000 {
        let mut c = seeds[round % seeds.len()].clone();
        for _ in 0..(rnd() % 3 + 1) {
            let i = rnd() as usize % c.len();
            c[i] = rnd() as u8;
        }
        if rnd() % 4 == 0 {
            let n = rnd() as usize % c.len();
            c.truncate(n);
        }
        let _ = h.exec(&mut s, &c);
        assert_eq!(h.tpm.loaded_objects(), 0);
        assert_eq!(h.tpm.loaded_sessions(), 0);
    }
    h.close(&mut s);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
}

#[test]
fn transport_error_type() {
    let e = TransportError::maybe_sent(-19);
    assert_eq!((e.errno, e.sent), (-19, true));
    let e = TransportError::not_sent(-12);
    assert_eq!((e.errno, e.sent), (-12, false));
}

/// A TPM that answers a warning that means "not executed" (TPM_RC_RETRY, TPM_RC_YIELDED,
/// ...) to the RM's own ContextLoad or FlushContext still holds what the command named: a
/// failed load leaves the object or session saved as it was (the client sees the warning
/// and may retry), a failed flush is queued and sent again before the next command.
#[test]
fn warnings_on_our_own_loads_and_flushes_lose_nothing() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    h.tpm.fail(CC_CONTEXT_LOAD, 0, Fault::Rc(TPM_RC_RETRY)); // the key: TPM_RC_RETRY
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), 0x922);
    h.tpm.fail(CC_CONTEXT_LOAD, 1, Fault::Rc(TPM_RC_YIELDED)); // the session: TPM_RC_YIELDED
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), 0x908);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    // Both still work.
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));

    // The flush of the key after a sign is answered TPM_RC_RETRY: queued, not forgotten.
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_RETRY));
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(h.tpm.loaded_objects(), 1);
    assert_eq!(h.rm.pending_flushes().len(), 1);
    h.success(&mut s, &get_random(8));
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert!(h.rm.pending_flushes().is_empty());

    // The flush of the session when the space closes is answered TPM_RC_TESTING: it stays
    // queued (the slot still counted as taken) until the TPM executes it.
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_TESTING));
    h.close(&mut s);
    assert_eq!(h.rm.pending_flushes().len(), 1);
    assert_eq!(h.tpm.sessions().len(), 1);
    let mut t = h.space();
    h.success(&mut t, &get_random(8));
    assert!(h.rm.pending_flushes().is_empty());
    h.close(&mut t);
    h.tpm.assert_empty();
}

/// A client's FlushContext of its session that the TPM answers with a handle error (the
/// session is gone already, e.g. after continueSession = 0 was not seen): the registry
/// forgets it too, so it no longer counts against the space or the TPM's slots.
#[test]
fn client_flush_of_a_session_gone_from_the_tpm_forgets_it() {
    let mut h = harness();
    let mut s = h.space();
    let sess = new_session(&mut h, &mut s);
    assert_eq!(h.rm.sessions().entries().len(), 1);
    // A handle error about something else (here the first authorization session, as the
    // fuzzer found with an authorization area on FlushContext) says nothing about it.
    h.tpm
        .fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_REFERENCE_S0));
    assert_eq!(rc(&h.ok(&mut s, &flush_context(sess))), 0x918);
    assert_eq!(h.rm.sessions().entries().len(), 1);
    h.tpm.drop_session(sess);
    let r = h.ok(&mut s, &flush_context(sess));
    assert_eq!(rc(&r), 0x1CB);
    assert!(h.rm.sessions().entries().is_empty());
    h.close(&mut s);
    h.tpm.assert_empty();
}

/// A TPM in failure mode answers TPM_RC_FAILURE to everything (and QEMU answers TPM_FAIL,
/// 0x009, when its TPM backend is gone): tpmrs passes the answer on and drops nothing it
/// tracks (only a reset ends failure mode, and later loads find out what a reset
/// invalidated).
#[test]
fn failure_mode_drops_nothing() {
    failure_mode_drops_nothing_with(0x101);
    failure_mode_drops_nothing_with(0x009);
}

fn failure_mode_drops_nothing_with(fail: u32) {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    h.tpm.fail(CC_CONTEXT_LOAD, 0, Fault::Rc(fail));
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), fail);
    h.tpm.fail(CC_CONTEXT_LOAD, 1, Fault::Rc(fail));
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), fail);
    assert_eq!(s.objects().len(), 1);
    assert_eq!(h.rm.sessions().entries().len(), 1);
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(fail));
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(h.rm.pending_flushes().len(), 1);
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert!(h.rm.pending_flushes().is_empty());
    h.close(&mut s);
    h.tpm.assert_empty();
}

/// A session list filtered down to nothing while the TPM has more is asked again from
/// where the TPM stopped: the client never sees count 0 with moreData set (it could not
/// go on from there).
#[test]
fn a_filtered_handle_list_is_never_empty_with_more_data() {
    let mut h = harness();
    let (mut a, mut b) = (h.space(), h.space());
    let theirs: Vec<u32> = (0..3).map(|_| new_session(&mut h, &mut b)).collect();
    let mine = new_session(&mut h, &mut a);
    assert!(theirs.iter().all(|t| *t < mine));
    // Saved sessions, one asked for: b's first is filtered out, the rest asked for in one
    // full page, in which b's others are filtered out and a's comes.
    let before = h.tpm.count(CC_GET_CAPABILITY);
    let (more, l) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, 0x0300_0000, 1)));
    assert_eq!(l, vec![hmac_form(mine)]);
    assert_eq!(more, 0);
    assert_eq!(h.tpm.count(CC_GET_CAPABILITY) - before, 2);
    // Nothing of a's beyond: count 0 and moreData clear.
    let (more, l) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, mine + 1, 1)));
    assert_eq!((more, l), (0, vec![]));
    // b asks for one and gets one, with moreData as the TPM said.
    let (more, l) = handles_of(&h.success(&mut b, &get_capability(CAP_HANDLES, 0x0300_0000, 1)));
    assert_eq!((more, l), (1, vec![hmac_form(theirs[0])]));
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

/// A ContextLoad of an abandoned session by a file already at max_sessions is refused
/// before it is sent: the session stays abandoned for someone else.
#[test]
fn a_full_space_cannot_take_an_abandoned_session() {
    let mut h = Harness::new(
        FakeTpm::new(),
        Config {
            max_sessions: 1,
            ..Config::default()
        },
    );
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    let sess = new_session(&mut h, &mut a);
    let blob = context_save_blob(&h.success(&mut a, &context_save(sess)));
    h.close(&mut a);
    assert_eq!(h.rm.stats().abandoned, 1);
    new_session(&mut h, &mut b);
    let loads = h.tpm.count(CC_CONTEXT_LOAD);
    let r = h.ok(&mut b, &context_load(&blob));
    assert_eq!(rc(&r), rm(TPM_RC_SESSION_MEMORY));
    assert_eq!(h.tpm.count(CC_CONTEXT_LOAD), loads, "not sent");
    assert_eq!(h.rm.stats().abandoned, 1, "still abandoned");
    assert_eq!(rhandle(&h.success(&mut c, &context_load(&blob))), sess);
    assert_eq!(h.rm.stats().continuation_hits, 1);
    h.close(&mut b);
    h.close(&mut c);
    h.tpm.assert_empty();
}

/// Issue 20, item 8: nothing that fails after the TPM ran the client's command takes the
/// place of its answer. Here the session's save fails on the transport: the sign's answer
/// stands; the session, which could not be saved, is flushed with a tombstone (its next
/// use is answered TPM_RC_EXPIRED).
#[test]
fn a_failure_in_the_commit_never_replaces_the_answer() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Transport(-5));
    let r = h.exec(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(r.map(|r| rc(&r)), Ok(0));
    assert!(h.rm.sessions().get(sess).is_none());
    h.tpm.assert_empty_sessions_and(0);
    let r = h.ok(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert_eq!(rc(&r), rm(rc_at_session(TPM_RC_EXPIRED, 1)));
    h.close(&mut s);
    h.tpm.assert_empty();
}

/// Issue 20, item 10: a transport failure that says the command never reached the TPM (an
/// allocation failure, say) is not one that may have: tpmrs' own ContextSave that is never
/// sent is like a warning that says "not executed" (tried again; the session stays loaded,
/// saved after its next use), and a client command never sent changes nothing (the errno
/// goes back, its session is kept). Treated as "may have run", a failed allocation cost
/// the client its session.
#[test]
fn failures_before_sending_lose_nothing() {
    let mut h = harness();
    let mut s = h.space();
    let k = new_key(&mut h, &mut s);
    let sess = new_session(&mut h, &mut s);
    // The sign and every try of the session's save are never sent.
    h.tpm.fail(CC_SIGN, 0, Fault::NotSent(-12));
    for _ in 0..3 {
        h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::NotSent(-12));
    }
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    let r = h.exec(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert!(h.rm.sessions().get(sess).unwrap().state.is_loaded());
    assert_eq!(
        h.tpm.count(CC_FLUSH_CONTEXT),
        flushes + 1,
        "the key's flush only"
    );
    assert_eq!(r, Err(RmError::NotSent(-12)));
    assert_eq!(RmError::NotSent(-12).to_errno(), -12);
    // Its next use finds it loaded and saves it.
    h.success(&mut s, &sign(k, Auth::policy(sess, true, KEY_AUTH)));
    assert!(h.rm.sessions().get(sess).unwrap().state.is_saved());
    // A flush of ours never sent is queued as certain, without asking the TPM, and sent
    // again before the next command.
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::NotSent(-12));
    let caps = h.tpm.count(CC_GET_CAPABILITY);
    h.success(&mut s, &sign(k, Auth::pw(KEY_AUTH)));
    assert_eq!(h.tpm.count(CC_GET_CAPABILITY), caps, "nothing to ask");
    assert_eq!(h.rm.pending_flushes().len(), 1);
    h.success(&mut s, &get_random(4));
    assert!(h.rm.pending_flushes().is_empty());
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    h.close(&mut s);
    h.tpm.assert_empty();
}

/// Issue 20, item 10: a context-gap repair whose ContextLoad never reaches the TPM changes
/// nothing: the oldest session keeps its blob (it is not evicted), and the session whose
/// save ran into the gap stays loaded, saved after its next use.
#[test]
fn a_gap_repair_never_sent_evicts_nobody() {
    let mut h = harness();
    let (mut a, mut b) = (h.space(), h.space());
    let sa = new_session(&mut h, &mut a);
    let sb = new_session(&mut h, &mut b);
    // b's next save meets the gap; the repair's ContextLoad of sa is never sent.
    h.tpm.gap_max = Some(1);
    h.tpm.fail(CC_CONTEXT_LOAD, 1, Fault::NotSent(-12));
    let loads = h.tpm.count(CC_CONTEXT_LOAD);
    h.success(&mut b, &policy_password(sb));
    assert_eq!(
        h.tpm.count(CC_CONTEXT_LOAD),
        loads + 2,
        "sb's, then the repair's of sa"
    );
    assert_eq!(h.rm.stats().evictions, 0);
    assert_eq!(h.rm.stats().gap_repairs, 0, "none done");
    assert!(h.rm.sessions().get(sa).unwrap().state.is_saved());
    assert!(h.rm.sessions().get(sb).unwrap().state.is_loaded());
    h.tpm.gap_max = None;
    h.success(&mut b, &policy_password(sb));
    h.success(&mut a, &policy_password(sa));
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}
