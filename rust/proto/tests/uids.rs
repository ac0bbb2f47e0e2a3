// SPDX-License-Identifier: GPL-2.0
//! Who may touch another file's saved and abandoned sessions (issue 20, item 11): only a
//! file opened by the same uid, or by root, may list, flush and load them, and one uid
//! abandoning many sessions pushes out its own, not another uid's. Against the fake TPM and
//! against swtpm (which must be installed: these tests fail, never skip, without it).

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::rc::*;
use common::swtpm::SwTpm;
use common::Harness;
use tpmrs_proto::{Config, Space, Tpm};

const A: u32 = 1000;
const B: u32 = 1001;
const ROOT: u32 = 0;
const SAVED: u32 = 0x0300_0000;
const INDEX: u32 = 0x00FF_FFFF;
const LAYER: u32 = TSS2_RESMGR_TPM_RC_LAYER;
/// What a file gets for a session it may not name in FlushContext (or a ContextLoad of its
/// current blob): TPM_RC_HANDLE, parameter 1, in the resource-manager layer.
const NOT_YOURS: u32 = rm(rc_handle_at_parameter(1));

fn new_session<T: Tpm>(h: &mut Harness<T>, s: &mut Space) -> u32 {
    rhandle(&h.success(s, &start_auth_session(SE_POLICY, &[1; 16])))
}

/// A session started and saved by its client (`tpm2 startauthsession -S s.ctx`): its
/// handle and blob.
fn saved_session<T: Tpm>(h: &mut Harness<T>, s: &mut Space) -> (u32, Vec<u8>) {
    let sess = new_session(h, s);
    (sess, context_save_blob(&h.success(s, &context_save(sess))))
}

/// The indices of the saved sessions `s` is shown.
fn saved_list<T: Tpm>(h: &mut Harness<T>, s: &mut Space) -> Vec<u32> {
    let (_, l) = handles_of(&h.success(s, &get_capability(CAP_HANDLES, SAVED, 254)));
    l.iter().map(|x| x & INDEX).collect()
}

/// What a file of another uid can do with session `sess` (blob `blob`) of uid A: nothing.
/// It is not listed, its flush and load are refused, nothing is sent for either.
fn b_cannot_touch<T: Tpm>(h: &mut Harness<T>, b: &mut Space, sess: u32, blob: &[u8]) {
    assert_eq!(saved_list(h, b), Vec::<u32>::new(), "listed to another uid");
    let sent = h.tpm_commands();
    assert_eq!(rc(&h.ok(b, &flush_context(sess))), NOT_YOURS);
    assert_eq!(rc(&h.ok(b, &context_load(blob))), NOT_YOURS);
    assert_eq!(h.tpm_commands(), sent, "nothing sent");
    assert_ne!(h.rm.sessions().get(sess).map(|e| e.uid), Some(B));
}

fn abandoned_sessions_are_their_uids_and_roots<T: Tpm>(mut h: Harness<T>) -> Harness<T> {
    let mut a1 = h.space_as(A);
    let (sess, blob) = saved_session(&mut h, &mut a1);
    let (other, _) = saved_session(&mut h, &mut a1);
    h.close(&mut a1);
    assert_eq!(h.rm.stats().abandoned, 2);
    let mut b = h.space_as(B);
    b_cannot_touch(&mut h, &mut b, sess, &blob);
    assert_eq!(h.rm.stats().abandoned, 2, "still abandoned");
    // Another file of uid A and root see both; A's loads one, root flushes the other.
    let mut a2 = h.space_as(A);
    let mut r = h.space_as(ROOT);
    let both = vec![sess & INDEX, other & INDEX];
    assert_eq!(saved_list(&mut h, &mut a2), both);
    assert_eq!(saved_list(&mut h, &mut r), both);
    assert_eq!(rhandle(&h.success(&mut a2, &context_load(&blob))), sess);
    assert_eq!(h.rm.sessions().get(sess).unwrap().owner, Some(a2.id()));
    h.success(&mut a2, &policy_password(sess));
    h.success(&mut r, &flush_context(other));
    assert_eq!(h.rm.stats().abandoned, 0);
    // Loaded by A's file, it is in use: no longer listed to root either.
    assert_eq!(saved_list(&mut h, &mut r), Vec::<u32>::new());
    for s in [&mut b, &mut a2, &mut r] {
        h.close(s);
    }
    h
}

#[test]
fn abandoned_sessions_are_their_uids_and_roots_fake() {
    let h = abandoned_sessions_are_their_uids_and_roots(Harness::new(
        FakeTpm::new(),
        Config::default(),
    ));
    h.tpm.assert_empty();
}

#[test]
fn abandoned_sessions_are_their_uids_and_roots_swtpm() {
    let mut h = abandoned_sessions_are_their_uids_and_roots(Harness::new(
        SwTpm::start(),
        Config::default(),
    ));
    h.tpm.assert_empty();
}

/// A session saved by a file still open: listed to, flushable and loadable by the files of
/// its uid and root (loaded, it moves to the loader), never by another uid. Before, it
/// was listed to no other file, and any file could load it.
fn a_saved_session_of_an_open_file_is_shared_within_its_uid<T: Tpm>(
    mut h: Harness<T>,
) -> Harness<T> {
    let (mut a1, mut a2, mut b, mut r) = (
        h.space_as(A),
        h.space_as(A),
        h.space_as(B),
        h.space_as(ROOT),
    );
    let (sess, blob) = saved_session(&mut h, &mut a1);
    b_cannot_touch(&mut h, &mut b, sess, &blob);
    assert_eq!(h.rm.sessions().get(sess).unwrap().owner, Some(a1.id()));
    assert_eq!(saved_list(&mut h, &mut a2), vec![sess & INDEX]);
    assert_eq!(saved_list(&mut h, &mut r), vec![sess & INDEX]);
    // A's other file takes it over, as on /dev/tpmrm0; the first file's name of it is
    // refused from then on.
    assert_eq!(rhandle(&h.success(&mut a2, &context_load(&blob))), sess);
    h.success(&mut a2, &policy_password(sess));
    assert_eq!(
        rc(&h.ok(&mut a1, &policy_password(sess))),
        rm(rc_handle_at_handle(1))
    );
    // Saved again, root may flush it (`tpm2 flushcontext -s` as root).
    h.success(&mut a2, &context_save(sess));
    assert_eq!(saved_list(&mut h, &mut r), vec![sess & INDEX]);
    h.success(&mut r, &flush_context(sess));
    assert!(h.rm.sessions().get(sess).is_none());
    // And a file of the same uid may flush it.
    let (sess, blob) = saved_session(&mut h, &mut a1);
    b_cannot_touch(&mut h, &mut b, sess, &blob);
    h.success(&mut a2, &flush_context(sess));
    assert!(h.rm.sessions().get(sess).is_none());
    for s in [&mut a1, &mut a2, &mut b, &mut r] {
        h.close(s);
    }
    h
}

#[test]
fn a_saved_session_of_an_open_file_is_shared_within_its_uid_fake() {
    let h = a_saved_session_of_an_open_file_is_shared_within_its_uid(Harness::new(
        FakeTpm::new(),
        Config::default(),
    ));
    h.tpm.assert_empty();
}

#[test]
fn a_saved_session_of_an_open_file_is_shared_within_its_uid_swtpm() {
    let mut h = a_saved_session_of_an_open_file_is_shared_within_its_uid(Harness::new(
        SwTpm::start(),
        Config::default(),
    ));
    h.tpm.assert_empty();
}

/// `max_abandoned` (8) is shared: uid B abandoning many sessions pushes out B's own oldest,
/// while uid A's one abandoned session stays and loads. Before, the oldest went first,
/// whoever's it was.
#[test]
fn one_uid_abandoning_many_does_not_push_out_anothers() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    let mut a1 = h.space_as(A);
    let (sess, blob) = saved_session(&mut h, &mut a1);
    h.close(&mut a1);
    let mut b_blobs = vec![];
    for _ in 0..12 {
        let mut b = h.space_as(B);
        b_blobs.push(saved_session(&mut h, &mut b));
        h.close(&mut b);
    }
    assert_eq!(h.rm.stats().abandoned, 8);
    let uids: Vec<u32> = h.rm.sessions().entries().iter().map(|e| e.uid).collect();
    assert_eq!(uids.iter().filter(|u| **u == A).count(), 1, "A's stays");
    // B's latest seven stay; its oldest five were flushed (the TPM refuses their blobs;
    // their numbers may be in use again).
    let mut b2 = h.space_as(B);
    for (_, blob) in &b_blobs[..5] {
        let r = h.ok(&mut b2, &context_load(blob));
        assert_eq!(rc(&r) & LAYER, 0, "the TPM's answer: gone");
        assert_ne!(rc(&r), 0);
    }
    for (s, blob) in &b_blobs[5..] {
        assert_eq!(rhandle(&h.success(&mut b2, &context_load(blob))), *s);
        h.success(&mut b2, &flush_context(*s));
    }
    let mut a2 = h.space_as(A);
    assert_eq!(rhandle(&h.success(&mut a2, &context_load(&blob))), sess);
    h.success(&mut a2, &policy_password(sess));
    // Two uids at the bound: the next abandonment of either pushes out that uid's own
    // oldest (A holds four, B four: B's fifth takes B's first).
    h.close(&mut a2);
    let mut a_sessions = vec![];
    for _ in 0..4 {
        let mut a = h.space_as(A);
        a_sessions.push(saved_session(&mut h, &mut a).0);
        h.close(&mut a);
    }
    let mut b_sessions = vec![];
    for _ in 0..5 {
        let mut b = h.space_as(B);
        b_sessions.push(saved_session(&mut h, &mut b).0);
        h.close(&mut b);
    }
    assert_eq!(h.rm.stats().abandoned, 8);
    assert!(a_sessions.iter().all(|s| h.rm.sessions().get(*s).is_some()));
    assert!(h.rm.sessions().get(b_sessions[0]).is_none());
    let mut r = h.space_as(ROOT);
    for s in saved_list(&mut h, &mut r) {
        h.success(&mut r, &flush_context(0x0200_0000 | s));
    }
    h.close(&mut b2);
    h.close(&mut r);
    h.tpm.assert_empty();
}
