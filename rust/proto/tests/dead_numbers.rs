// SPDX-License-Identifier: GPL-2.0
//! A space's new session never gets a number the space still holds dead (issue 20, items 3
//! and 4), against the fake TPM (three loaded-session slots, the lowest free number handed
//! out, as libtpms does): tpmrs holds those numbers, saved, before it sends the client's
//! StartAuthSession, and sends that command once.

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::rc::*;
use common::Harness;
use tpmrs_proto::{Config, RmError, Space};

const MS: u64 = 1_000_000;
const T: u64 = 2_000 * MS;

/// A fake TPM with `slots` session slots, `headroom` of them left to others.
fn harness(slots: usize, headroom: usize) -> Harness<FakeTpm> {
    let mut t = FakeTpm::new();
    t.max_sessions = slots;
    let config = Config {
        session_headroom: headroom,
        ..Config::default()
    };
    Harness::new(t, config)
}

fn start(h: &mut Harness<FakeTpm>, s: &mut Space) -> Result<u32, RmError> {
    let r = h.exec(s, &start_auth_session(SE_HMAC, &[1; 16]))?;
    assert_eq!(rc(&r), 0);
    Ok(rhandle(&r))
}

/// `s` starts a session, waiting and evicting as the resource manager says, and flushes it
/// again: the number it got is free once more.
fn start_evicting_then_flush(h: &mut Harness<FakeTpm>, s: &mut Space) -> u32 {
    let (r, _) = h.run(s, &start_auth_session(SE_HMAC, &[2; 16]));
    let n = rhandle(&r.unwrap());
    h.success(s, &flush_context(n));
    n
}

/// TPM_RC_EXPIRED in the resource-manager layer, for session `n`.
fn expired_s(n: u32) -> u32 {
    rm(rc_at_session(TPM_RC_EXPIRED, n))
}

/// The response code of a GetRandom that names `sess` as its session.
fn use_rc(h: &mut Harness<FakeTpm>, s: &mut Space, sess: u32) -> u32 {
    let cmd = command(
        CC_GET_RANDOM,
        &[],
        &[Auth::policy(sess, true, &[])],
        &Buf::new().u16(8).done(),
    );
    rc(&h.ok(s, &cmd))
}

/// A StartAuthSession that carries `sess` as an audit session (continueSession, audit).
fn start_with_audit(sess: u32) -> Vec<u8> {
    let params = Buf::new()
        .b2(&[5; 16])
        .b2(&[])
        .u8(SE_HMAC)
        .u16(ALG_NULL)
        .u16(ALG_SHA256)
        .done();
    let audit = Auth {
        handle: sess,
        nonce: vec![6; 16],
        attrs: 0x81,
        hmac: vec![0; 32],
    };
    command(
        CC_START_AUTH_SESSION,
        &[RH_NULL, RH_NULL],
        &[audit],
        &params,
    )
}

/// Item 3: four of a space's numbers are dead, more than the TPM's three loaded-session
/// slots. Held loaded, the fourth start met TPM_RC_SESSION_MEMORY: the space waited, gave
/// up after SESSION_TIMEOUT, and got one of its own dead numbers (its old reference then
/// reached the new session). Held saved, they take no loaded slot: it gets a clean number
/// at once.
#[test]
fn more_dead_numbers_than_loaded_slots_are_all_held() {
    let mut h = harness(5, 0);
    let (mut a, mut b, mut w) = (h.space(), h.space(), h.space());
    let dead: Vec<u32> = (0..4).map(|_| start(&mut h, &mut a).unwrap()).collect();
    let sb = start(&mut h, &mut b).unwrap();
    // w waits, evicts a (whose turn began first) and frees the number it got.
    assert_eq!(start_evicting_then_flush(&mut h, &mut w), dead[0]);
    h.success(&mut b, &flush_context(sb));
    let (r, waited) = h.run(&mut a, &start_auth_session(SE_HMAC, &[3; 16]));
    let new = rhandle(&r.unwrap());
    assert_eq!(waited, 0, "served at once");
    assert_eq!(new, sb, "the lowest clean number");
    assert_eq!(h.tpm.starts.1, 7, "each client command sent once");
    assert_eq!(h.rm.stats().dead_numbers_handed_over, 0);
    // The held numbers are free again, nothing of tpmrs' is left loaded, and every old
    // reference is still told.
    assert_eq!(h.tpm.sessions(), vec![new]);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(use_rc(&mut h, &mut a, *d), expired_s(1), "dead[{i}]");
    }
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    for s in [&mut a, &mut b, &mut w] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// Item 4: a StartAuthSession that carries a session of the client (audit, encrypt,
/// decrypt) is never sent twice: run again, the TPM would check that session's HMAC with
/// the nonce it already rolled. It used to be sent again for each dead number it landed
/// on, and then, the TPM having no slot for a third, handed the first dead number.
#[test]
fn a_start_carrying_a_session_is_sent_once() {
    // Seven slots, six for tpmrs: a holds 0 and 1, b 2, c 3 to 5; w evicts a.
    let mut h = harness(7, 1);
    let (mut a, mut b, mut c, mut w) = (h.space(), h.space(), h.space(), h.space());
    let dead = [
        start(&mut h, &mut a).unwrap(),
        start(&mut h, &mut a).unwrap(),
    ];
    start(&mut h, &mut b).unwrap();
    let sc: Vec<u32> = (0..3).map(|_| start(&mut h, &mut c).unwrap()).collect();
    assert_eq!(start_evicting_then_flush(&mut h, &mut w), dead[0]);
    // a starts the session it will carry: a clean number (the seventh slot).
    let audit = start(&mut h, &mut a).unwrap();
    assert!(!dead.contains(&audit));
    h.success(&mut c, &flush_context(sc[2]));
    let clients = h.tpm.starts.1;
    let r = h.ok(&mut a, &start_with_audit(audit));
    assert_eq!(rc(&r), 0);
    let new = rhandle(&r);
    assert_eq!(h.tpm.starts.1, clients + 1, "sent once");
    assert_eq!(new, sc[2], "a clean number");
    assert_eq!(h.rm.stats().dead_numbers_handed_over, 0);
    assert_eq!(use_rc(&mut h, &mut a, dead[1]), expired_s(1));
    assert_eq!(use_rc(&mut h, &mut a, audit), 0);
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    for s in [&mut a, &mut b, &mut c, &mut w] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// Items 3 and 4: when no clean number can be had (the TPM's only free slot is one the
/// space holds dead), the command is not sent and waits like one the TPM refused, and the
/// slot it cannot use goes to the queue at once: the next waiter has no dead number there.
#[test]
fn a_slot_only_dead_for_one_space_goes_to_the_next_waiter() {
    let mut h = harness(2, 0);
    let (mut a, mut b, mut c, mut w) = (h.space(), h.space(), h.space(), h.space());
    let dead = start(&mut h, &mut a).unwrap();
    start(&mut h, &mut b).unwrap();
    // w queues and, after SESSION_TIMEOUT, evicts a; a and c queue behind it.
    assert_eq!(start(&mut h, &mut w), Err(RmError::SessionsExhausted));
    let tw = h.rm.wait_begin(&w, h.now, h.exhausted_rc).unwrap();
    h.now += T;
    assert_eq!(h.rm.evict_for(&tw, &mut h.tpm, h.now), Ok(true));
    assert_eq!(start(&mut h, &mut a), Err(RmError::SessionsExhausted));
    let ta = h.rm.wait_begin(&a, h.now, h.exhausted_rc).unwrap();
    assert_eq!(start(&mut h, &mut c), Err(RmError::SessionsExhausted));
    let tc = h.rm.wait_begin(&c, h.now, h.exhausted_rc).unwrap();
    // w takes a's number and frees it again: the slot is a's (its reservation), but its
    // number is dead for a.
    let sw = rhandle(&h.success_as(&mut w, &tw));
    assert_eq!(sw, dead);
    h.rm.wait_end(tw, h.now);
    h.success(&mut w, &flush_context(sw));
    assert!(h.rm.scheduler().is_reserved(ta.id()));
    let clients = h.tpm.starts.1;
    let r = h.exec_as(&mut a, Some(&ta), &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(r, Err(RmError::SessionsExhausted));
    assert_eq!(h.tpm.starts.1, clients, "a's command was not sent");
    assert_eq!(h.tpm.sessions().len(), 1, "the held number is free again");
    assert!(h.rm.scheduler().is_reserved(tc.id()), "c has the slot");
    let sc = rhandle(&h.success_as(&mut c, &tc));
    assert_eq!(sc, dead, "clean for c");
    h.rm.wait_end(tc, h.now);
    h.rm.wait_end(ta, h.now);
    assert_eq!(use_rc(&mut h, &mut a, dead), expired_s(1));
    for s in [&mut a, &mut b, &mut c, &mut w] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// The slots a space cannot use because their numbers are dead for it never go back to
/// that space (its reservation, or a gang reservation up to what it held at once): its
/// command would run again at once and find the same numbers.
#[test]
fn dead_numbers_are_not_granted_back_to_their_space() {
    let mut h = harness(3, 0);
    let (mut a, mut b, mut w) = (h.space(), h.space(), h.space());
    let dead = [
        start(&mut h, &mut a).unwrap(),
        start(&mut h, &mut a).unwrap(),
    ];
    start(&mut h, &mut b).unwrap();
    assert_eq!(start(&mut h, &mut w), Err(RmError::SessionsExhausted));
    let tw = h.rm.wait_begin(&w, h.now, h.exhausted_rc).unwrap();
    h.now += T;
    assert_eq!(h.rm.evict_for(&tw, &mut h.tpm, h.now), Ok(true));
    assert_eq!(start(&mut h, &mut a), Err(RmError::SessionsExhausted));
    let ta = h.rm.wait_begin(&a, h.now, h.exhausted_rc).unwrap();
    let sw = rhandle(&h.success_as(&mut w, &tw));
    h.rm.wait_end(tw, h.now);
    h.success(&mut w, &flush_context(sw));
    assert!(h.rm.scheduler().is_reserved(ta.id()));
    // Both free numbers are dead for a (which held two at once).
    let r = h.exec_as(&mut a, Some(&ta), &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(r, Err(RmError::SessionsExhausted));
    assert!(!h.rm.scheduler().is_reserved(ta.id()));
    assert_eq!(
        h.rm.scheduler().gang(a.id()),
        0,
        "no slot of its dead numbers"
    );
    h.rm.wait_end(ta, h.now);
    for d in dead {
        assert_eq!(use_rc(&mut h, &mut a, d), expired_s(1));
    }
    for s in [&mut a, &mut b, &mut w] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

trait SuccessAs {
    /// A StartAuthSession of waiter `t` of `s` that must succeed.
    fn success_as(&mut self, s: &mut Space, t: &tpmrs_proto::Ticket) -> Vec<u8>;
}

impl SuccessAs for Harness<FakeTpm> {
    fn success_as(&mut self, s: &mut Space, t: &tpmrs_proto::Ticket) -> Vec<u8> {
        let r = self
            .exec_as(s, Some(t), &start_auth_session(SE_HMAC, &[4; 16]))
            .unwrap();
        assert_eq!(rc(&r), 0);
        r
    }
}
