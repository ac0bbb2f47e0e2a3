// SPDX-License-Identifier: GPL-2.0
//! Session continuation, global session exhaustion (FIFO queue, reservations, eviction,
//! tombstones), context-gap repair and flush retry, against the fake TPM with a
//! controllable clock.

mod common;

use common::fake::{FakeTpm, Fault};
use common::marshal::*;
use common::rc::*;
use common::Harness;
use tpmrs_proto::space::Gathering;
use tpmrs_proto::{
    Config, Event, EvictReason, Request, RmError, SessionState, Space, Step, Ticket, WaitStep,
};

const LAYER: u32 = 0xB_0000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const T: u64 = 2 * SEC;
const P: u64 = 100 * MS;
/// TPM_RC_EXPIRED | layer for handle 1 / session `n`.
const EXPIRED_H1: u32 = rm(rc_at_handle(TPM_RC_EXPIRED, 1));
fn expired_s(n: u32) -> u32 {
    0x8A3 | (n << 8) | LAYER
}

fn harness_with(slots: usize, config: Config) -> Harness<FakeTpm> {
    let mut t = FakeTpm::new();
    t.max_sessions = slots;
    Harness::new(t, config)
}

/// A fake TPM with `slots` session slots, all of them tpmrs's (no headroom): these tests
/// are about the TPM's own exhaustion; the headroom has its own tests.
fn harness(slots: usize) -> Harness<FakeTpm> {
    let config = Config {
        session_headroom: 0,
        ..Config::default()
    };
    harness_with(slots, config)
}

fn start(h: &mut Harness<FakeTpm>, s: &mut Space) -> Result<u32, RmError> {
    let r = h.exec(s, &start_auth_session(SE_HMAC, &[1; 16]))?;
    assert_eq!(rc(&r), 0);
    Ok(rhandle(&r))
}

fn start_as(h: &mut Harness<FakeTpm>, s: &mut Space, t: &Ticket) -> Result<u32, RmError> {
    let r = h.exec_as(s, Some(t), &start_auth_session(SE_HMAC, &[1; 16]))?;
    assert_eq!(rc(&r), 0);
    Ok(rhandle(&r))
}

/// `s` starts a session, waiting and evicting as the resource manager says, and flushes it
/// again: the number it got is free once more. Returns that number.
fn start_evicting_then_flush(h: &mut Harness<FakeTpm>, s: &mut Space) -> u32 {
    let (r, _) = h.run(s, &start_auth_session(SE_HMAC, &[2; 16]));
    let n = rhandle(&r.unwrap());
    h.success(s, &flush_context(n));
    n
}

/// A command that uses session `sess` (GetRandom with it as authorization).
fn use_cmd(sess: &[u32]) -> Vec<u8> {
    let auths: Vec<Auth> = sess.iter().map(|s| Auth::policy(*s, true, &[])).collect();
    command(CC_GET_RANDOM, &[], &auths, &Buf::new().u16(8).done())
}

fn use_rc(h: &mut Harness<FakeTpm>, s: &mut Space, sess: u32) -> u32 {
    rc(&h.ok(s, &use_cmd(&[sess])))
}

/// `s` holds `n` sessions at once, then lets them go (its peak is `n`).
fn held_then_let_go(h: &mut Harness<FakeTpm>, s: &mut Space, n: usize) {
    let all: Vec<u32> = (0..n).map(|_| start(h, s).unwrap()).collect();
    for x in all {
        h.success(s, &flush_context(x));
    }
}

/// `s` asks for a session, is refused, and queues.
fn queue(h: &mut Harness<FakeTpm>, s: &mut Space) -> Ticket {
    assert_eq!(start(h, s), Err(RmError::SessionsExhausted));
    h.rm.wait_begin(s, h.now, h.exhausted_rc).unwrap()
}

/// Waiter `t` of `s` takes its session and leaves the queue.
fn served(h: &mut Harness<FakeTpm>, s: &mut Space, t: Ticket) {
    start_as(h, s, &t).unwrap();
    h.rm.wait_end(t, h.now);
}

/// Closes `spaces`; the TPM is left with nothing of theirs.
fn close_all(h: &mut Harness<FakeTpm>, spaces: [&mut Space; 4]) {
    for s in spaces {
        h.close(s);
    }
    h.tpm.assert_empty();
}

fn starts_sent(h: &Harness<FakeTpm>) -> usize {
    h.tpm.count(CC_START_AUTH_SESSION)
}

#[test]
fn exhaustion_is_eagain_and_changes_nothing() {
    let mut h = harness(2);
    let mut a = h.space();
    let mut b = h.space();
    let k = rhandle(&h.success(&mut b, &create_primary(&ecc_signing_public(&[]))));
    let s1 = start(&mut h, &mut a).unwrap();
    let _s2 = start(&mut h, &mut a).unwrap();
    let before = h.tpm.sessions();
    // tpmKey is a transient object of b: loaded for the command, flushed again.
    let c = command(
        CC_START_AUTH_SESSION,
        &[k, RH_NULL],
        &[],
        &Buf::new()
            .b2(&[1; 16])
            .b2(&[])
            .u8(SE_HMAC)
            .u16(ALG_NULL)
            .u16(ALG_SHA256)
            .done(),
    );
    assert_eq!(h.exec(&mut b, &c), Err(RmError::SessionsExhausted));
    assert_eq!(RmError::SessionsExhausted.to_errno(), -11);
    assert_eq!(h.tpm.sessions(), before);
    assert_eq!(h.tpm.loaded_objects(), 0);
    assert_eq!(h.tpm.loaded_sessions(), 0);
    assert_eq!(h.rm.sessions().len(), 2);
    assert_eq!(b.objects().len(), 1);
    // A client's ContextLoad of its session without room to load it: the same.
    let blob = context_save_blob(&h.success(&mut a, &context_save(s1)));
    h.tpm
        .fail(CC_CONTEXT_LOAD, 0, Fault::Rc(TPM_RC_SESSION_MEMORY));
    assert_eq!(
        h.exec(&mut a, &context_load(&blob)),
        Err(RmError::SessionsExhausted)
    );
    assert!(matches!(
        h.rm.sessions().get(s1).unwrap().state,
        SessionState::SavedByClient(_)
    ));
    assert_eq!(rhandle(&h.success(&mut a, &context_load(&blob))), s1);
    assert_eq!(use_rc(&mut h, &mut a, s1), 0);
    assert_eq!(h.rm.stats().sessions, 2);
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn fifo_newcomer_cannot_steal_a_reserved_slot() {
    let mut h = harness(2);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    let s1 = start(&mut h, &mut a).unwrap();
    start(&mut h, &mut a).unwrap();
    assert_eq!(start(&mut h, &mut b), Err(RmError::SessionsExhausted));
    let tb = h.rm.wait_begin(&b, h.now, h.exhausted_rc).unwrap();
    assert!(h.rm.may_retry(&tb), "the head may retry");
    // A newcomer queues behind: refused without asking the TPM.
    let sent = starts_sent(&h);
    assert_eq!(start(&mut h, &mut c), Err(RmError::SessionsExhausted));
    assert_eq!(starts_sent(&h), sent);
    // a frees a slot: it is b's.
    assert!(!h.rm.take_wakeup());
    h.success(&mut a, &flush_context(s1));
    assert!(h.rm.take_wakeup());
    assert_eq!(h.tpm.sessions().len(), 1, "the TPM has a free slot");
    assert_eq!(start(&mut h, &mut c), Err(RmError::SessionsExhausted));
    let tc = h.rm.wait_begin(&c, h.now, h.exhausted_rc).unwrap();
    assert!(!h.rm.may_retry(&tc));
    assert_eq!(
        start_as(&mut h, &mut c, &tc),
        Err(RmError::SessionsExhausted)
    );
    assert_eq!(starts_sent(&h), sent);
    // b takes it.
    h.now += 5 * MS;
    start_as(&mut h, &mut b, &tb).unwrap();
    h.rm.wait_end(tb, h.now);
    assert!(h.rm.take_wakeup(), "c is the new head");
    assert!(h.rm.may_retry(&tc));
    // c is the head now, but there is no slot: tpmrs holds its whole budget (the TPM's
    // TPM_PT_ACTIVE_SESSIONS_MAX), so it is not even sent.
    assert_eq!(
        start_as(&mut h, &mut c, &tc),
        Err(RmError::SessionsExhausted)
    );
    assert_eq!(starts_sent(&h), sent + 1);
    h.rm.wait_end(tc, h.now);
    let st = h.rm.stats();
    assert_eq!((st.waits, st.waiting, st.sessions), (2, 0, 2));
    assert!(st.longest_wait_ns >= 5 * MS);
}

#[test]
fn leaving_waiter_passes_its_reservation_on() {
    let mut h = harness(2);
    let (mut a, mut b, mut c, mut d) = (h.space(), h.space(), h.space(), h.space());
    let s1 = start(&mut h, &mut a).unwrap();
    start(&mut h, &mut a).unwrap();
    assert!(start(&mut h, &mut b).is_err());
    let tb = h.rm.wait_begin(&b, h.now, h.exhausted_rc).unwrap();
    assert!(start(&mut h, &mut c).is_err());
    let tc = h.rm.wait_begin(&c, h.now, h.exhausted_rc).unwrap();
    // continueSession = 0 frees a slot too.
    let r = h.ok(
        &mut a,
        &command(CC_GET_RANDOM, &[], &[Auth::policy(s1, false, &[])], &[0, 8]),
    );
    assert_eq!(rc(&r), 0);
    assert!(h.rm.sessions().get(s1).is_none());
    assert!(h.rm.take_wakeup());
    assert!(h.rm.may_retry(&tb));
    assert!(!h.rm.may_retry(&tc));
    // b is interrupted by a signal before it retries.
    h.rm.wait_end(tb, h.now);
    assert!(h.rm.take_wakeup());
    assert!(h.rm.may_retry(&tc));
    assert_eq!(h.rm.wait_step(&tc, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    assert!(
        start(&mut h, &mut d).is_err(),
        "newcomer still queued behind"
    );
    start_as(&mut h, &mut c, &tc).unwrap();
    h.rm.wait_end(tc, h.now);
    // Closing a space whose command waits removes it from the queue, passing a reservation.
    assert!(start(&mut h, &mut d).is_err());
    let td = h.rm.wait_begin(&d, h.now, h.exhausted_rc).unwrap();
    // (b comes back after its kept place lapsed: behind d.)
    h.now += SEC;
    assert!(start(&mut h, &mut b).is_err());
    let tb = h.rm.wait_begin(&b, h.now, h.exhausted_rc).unwrap();
    h.close(&mut c); // frees c's slot: d's reservation
    assert!(h.rm.take_wakeup());
    assert!(!h.rm.may_retry(&tb));
    h.close(&mut d); // d never retried: its reservation goes to b
    assert!(h.rm.may_retry(&tb));
    // d's ticket is stale now: no busy loop on it.
    assert!(matches!(
        h.rm.wait_step(&td, &mut h.tpm, h.now),
        Ok(WaitStep::Sleep { .. })
    ));
    start_as(&mut h, &mut b, &tb).unwrap();
    h.rm.wait_end(tb, h.now);
    assert_eq!(h.rm.stats().waiting, 0);
}

#[test]
fn eviction_victims() {
    let mut h = harness(4);
    let ext = h.tpm.external_session();
    let (mut a, mut b, mut c, mut d) = (h.space(), h.space(), h.space(), h.space());
    let a1 = start(&mut h, &mut a).unwrap();
    let b1 = start(&mut h, &mut b).unwrap();
    let _blob = context_save_blob(&h.success(&mut b, &context_save(b1)));
    h.close(&mut b);
    assert_eq!(h.rm.stats().abandoned, 1);
    h.now += SEC;
    let c1 = start(&mut h, &mut c).unwrap();
    assert_eq!(h.tpm.sessions().len(), 4);
    assert!(start(&mut h, &mut d).is_err());
    let td = h.rm.wait_begin(&d, h.now, h.exhausted_rc).unwrap();
    let since = h.now;
    // Not before SESSION_TIMEOUT.
    assert_eq!(h.rm.evict_for(&td, &mut h.tpm, since + T - 1), Ok(false));
    assert_eq!(h.rm.stats().evictions, 0);
    h.now = since + T;
    // The abandoned session goes first.
    assert_eq!(h.rm.evict_for(&td, &mut h.tpm, h.now), Ok(true));
    assert!(!h.tpm.sessions().contains(&b1));
    assert_eq!(h.rm.stats().evictions, 1);
    assert_eq!(h.rm.stats().abandoned, 0);
    // The slot is d's: a newcomer cannot take it.
    let mut e = h.space();
    assert!(start(&mut h, &mut e).is_err());
    let d1 = start_as(&mut h, &mut d, &td).unwrap();
    h.rm.wait_end(td, h.now);
    // Next: the oldest owned session (a1), never the untracked one, never a young one.
    assert!(start(&mut h, &mut e).is_err());
    let te = h.rm.wait_begin(&e, h.now, h.exhausted_rc).unwrap();
    h.now += T;
    assert_eq!(h.rm.evict_for(&te, &mut h.tpm, h.now), Ok(true));
    let left = h.tpm.sessions();
    assert!(!left.contains(&a1) && left.contains(&ext) && left.contains(&c1));
    assert!(left.contains(&d1));
    // Counted for the space it was taken from (the abandoned one had no space), and
    // forgotten when that space closes.
    assert_eq!(h.rm.evictions_of(a.id()), 1);
    assert_eq!(h.rm.evictions_of(c.id()) + h.rm.evictions_of(d.id()), 0);
    h.close(&mut a);
    assert_eq!(h.rm.evictions_of(a.id()), 0);
    start_as(&mut h, &mut e, &te).unwrap();
    h.rm.wait_end(te, h.now);
    // Only untracked sessions left to take: nothing is eligible.
    let mut h = harness(2);
    h.tpm.external_session();
    h.tpm.external_session();
    let mut f = h.space();
    assert!(start(&mut h, &mut f).is_err());
    let tf = h.rm.wait_begin(&f, h.now, h.exhausted_rc).unwrap();
    h.now += 10 * T;
    assert_eq!(h.rm.evict_for(&tf, &mut h.tpm, h.now), Ok(false));
    assert_eq!(h.tpm.sessions().len(), 2);
    // The head polls: once the outside world frees a slot, the TPM's answer lets it in.
    let ext = h.tpm.sessions()[0];
    h.tpm.drop_session(ext);
    h.now += P;
    assert_eq!(h.rm.wait_step(&tf, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    start_as(&mut h, &mut f, &tf).unwrap();
    h.rm.wait_end(tf, h.now);
}

#[test]
fn session_memory_waiters_poll_and_never_evict() {
    let mut h = harness(64);
    let mut a = h.space();
    let old = start(&mut h, &mut a).unwrap();
    // Someone outside tpmrs keeps three sessions loaded: no room to load or start one.
    let ext: Vec<u32> = (0..3).map(|_| h.tpm.external_loaded_session()).collect();
    assert_eq!(
        h.exec(&mut a, &use_cmd(&[old])),
        Err(RmError::SessionsExhausted)
    );
    let mut b = h.space();
    assert_eq!(start(&mut h, &mut b), Err(RmError::SessionsExhausted));
    let tb = h.rm.wait_begin(&b, h.now, h.exhausted_rc).unwrap();
    let t0 = h.now;
    while h.now + P < t0 + T {
        h.now += P;
        assert_eq!(h.rm.wait_step(&tb, &mut h.tpm, h.now), Ok(WaitStep::Retry));
        assert_eq!(
            start_as(&mut h, &mut b, &tb),
            Err(RmError::SessionsExhausted)
        );
    }
    assert_eq!(
        h.rm.stats().evictions,
        0,
        "evicting a saved session frees no memory"
    );
    assert!(h.tpm.sessions().contains(&old));
    h.tpm.drop_session(ext[0]);
    h.now += P;
    assert_eq!(h.rm.wait_step(&tb, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    start_as(&mut h, &mut b, &tb).unwrap();
    h.rm.wait_end(tb, h.now);
    assert_eq!(use_rc(&mut h, &mut a, old), 0);
}

/// When nothing tpmrs holds could be evicted for a waiter -- every slot is held outside
/// tpmrs, or loaded-session memory is -- the wait still ends after SESSION_TIMEOUT, with the
/// TPM's own answer, and nothing outside tpmrs is touched.
#[test]
fn a_wait_for_slots_held_outside_tpmrs_ends_with_the_tpms_answer() {
    let mut h = harness(4);
    let ext: Vec<u32> = (0..4).map(|_| h.tpm.external_session()).collect();
    let mut a = h.space();
    let (r, waited) = h.run(&mut a, &start_auth_session(SE_HMAC, &[1; 16]));
    assert_eq!(rc(&r.unwrap()), 0x905);
    assert!((T..T + 2 * P).contains(&waited), "waited {waited}");
    assert_eq!(h.rm.stats().evictions, 0);
    assert_eq!(h.tpm.sessions(), ext);
    assert_eq!(h.rm.stats().waiting, 0);
    // Slots free again: served at once.
    h.tpm.drop_session(ext[0]);
    start(&mut h, &mut a).unwrap();
    h.close(&mut a);

    // Loaded-session memory held outside: a's command with its saved session gets the
    // TPM's TPM_RC_SESSION_MEMORY after SESSION_TIMEOUT, and the session stays a's.
    let mut h = harness(64);
    let mut a = h.space();
    let old = start(&mut h, &mut a).unwrap();
    let ext: Vec<u32> = (0..3).map(|_| h.tpm.external_loaded_session()).collect();
    let (r, waited) = h.run(&mut a, &use_cmd(&[old]));
    assert_eq!(rc(&r.unwrap()), 0x903);
    assert!((T..T + 2 * P).contains(&waited), "waited {waited}");
    assert!(h.tpm.sessions().contains(&old));
    h.tpm.drop_session(ext[0]);
    assert_eq!(use_rc(&mut h, &mut a, old), 0);
    h.close(&mut a);
}

#[test]
fn a_continued_session_is_protected_again() {
    let mut h = harness(1);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    let s = start(&mut h, &mut a).unwrap();
    let blob = context_save_blob(&h.success(&mut a, &context_save(s)));
    h.close(&mut a);
    h.now += 10 * T;
    // b continues it just now: protected for SESSION_TIMEOUT from now.
    assert_eq!(rhandle(&h.success(&mut b, &context_load(&blob))), s);
    assert!(start(&mut h, &mut c).is_err());
    let tc = h.rm.wait_begin(&c, h.now, h.exhausted_rc).unwrap();
    let since = h.now;
    let (t0, now) = (h.rm.sessions().get(s).unwrap().owned_since_ns, since + T);
    assert!(now - t0 < T + 10 * MS);
    assert_eq!(h.rm.evict_for(&tc, &mut h.tpm, t0 + T - 1), Ok(false));
    h.now = since + T + P;
    assert_eq!(h.rm.evict_for(&tc, &mut h.tpm, h.now), Ok(true));
    h.rm.wait_end(tc, h.now);
}

#[test]
fn reuse_hazard_handle_reissued_to_another_space() {
    let mut h = harness(1);
    let (mut a, mut b) = (h.space(), h.space());
    let s = start(&mut h, &mut a).unwrap();
    let (r, waited) = h.run(&mut b, &start_auth_session(SE_HMAC, &[2; 16]));
    let sb = rhandle(&r.unwrap());
    assert!((T..T + 2 * P).contains(&waited), "waited {waited}");
    assert_eq!(sb, s, "the fake TPM hands the same number out again");
    assert_eq!(h.rm.stats().evictions, 1);
    // a's first reference: the deterministic answer, nothing sent.
    let before = h.tpm_commands();
    assert_eq!(use_rc(&mut h, &mut a, s), expired_s(1));
    assert_eq!(h.tpm_commands(), before);
    // Then: not a's (b's now).
    assert_eq!(use_rc(&mut h, &mut a, s), rm(rc_handle_at_session(1)));
    let r = h.ok(&mut a, &policy_password(s));
    assert_eq!(rc(&r), rm(rc_handle_at_handle(1)));
    assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    // In the handle area: handle position.
    let mut c = h.space();
    let cs = {
        let (r, _) = h.run(&mut c, &start_auth_session(SE_HMAC, &[3; 16]));
        rhandle(&r.unwrap())
    };
    let r = h.ok(&mut b, &policy_password(sb));
    assert_eq!(rc(&r), EXPIRED_H1);
    assert_eq!(use_rc(&mut h, &mut c, cs), 0);
}

#[test]
fn reuse_hazard_handle_reissued_to_the_same_space() {
    // a's session `old` is evicted for d; d frees the slot again; a, not told yet, starts a
    // session and the TPM hands it the number `old` again. tpmrs starts a's session once
    // more (a second slot is free) and flushes the first: a gets another number, and no
    // handle is ever rewritten.
    let mut h = harness(3);
    let (mut a, mut b, mut c, mut d) = (h.space(), h.space(), h.space(), h.space());
    let old = start(&mut h, &mut a).unwrap();
    let _s1 = start(&mut h, &mut b).unwrap();
    let s2 = start(&mut h, &mut c).unwrap();
    let sd = start_evicting_then_flush(&mut h, &mut d);
    assert_eq!(sd, old, "the oldest session went to d");
    h.success(&mut c, &flush_context(s2));
    let starts = h.tpm.starts;
    let new = start(&mut h, &mut a).unwrap();
    assert_eq!(
        h.tpm.starts,
        (starts.0 + 2, starts.1 + 1),
        "two of tpmrs' own (the dead number held, a clean one), the client's once"
    );
    assert_eq!(new, s2, "the second number the TPM gave");
    assert!(
        !h.tpm.sessions().contains(&old),
        "the first new session is flushed"
    );
    assert_eq!(h.rm.sessions().entries().len(), 2);
    // `old` is EXPIRED once (nothing sent), then unknown; `new` is a's.
    let before = h.tpm_commands();
    assert_eq!(use_rc(&mut h, &mut a, old), expired_s(1));
    assert_eq!(h.tpm_commands(), before, "nothing sent");
    assert_eq!(use_rc(&mut h, &mut a, old), rm(rc_handle_at_session(1)));
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    // The TPM's handle is the session's name everywhere.
    assert_eq!(rc(&h.ok(&mut a, &policy_password(new))), 0);
    let blob = context_save_blob(&h.success(&mut a, &context_save(new)));
    assert_eq!(rhandle(&h.success(&mut a, &context_load(&blob))), new);
    h.success(&mut a, &flush_context(new));
    for s in [&mut a, &mut b, &mut c, &mut d] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

#[test]
fn reuse_hazard_every_evicted_number_is_skipped() {
    // a's two sessions are evicted together for d, and d frees its slot again: the TPM's
    // two lowest free numbers are both a's old ones. a, told of neither, starts a session:
    // tpmrs holds each of those and starts again until a clean number comes, then flushes
    // them, so neither old reference ever reaches a new session.
    let mut h = harness(4);
    let (mut a, mut b, mut c, mut d) = (h.space(), h.space(), h.space(), h.space());
    let old1 = start(&mut h, &mut a).unwrap();
    let old2 = start(&mut h, &mut a).unwrap();
    let s3 = start(&mut h, &mut b).unwrap();
    let _s4 = start(&mut h, &mut c).unwrap();
    start_evicting_then_flush(&mut h, &mut d);
    assert_eq!(h.rm.stats().evictions, 2, "a's whole space");
    h.success(&mut b, &flush_context(s3));
    let starts = h.tpm.starts;
    let new = start(&mut h, &mut a).unwrap();
    assert_eq!(
        h.tpm.starts,
        (starts.0 + 3, starts.1 + 1),
        "three of tpmrs' own (two dead numbers held, a clean one), the client's once"
    );
    assert_eq!(new, s3, "the first clean number");
    assert!(!h.tpm.sessions().contains(&old1) && !h.tpm.sessions().contains(&old2));
    // Each old reference is EXPIRED once (nothing sent); the new one is a's.
    let before = h.tpm_commands();
    assert_eq!(use_rc(&mut h, &mut a, old2), expired_s(1));
    assert_eq!(use_rc(&mut h, &mut a, old1), expired_s(1));
    assert_eq!(h.tpm_commands(), before, "nothing sent");
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    for s in [&mut a, &mut b, &mut c, &mut d] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

#[test]
fn reuse_hazard_without_a_second_slot_waits_and_never_gets_its_dead_number() {
    // The same, with one slot: tpmrs holds a's dead number, and the next start finds no
    // slot, so a's command is not sent and waits like one the TPM refused, evicting nobody
    // (b holds nothing). SESSION_TIMEOUT after its session was evicted (its wait counts from
    // there), with nothing tpmrs could free, it gives up waiting: it is sent once, with the
    // dead number still held, and gets the TPM's answer, never the number its old reference
    // names (issue 20, items 3 and 4; it used to be handed over, its old reference
    // forgotten).
    let mut h = harness(1);
    let (mut a, mut b) = (h.space(), h.space());
    let old = start(&mut h, &mut a).unwrap();
    start_evicting_then_flush(&mut h, &mut b);
    let evictions = h.rm.stats().evictions;
    let evicted_by = h.now;
    let starts = h.tpm.starts;
    let (r, waited) = h.run(&mut a, &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(rc(&r.unwrap()), 0x905, "the TPM's answer");
    // Its wait counts from the eviction of its session (during b's start, one command of
    // 1 ms before `evicted_by`), not from its request.
    assert!(
        h.now >= evicted_by - MS + T,
        "gave up at {}",
        h.now - evicted_by
    );
    assert!(waited < T, "waited {waited}");
    assert_eq!(
        h.tpm.starts.1 - starts.1,
        1,
        "the client's command was sent once, when it gave up"
    );
    assert_eq!(h.rm.stats().evictions, evictions, "nobody evicted");
    assert_eq!(h.rm.stats().dead_numbers_handed_over, 0);
    assert_eq!(h.tpm.sessions(), vec![]);
    // a is still told, and then gets its number back, clean.
    assert_eq!(use_rc(&mut h, &mut a, old), expired_s(1));
    assert_eq!(start(&mut h, &mut a), Ok(old));
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn reuse_hazard_without_a_clean_number_waits_for_one() {
    // a's session is evicted for c; c frees it again. With two slots, the second held by b,
    // a's new session lands on its old number and no other is free: it waits instead of
    // taking it, and gets a clean number as soon as b frees its slot.
    let mut h = harness(2);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    let old = start(&mut h, &mut a).unwrap();
    let sb = start(&mut h, &mut b).unwrap();
    h.now += T;
    let sc = start_evicting_then_flush(&mut h, &mut c);
    assert_eq!(sc, old, "a's slot went to c");
    let mut req = Request::new();
    let cmd = start_auth_session(SE_HMAC, &[3; 16]);
    let mut rsp = vec![0u8; tpmrs_proto::TPM_BUFSIZE];
    let step =
        h.rm.step(&mut req, &mut a, &mut h.tpm, h.now, &cmd, &mut rsp);
    assert!(matches!(step, Step::Sleep { .. }), "it waits");
    assert!(
        !h.tpm.sessions().contains(&old),
        "the session under its old number is flushed"
    );
    h.success(&mut b, &flush_context(sb));
    h.rm.take_wakeups(&mut |_| {});
    h.now += P;
    let Step::Done(r) =
        h.rm.step(&mut req, &mut a, &mut h.tpm, h.now, &cmd, &mut rsp)
    else {
        panic!("served once b's slot is free");
    };
    let new = rhandle(&rsp[..r.unwrap()]);
    assert_ne!(new, old);
    h.rm.end_request(req, h.now);
    assert_eq!(use_rc(&mut h, &mut a, old), expired_s(1), "still told");
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    for s in [&mut a, &mut b, &mut c] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

#[test]
fn evicted_session_expires_before_the_number_is_reissued() {
    // b's waiting StartAuthSession evicts a's session; a's next use is EXPIRED, once, and a
    // FlushContext of it is answered success without sending anything.
    let mut h = harness(1);
    let (mut a, mut b) = (h.space(), h.space());
    let old = start(&mut h, &mut a).unwrap();
    let (r, _) = h.run(&mut b, &start_auth_session(SE_HMAC, &[2; 16]));
    let sb = rhandle(&r.unwrap());
    assert_eq!(sb, old, "the TPM hands the number to b");
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    h.success(&mut a, &flush_context(old));
    assert_eq!(h.tpm.count(CC_FLUSH_CONTEXT), flushes, "nothing sent");
    assert_eq!(h.tpm.sessions(), vec![sb], "b's session survives a's flush");
    assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn an_evicted_session_is_answered_without_a_turn() {
    // The glue asks `answer_at_once` before it queues for the TPM: a's first use of its
    // evicted session is answered there, once, with nothing sent; anything else needs the
    // TPM (None), malformed commands included.
    let mut h = harness(1);
    let (mut a, mut b) = (h.space(), h.space());
    let old = start(&mut h, &mut a).unwrap();
    let mut rsp = vec![0u8; tpmrs_proto::TPM_BUFSIZE];
    assert!(
        h.rm.answer_at_once(&a, &use_cmd(&[old]), &mut rsp)
            .is_none(),
        "a live session"
    );
    let (r, _) = h.run(&mut b, &start_auth_session(SE_HMAC, &[2; 16]));
    let sb = rhandle(&r.unwrap());
    let before = (h.tpm_commands(), h.rm.stats().client_commands);
    let n =
        h.rm.answer_at_once(&a, &use_cmd(&[old]), &mut rsp)
            .unwrap()
            .unwrap();
    assert_eq!(rc(&rsp[..n]), expired_s(1));
    assert_eq!(h.tpm_commands(), before.0, "nothing sent");
    assert_eq!(
        h.rm.stats().client_commands,
        before.1 + 1,
        "counted as a command"
    );
    // Told once: the next use goes through the resource manager (and is not a's).
    assert!(h
        .rm
        .answer_at_once(&a, &use_cmd(&[old]), &mut rsp)
        .is_none());
    assert_eq!(use_rc(&mut h, &mut a, old), rm(rc_handle_at_session(1)));
    assert!(h.rm.answer_at_once(&b, &use_cmd(&[sb]), &mut rsp).is_none());
    assert!(
        h.rm.answer_at_once(&a, &[0x80, 0x01, 0, 0], &mut rsp)
            .is_none(),
        "malformed"
    );
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn context_gap_repaired_transparently() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(6);
    let (mut a, mut b) = (h.space(), h.space());
    let sa = start(&mut h, &mut a).unwrap();
    let sb = start(&mut h, &mut b).unwrap();
    for _ in 0..20 {
        assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    }
    // b's own ContextSave and ContextLoad too.
    for _ in 0..10 {
        let blob = context_save_blob(&h.success(&mut b, &context_save(sb)));
        h.success(&mut b, &context_load(&blob));
    }
    let repairs = h.rm.stats().gap_repairs;
    assert!(repairs >= 4, "repairs {repairs}");
    assert_eq!(h.rm.stats().evictions, 0);
    assert_eq!(
        use_rc(&mut h, &mut a, sa),
        0,
        "a's session was renewed, not lost"
    );
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn context_gap_evicts_a_session_saved_by_its_client() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(6);
    let (mut a, mut b) = (h.space(), h.space());
    let sa = start(&mut h, &mut a).unwrap();
    let blob = context_save_blob(&h.success(&mut a, &context_save(sa)));
    let sb = start(&mut h, &mut b).unwrap();
    for _ in 0..10 {
        assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    }
    assert_eq!(h.rm.stats().evictions, 1);
    assert!(!h.tpm.sessions().contains(&sa));
    // a's next reference gets the deterministic answer; its blob is refused by the TPM.
    let r = h.ok(&mut a, &context_save(sa));
    assert_eq!(rc(&r), EXPIRED_H1);
    let r = h.ok(&mut a, &context_load(&blob));
    assert_ne!(rc(&r), 0);
    // An abandoned one is evicted the same way.
    let mut c = h.space();
    let sc = start(&mut h, &mut c).unwrap();
    context_save_blob(&h.success(&mut c, &context_save(sc)));
    h.close(&mut c);
    for _ in 0..10 {
        assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    }
    assert!(!h.tpm.sessions().contains(&sc));
    assert_eq!(h.rm.stats().abandoned, 0);
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn context_gap_held_by_an_untracked_session_is_bounded() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(4);
    h.tpm.external_session(); // the oldest: we cannot renew it
    let mut a = h.space();
    let sa = start(&mut h, &mut a).unwrap();
    for _ in 0..5 {
        let before = h.tpm_commands();
        let _ = h.exec(&mut a, &use_cmd(&[sa]));
        assert!(h.tpm_commands() - before < 30);
    }
    // Our session could not be saved: it was flushed, not leaked.
    assert!(!h.tpm.sessions().contains(&sa));
    assert_eq!(h.tpm.sessions().len(), 1);
}

#[test]
fn continuation_across_spaces() {
    let mut h = harness_with(
        64,
        Config {
            max_abandoned: 2,
            ..Config::default()
        },
    );
    // Process 1: `tpm2 startauthsession -S s.ctx`.
    let mut a = h.space();
    let r = h.success(&mut a, &start_auth_session(SE_POLICY, &[1; 16]));
    let s = rhandle(&r);
    assert_eq!(s >> 24, 3);
    let blob = context_save_blob(&h.success(&mut a, &context_save(s)));
    h.close(&mut a);
    assert_eq!(h.tpm.sessions(), vec![s], "not flushed at close");
    assert_eq!((h.rm.stats().abandoned, h.rm.stats().sessions), (1, 1));
    // Nobody may use it without loading it; everybody sees it in the saved-session list
    // (what `tpm2 getcap handles-saved-session` shows, and `tpm2 flushcontext -s` flushes).
    let mut b = h.space();
    let before = h.tpm_commands();
    assert_eq!(use_rc(&mut h, &mut b, s), rm(rc_handle_at_session(1)));
    assert_eq!(h.tpm_commands(), before);
    let (_, listed) = handles_of(&h.success(&mut b, &get_capability(CAP_HANDLES, 0x0300_0000, 8)));
    // In the HMAC form, as the TPM lists saved sessions.
    assert_eq!(listed, vec![0x0200_0000 | (s & 0x00FF_FFFF)]);
    // Process 2: `tpm2 ... -p session:s.ctx`.
    assert_eq!(rhandle(&h.success(&mut b, &context_load(&blob))), s);
    assert_eq!(h.rm.stats().continuation_hits, 1);
    assert_eq!(h.rm.stats().abandoned, 0);
    assert_eq!(h.rm.sessions().get(s).unwrap().owner, Some(b.id()));
    h.success(&mut b, &policy_password(s));
    // It saves it back and exits; process 3 loads it and flushes it (`tpm2 flushcontext`).
    let blob = context_save_blob(&h.success(&mut b, &context_save(s)));
    h.close(&mut b);
    let mut c = h.space();
    h.success(&mut c, &context_load(&blob));
    h.success(&mut c, &flush_context(s));
    h.tpm.assert_empty();
    assert_eq!(h.rm.stats().continuation_hits, 2);
    // Overflow: the oldest abandoned session is flushed.
    let mut blobs = vec![];
    for i in 0..3u8 {
        let mut x = h.space();
        let r = h.success(&mut x, &start_auth_session(SE_HMAC, &[i; 16]));
        let sx = rhandle(&r);
        blobs.push((sx, context_save_blob(&h.success(&mut x, &context_save(sx)))));
        h.close(&mut x);
    }
    assert_eq!(h.rm.stats().abandoned, 2);
    assert!(!h.tpm.sessions().contains(&blobs[0].0));
    assert!(h.tpm.sessions().contains(&blobs[1].0));
    assert!(h.tpm.sessions().contains(&blobs[2].0));
    let r = h.ok(&mut c, &context_load(&blobs[0].1));
    assert_ne!(rc(&r), 0);
    assert_eq!(rc(&r) & LAYER, 0, "the TPM's own refusal");
    h.success(&mut c, &context_load(&blobs[2].1));
    // Sessions loaded or saved by us are flushed at close, as before.
    h.close(&mut c);
    assert_eq!(h.tpm.sessions(), vec![blobs[1].0]);
    // Continuation off: flushed at close.
    let mut h = harness_with(
        64,
        Config {
            max_abandoned: 0,
            ..Config::default()
        },
    );
    let mut a = h.space();
    let s = start(&mut h, &mut a).unwrap();
    h.success(&mut a, &context_save(s));
    h.close(&mut a);
    h.tpm.assert_empty();
}

/// A space's session whose flush at close runs but whose response is lost, while the TPM
/// cannot be asked at once whether the session is still there: an unverified flush.
fn close_with_an_unverified_flush(h: &mut Harness<FakeTpm>) -> u32 {
    let mut a = h.space();
    let s = start(h, &mut a).unwrap();
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::TransportAfter(-5));
    h.tpm.fail(CC_GET_CAPABILITY, 0, Fault::Transport(-5));
    h.close(&mut a);
    assert_eq!(h.rm.unverified_flushes(), &[s]);
    assert!(h.rm.pending_flushes().is_empty());
    s
}

#[test]
fn unverified_flush_dropped_when_the_handle_is_reissued_to_us() {
    let mut h = harness(64);
    let mut b = h.space();
    let s = close_with_an_unverified_flush(&mut h);
    // Still no answer to the check before b's StartAuthSession, which gets through: the TPM
    // hands the same handle to b, so the queued entry is stale and is dropped, never sent.
    h.tpm.fail(CC_GET_CAPABILITY, 0, Fault::Transport(-5));
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    let sb = start(&mut h, &mut b).unwrap();
    assert_eq!(sb, s);
    assert!(h.rm.unverified_flushes().is_empty());
    assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    assert_eq!(h.tpm.count(CC_FLUSH_CONTEXT), flushes);
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn a_flush_lost_on_the_transport_is_settled_at_once() {
    // While tpmrs holds the chip nobody else can take the handle: it asks the TPM whether
    // the session is still there, and flushes it again if so. Nothing is queued.
    for fault in [Fault::Transport(-62), Fault::TransportAfter(-62)] {
        let mut h = harness(64);
        let mut a = h.space();
        start(&mut h, &mut a).unwrap();
        h.tpm.fail(CC_FLUSH_CONTEXT, 0, fault);
        h.close(&mut a);
        assert!(h.rm.pending_flushes().is_empty(), "{fault:?}");
        assert!(h.rm.unverified_flushes().is_empty(), "{fault:?}");
        h.tpm.assert_empty();
    }
}

#[test]
fn an_unverified_flush_never_hits_a_handle_given_to_someone_else() {
    let mut h = harness(64);
    let mut b = h.space();
    let s = close_with_an_unverified_flush(&mut h);
    // The flush had run; a user outside tpmrs (/dev/tpm0, /dev/tpmrm0) gets the number.
    let theirs = h.tpm.external_session();
    assert_eq!(theirs, s);
    let flushes = h.tpm.count(CC_FLUSH_CONTEXT);
    h.success(&mut b, &get_random(8));
    assert_eq!(h.tpm.count(CC_FLUSH_CONTEXT), flushes, "never flushed");
    assert!(h.tpm.sessions().contains(&theirs));
    assert!(h.rm.unverified_flushes().is_empty());
    assert_eq!(h.rm.stats().flushes_given_up, 1);
    // Had the flush not run, the session would be ours and stay behind: the price of
    // never guessing, counted in flushes_given_up.
    h.close(&mut b);
    h.tpm.drop_session(theirs);
    h.tpm.assert_empty();
}

#[test]
fn failed_flushes_never_leak_sessions() {
    let mut h = harness(64);
    let (mut a, mut b) = (h.space(), h.space());
    let s = start(&mut h, &mut a).unwrap();
    assert!(start(&mut h, &mut b).is_ok());
    // The TPM refuses the close's flush ("not executed"): the session is still ours.
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_RETRY));
    h.close(&mut a);
    assert_eq!(h.rm.pending_flushes(), &[s]);
    // A waiter is woken when the queued flush finally frees the slot.
    h.tpm.max_sessions = 2;
    let mut c = h.space();
    assert!(h.tpm.sessions().len() == 2);
    assert!(start(&mut h, &mut c).is_ok(), "retried first, then started");
    assert!(h.rm.pending_flushes().is_empty());
    h.close(&mut b);
    h.close(&mut c);
    h.tpm.assert_empty();
}

/// The glue's view of one client in the simulation.
struct Client {
    space: Space,
    sessions: Vec<(u32, u64)>,
    ticket: Option<(Ticket, u64)>,
    next_at: u64,
    holding: bool,
    rounds_left: u32,
}

/// 40 clients each wanting 3 sessions at once (120 > 64 slots), 3 rounds each, random hold
/// times (up to 1.5 s: frees come before evictions; up to 5 s: evictions), several seeds, a
/// controllable clock. Every client finishes; waiters are served in FIFO order of their
/// space's queue place (a space keeps it across the requests of one turn) or on a gang
/// reservation of their space; every wait is bounded by T + P + Q·δ (Q = 40 waiters at
/// most, δ = 5 ms for one eviction and retry in this simulation, where a TPM command costs
/// 1 ms); no session is evicted before it has lived T; with holds shorter than T nothing
/// is evicted at all.
#[test]
fn simulation_many_clients() {
    for seed in 1..=6u64 {
        for max_hold_ms in [1_500, 5_000] {
            simulate(seed, max_hold_ms);
        }
    }
}

fn simulate(seed: u64, max_hold_ms: u64) {
    const CLIENTS: usize = 40;
    let mut h = harness(64);
    let mut rnd = common::seeded_rng(seed);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            space: h.space(),
            sessions: vec![],
            ticket: None,
            next_at: rnd(500) * MS,
            holding: false,
            rounds_left: 3,
        })
        .collect();
    // (ticket id, begin, end)
    let mut waits: Vec<(u64, u64, u64)> = vec![];
    let mut restarts = 0;
    let mut evicted_ages = vec![];
    while let Some(i) = (0..CLIENTS)
        .filter(|i| clients[*i].rounds_left > 0)
        .min_by_key(|i| (clients[*i].next_at, *i))
    {
        h.now = h.now.max(clients[i].next_at);
        assert!(h.now < 300 * SEC, "livelock");
        let others: Vec<(u64, u64)> = (0..CLIENTS)
            .filter(|j| *j != i)
            .filter_map(|j| clients[j].ticket.as_ref().map(|t| (t.0.id(), t.1)))
            .collect();
        let c = &mut clients[i];
        if c.holding {
            let handles: Vec<u32> = c.sessions.iter().map(|s| s.0).collect();
            let r = h.ok(&mut c.space, &use_cmd(&handles));
            let code = rc(&r);
            if code != 0 {
                let n = (1..=3).find(|n| code == expired_s(*n)).expect("EXPIRED");
                evicted_ages.push(h.now - c.sessions[n as usize - 1].1);
                restarts += 1;
            } else {
                c.rounds_left -= 1;
            }
            for (s, _) in c.sessions.drain(..) {
                let r = h.ok(&mut c.space, &flush_context(s));
                assert!(rc(&r) == 0 || rc(&r) & LAYER != 0);
            }
            c.holding = false;
            c.next_at = h.now + rnd(300) * MS;
            if c.rounds_left == 0 {
                h.rm.close_space(&mut c.space, &mut h.tpm, h.now);
            }
        } else {
            let mut go = true;
            if let Some((t, _)) = &c.ticket {
                match h.rm.wait_step(t, &mut h.tpm, h.now).unwrap() {
                    WaitStep::Retry => {}
                    WaitStep::Sleep { until_ns } => {
                        c.next_at = until_ns;
                        go = false;
                    }
                }
            }
            if go {
                let cmd = start_auth_session(SE_HMAC, &[7; 16]);
                let gang = h.rm.scheduler().gang(c.space.id()) > 0;
                match h.exec_as(&mut c.space, c.ticket.as_ref().map(|t| &t.0), &cmd) {
                    Err(RmError::SessionsExhausted) => {
                        if c.ticket.is_none() {
                            c.ticket = Some((
                                h.rm.wait_begin(&c.space, h.now, h.exhausted_rc).unwrap(),
                                h.now,
                            ));
                        }
                        c.next_at = h.now;
                    }
                    Ok(r) => {
                        assert_eq!(rc(&r), 0);
                        // FIFO: served only if every earlier waiter is served or holds a
                        // reservation too; without a ticket, only if nobody waits; or on a
                        // reservation of its space (a gang grant).
                        match &c.ticket {
                            _ if gang => {}
                            // (A space that came back to its kept place after this one
                            // queued is not overtaken: it asked again after this one.)
                            Some((t, since)) => {
                                let earlier =
                                    others.iter().filter(|o| o.0 < t.id() && o.1 <= *since);
                                for id in earlier.map(|o| o.0) {
                                    assert!(h.rm.scheduler().is_reserved(id), "overtook {id}");
                                }
                            }
                            None => assert!(others.is_empty(), "a newcomer overtook"),
                        }
                        if let Some((t, since)) = c.ticket.take() {
                            waits.push((t.id(), since, h.now));
                            h.rm.wait_end(t, h.now);
                        }
                        c.sessions.push((rhandle(&r), h.now));
                        if c.sessions.len() == 3 {
                            c.holding = true;
                            c.next_at = h.now + rnd(max_hold_ms) * MS;
                        } else {
                            c.next_at = h.now + MS;
                        }
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        if h.rm.take_wakeup() {
            for c in clients.iter_mut().filter(|c| c.ticket.is_some()) {
                c.next_at = c.next_at.min(h.now);
            }
        }
    }
    let q = CLIENTS as u64;
    let bound = T + P + q * 5 * MS;
    let longest = waits.iter().map(|w| w.2 - w.1).max().unwrap();
    println!(
        "seed {seed} hold {max_hold_ms} ms: waits {} longest {} ms (bound {} ms) \
         evictions {} restarts {} end {} s",
        waits.len(),
        longest / MS,
        bound / MS,
        h.rm.stats().evictions,
        restarts,
        h.now / SEC
    );
    assert!(waits.len() > 40, "the simulation must exhaust the TPM");
    assert!(longest <= bound, "longest wait {longest}");
    assert!(
        h.rm.stats().longest_wait_ns >= longest,
        "waits counted per turn"
    );
    assert!(evicted_ages.iter().all(|a| *a >= T), "{evicted_ages:?}");
    // Per space: clients that hold their sessions for less than SESSION_TIMEOUT are never
    // evicted (a waiter only takes from a space whose turn began T ago).
    if max_hold_ms * MS < T {
        assert_eq!(h.rm.stats().evictions, 0);
        assert_eq!(restarts, 0);
    }
    assert!(h.rm.sessions().is_empty());
    h.tpm.assert_empty();
}

/// A fake TPM with `slots` slots and the default headroom (2).
fn harness_headroom(slots: usize) -> Harness<FakeTpm> {
    harness_with(slots, Config::default())
}

/// Steps the command `cmd` of `s` once through `Rm::step` at the harness's time; a
/// response goes to `LAST`.
fn step_once(h: &mut Harness<FakeTpm>, s: &mut Space, req: &mut Request, cmd: &[u8]) -> Step {
    let mut rsp = vec![0u8; tpmrs_proto::TPM_BUFSIZE];
    let step = h.rm.step(req, s, &mut h.tpm, h.now, cmd, &mut rsp);
    h.rm.take_wakeup();
    if let Step::Done(Ok(n)) = step {
        rsp.truncate(n);
        LAST.with(|l| *l.borrow_mut() = rsp);
    }
    step
}

thread_local! {
    static LAST: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The response code of the last response `step_once` got.
fn last_rc() -> u32 {
    LAST.with(|l| rc(&l.borrow()))
}

/// No self-eviction: a lone client leaking sessions, with no other space to take from,
/// gets the TPM's TPM_RC_SESSION_HANDLES after SESSION_TIMEOUT, as on tpmrm0; its own
/// sessions stay, and the headroom's slots stay free for everyone else.
#[test]
fn a_lone_leaking_client_gets_session_handles_and_keeps_its_sessions() {
    let mut h = harness_headroom(8);
    assert_eq!(h.rm.session_budget(), Some(6));
    let mut a = h.space();
    let mine: Vec<u32> = (0..6).map(|_| start(&mut h, &mut a).unwrap()).collect();
    let (r, waited) = h.run(&mut a, &start_auth_session(SE_HMAC, &[1; 16]));
    assert_eq!(rc(&r.unwrap()), 0x905);
    assert!((T..T + 2 * P).contains(&waited), "waited {waited}");
    assert_eq!(h.rm.stats().evictions, 0);
    for s in &mine {
        assert_eq!(use_rc(&mut h, &mut a, *s), 0);
    }
    assert_eq!(h.rm.stats().waiting, 0);
    // The headroom: the kernel or /dev/tpm0 can still start two sessions.
    h.tpm.external_session();
    h.tpm.external_session();
    assert_eq!(h.tpm.sessions().len(), 8);
    h.close(&mut a);
}

/// The headroom holds while tpmrs is saturated and its clients rotate inside the budget:
/// a user outside tpmrs starts a session at any time.
#[test]
fn headroom_for_users_outside_tpmrs_while_saturated() {
    let mut h = harness_headroom(8);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
        start(&mut h, &mut b).unwrap();
    }
    // At the budget: c waits, and nothing is sent for it.
    let sent = starts_sent(&h);
    let cmd = start_auth_session(SE_HMAC, &[2; 16]);
    let mut req = Request::new();
    assert!(matches!(
        step_once(&mut h, &mut c, &mut req, &cmd),
        Step::Sleep { .. }
    ));
    assert_eq!(starts_sent(&h), sent);
    let outside = h.tpm.external_session();
    assert_eq!(h.tpm.sessions().len(), 7);
    // After SESSION_TIMEOUT c takes a whole space (a's: its turn began first).
    let t0 = h.now;
    let r = loop {
        match step_once(&mut h, &mut c, &mut req, &cmd) {
            Step::Done(r) => break r,
            Step::Sleep { until_ns } => h.now = until_ns,
        }
    };
    r.unwrap();
    assert_eq!(last_rc(), 0);
    assert!(h.now - t0 <= T + P);
    h.rm.end_request(req, h.now);
    assert_eq!(h.rm.stats().evictions, 3, "all of a's sessions");
    assert_eq!(h.rm.sessions().count_owned(a.id()), 0);
    assert_eq!(h.rm.sessions().count_owned(b.id()), 3);
    // tpmrs holds 4 now, the outsider 1: the TPM has room, and still one for another user.
    h.tpm.external_session();
    h.tpm.drop_session(outside);
    for s in [&mut a, &mut b, &mut c] {
        h.close(s);
    }
}

/// A space evicted for a waiter whose space held 3 sessions at once: the waiter's space gets
/// the 3 freed slots as one turn (1 for the waiter, 2 reserved for its space); reservations
/// it does not use lapse back to the queue after SESSION_TIMEOUT / 4.
#[test]
fn gang_grant_and_its_expiry() {
    let mut h = harness(6);
    let (mut a, mut w, mut x) = (h.space(), h.space(), h.space());
    // w held 3 at once, then let them go.
    let ws: Vec<u32> = (0..3).map(|_| start(&mut h, &mut w).unwrap()).collect();
    for s in ws {
        h.success(&mut w, &flush_context(s));
    }
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
    }
    for _ in 0..3 {
        start(&mut h, &mut x).unwrap();
    }
    h.now += T;
    // w needs its sessions again: it waits, then evicts one whole space (a's: oldest turn).
    let cmd = start_auth_session(SE_HMAC, &[3; 16]);
    let mut req = Request::new();
    let r = loop {
        match step_once(&mut h, &mut w, &mut req, &cmd) {
            Step::Done(r) => break r,
            Step::Sleep { until_ns } => h.now = until_ns,
        }
    };
    r.unwrap();
    assert_eq!(last_rc(), 0);
    h.rm.end_request(req, h.now);
    assert_eq!(h.rm.stats().evictions, 3);
    assert_eq!(h.rm.scheduler().gang(w.id()), 2, "two slots kept for w");
    // Its next command is its first use of the slot it waited for: it goes first.
    h.rm.note_gathering(&mut w, h.now);
    assert_eq!(w.gathering(), Gathering::All);
    // After that, short of its set, with slots kept for it, but it let its sessions go
    // itself (its client has no evicted session to hear of): only its StartAuthSessions
    // go first.
    h.rm.note_gathering(&mut w, h.now);
    assert_eq!(w.gathering(), Gathering::Slots);
    // A newcomer cannot take them; w can, at once, without waiting.
    let mut n = h.space();
    assert_eq!(start(&mut h, &mut n), Err(RmError::SessionsExhausted));
    let tn = h.rm.wait_begin(&n, h.now, h.exhausted_rc).unwrap();
    start(&mut h, &mut w).unwrap();
    assert_eq!(h.rm.scheduler().gang(w.id()), 1);
    // w does not come back for the last one: it lapses to the queue (n's reservation).
    h.now += T / 4;
    assert!(matches!(
        h.rm.wait_step(&tn, &mut h.tpm, h.now),
        Ok(WaitStep::Retry)
    ));
    assert_eq!(h.rm.scheduler().gang(w.id()), 0);
    assert!(h.rm.scheduler().is_reserved(tn.id()));
    start_as(&mut h, &mut n, &tn).unwrap();
    h.rm.wait_end(tn, h.now);
    for s in [&mut a, &mut w, &mut x, &mut n] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// Runs `cmd` of `s` through the wait protocol until it is answered; returns its rc.
fn wait_through(h: &mut Harness<FakeTpm>, s: &mut Space, cmd: &[u8]) -> u32 {
    let mut req = Request::new();
    let r = loop {
        match step_once(h, s, &mut req, cmd) {
            Step::Done(r) => break r,
            Step::Sleep { until_ns } => h.now = until_ns,
        }
    };
    r.unwrap();
    h.rm.end_request(req, h.now);
    last_rc()
}

/// A waiter that evicts a space with more sessions than it needs, when its space asks for
/// more again in the same turn, keeps the rest for a retry interval: a space that grows (a
/// hog asking for 60 sessions one at a time) takes them at once, and one that does not
/// lets them go to the queue soon after.
#[test]
fn the_rest_of_a_victim_is_the_evictors_for_a_retry_interval() {
    let mut h = harness(6);
    let (mut g, mut a, mut x) = (h.space(), h.space(), h.space());
    start(&mut h, &mut g).unwrap();
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
    }
    let xs: Vec<u32> = (0..2).map(|_| start(&mut h, &mut x).unwrap()).collect();
    // g grows: it waits for its second session, which x's flush gives it after T.
    let tg = queue(&mut h, &mut g);
    h.now += T;
    h.success(&mut x, &flush_context(xs[0]));
    served(&mut h, &mut g, tg);
    // It asks again at once: it takes back its queue place and wait clock, evicts a (the
    // oldest turn), and keeps a's other two slots.
    let cmd = start_auth_session(SE_HMAC, &[3; 16]);
    assert_eq!(wait_through(&mut h, &mut g, &cmd), 0);
    assert_eq!(h.rm.stats().evictions, 3);
    assert_eq!(h.rm.scheduler().gang(g.id()), 2);
    // Its first use of the slot goes first; then, not short of what it held at once,
    // only its StartAuthSessions.
    h.rm.note_gathering(&mut g, h.now);
    assert_eq!(g.gathering(), Gathering::All);
    h.rm.note_gathering(&mut g, h.now);
    assert_eq!(g.gathering(), Gathering::Slots);
    // A newcomer cannot take them; g can, at once.
    let mut n = h.space();
    let tn = queue(&mut h, &mut n);
    start(&mut h, &mut g).unwrap();
    assert_eq!(h.rm.scheduler().gang(g.id()), 1);
    // (The glue notes after every command: the next one, after a gang slot, goes first.)
    h.rm.note_gathering(&mut g, h.now);
    assert_eq!(g.gathering(), Gathering::All);
    // g does not come back for the last one: after a retry interval (not SESSION_TIMEOUT
    // / 4, the lapse of what g needs to have its set again) it is n's.
    h.now += P;
    assert!(matches!(
        h.rm.wait_step(&tn, &mut h.tpm, h.now),
        Ok(WaitStep::Retry)
    ));
    assert_eq!(h.rm.scheduler().gang(g.id()), 0);
    assert!(h.rm.scheduler().is_reserved(tn.id()));
    served(&mut h, &mut n, tn);
    // Its kept queue place lapsed too: g is not gathering any more.
    h.now += T;
    h.rm.note_gathering(&mut g, h.now);
    assert_eq!(g.gathering(), Gathering::No);
    close_all(&mut h, [&mut g, &mut a, &mut x, &mut n]);
}

/// On a space's first wait of a turn, the rest of its victim goes to the queue at once: at
/// the go of 32 clients x 3 sessions, every space holds two and waits for a third, and a
/// victim's second slot serves the next waiter, not the evictor's space for nothing.
#[test]
fn the_rest_of_a_victim_goes_to_the_queue_on_a_first_wait() {
    let mut h = harness(6);
    let (mut g, mut a, mut x, mut n) = (h.space(), h.space(), h.space(), h.space());
    start(&mut h, &mut g).unwrap();
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
    }
    for _ in 0..2 {
        start(&mut h, &mut x).unwrap();
    }
    let tg = queue(&mut h, &mut g);
    let tn = queue(&mut h, &mut n);
    h.now += T;
    assert!(matches!(
        h.rm.wait_step(&tg, &mut h.tpm, h.now),
        Ok(WaitStep::Retry)
    ));
    assert_eq!(h.rm.stats().evictions, 3);
    assert_eq!(h.rm.scheduler().gang(g.id()), 0);
    assert!(h.rm.scheduler().is_reserved(tn.id()));
    served(&mut h, &mut g, tg);
    served(&mut h, &mut n, tn);
    close_all(&mut h, [&mut g, &mut a, &mut x, &mut n]);
}

/// ... but a waiter ahead in the queue whose space still needs slots gets them first: the
/// queue's order holds.
#[test]
fn the_rest_of_a_victim_goes_to_a_needier_waiter_ahead() {
    let mut h = harness(6);
    let (mut w, mut e, mut a, mut o) = (h.space(), h.space(), h.space(), h.space());
    // w held 3 at once, then let them go; e holds 1, a 3, o 2.
    held_then_let_go(&mut h, &mut w, 3);
    start(&mut h, &mut e).unwrap();
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
    }
    let os: Vec<u32> = (0..2).map(|_| start(&mut h, &mut o).unwrap()).collect();
    // w waits first, then e.
    let tw = queue(&mut h, &mut w);
    let te = queue(&mut h, &mut e);
    // o lets one go: w's reservation; w needs two more for its set of three.
    h.success(&mut o, &flush_context(os[0]));
    assert!(h.rm.scheduler().is_reserved(tw.id()));
    h.now += T;
    // e, the oldest waiter without a reservation, evicts a: one slot is e's, the other two
    // complete w's set, ahead of it in the queue.
    assert!(matches!(
        h.rm.wait_step(&te, &mut h.tpm, h.now),
        Ok(WaitStep::Retry)
    ));
    assert_eq!(h.rm.stats().evictions, 3);
    assert!(h.rm.scheduler().is_reserved(te.id()));
    assert_eq!(h.rm.scheduler().gang(w.id()), 2);
    assert_eq!(h.rm.scheduler().gang(e.id()), 0);
    served(&mut h, &mut e, te);
    for _ in 0..3 {
        start_as(&mut h, &mut w, &tw).unwrap();
    }
    h.rm.wait_end(tw, h.now);
    close_all(&mut h, [&mut w, &mut e, &mut a, &mut o]);
}

/// Slots freed to the queue go to the head's space until it has what it needs (its peak),
/// before the next waiter gets one: handed out one per space, every space would be short of
/// its set and wait SESSION_TIMEOUT again for the rest.
#[test]
fn freed_slots_fill_the_head_spaces_need_first() {
    let mut h = harness(4);
    let (mut w, mut o, mut x, mut y) = (h.space(), h.space(), h.space(), h.space());
    // w held 3 at once, then let them go; x takes 3, o the fourth.
    held_then_let_go(&mut h, &mut w, 3);
    let xs: Vec<u32> = (0..3).map(|_| start(&mut h, &mut x).unwrap()).collect();
    start(&mut h, &mut o).unwrap();
    // w comes back for its sessions, then y: both wait, w first.
    let tw = queue(&mut h, &mut w);
    let ty = queue(&mut h, &mut y);
    // o leaves: w's reservation. x lets two go: both kept for w's space, none for y.
    h.close(&mut o);
    assert!(h.rm.scheduler().is_reserved(tw.id()));
    for &s in &xs[..2] {
        h.success(&mut x, &flush_context(s));
    }
    assert_eq!(h.rm.scheduler().gang(w.id()), 2);
    assert!(!h.rm.scheduler().is_reserved(ty.id()));
    // w gets its three at once; the next slot freed is y's.
    served(&mut h, &mut w, tw);
    start(&mut h, &mut w).unwrap();
    start(&mut h, &mut w).unwrap();
    h.success(&mut x, &flush_context(xs[2]));
    assert!(h.rm.scheduler().is_reserved(ty.id()));
    served(&mut h, &mut y, ty);
    for s in [&mut w, &mut x, &mut y] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// A reservation a waiter leaves unused follows the same rule as any freed slot: it goes to
/// the first waiter whose space still needs one -- here one that holds a reservation already
/// and needs more for its set -- before the first waiter without a reservation.
#[test]
fn a_leaving_waiters_slot_fills_the_head_spaces_need_first() {
    let mut h = harness(4);
    let (mut w, mut o, mut x, mut y, mut z) =
        (h.space(), h.space(), h.space(), h.space(), h.space());
    // w held 4 at once, then let them go; x takes 3, o the fourth.
    held_then_let_go(&mut h, &mut w, 4);
    for _ in 0..3 {
        start(&mut h, &mut x).unwrap();
    }
    start(&mut h, &mut o).unwrap();
    // w, z and y wait, in that order; o leaves: w's reservation (w needs 3 more).
    let tw = queue(&mut h, &mut w);
    let tz = queue(&mut h, &mut z);
    let ty = queue(&mut h, &mut y);
    h.close(&mut o);
    assert!(h.rm.scheduler().is_reserved(tw.id()));
    // z, the first waiter without a reservation, evicts x: one slot is z's, two go to w's
    // space, which still needs one more.
    h.now += T;
    assert!(matches!(
        h.rm.wait_step(&tz, &mut h.tpm, h.now),
        Ok(WaitStep::Retry)
    ));
    assert!(h.rm.scheduler().is_reserved(tz.id()));
    assert_eq!(h.rm.scheduler().gang(w.id()), 2);
    // z leaves (a signal) without using its slot: it completes w's set, y gets nothing.
    h.rm.wait_end(tz, h.now);
    assert_eq!(h.rm.scheduler().gang(w.id()), 3);
    assert!(!h.rm.scheduler().is_reserved(ty.id()));
    served(&mut h, &mut w, tw);
    for _ in 0..3 {
        start(&mut h, &mut w).unwrap();
    }
    h.rm.wait_end(ty, h.now);
    close_all(&mut h, [&mut w, &mut x, &mut y, &mut z]);
}

/// A wait survives signals: a request interrupted (ended) and restarted at once takes back
/// its queue place and wait clock, so a waiter interrupted every 0.5 s is still served
/// within 2 x SESSION_TIMEOUT, ahead of those who queued after it.
#[test]
fn a_wait_survives_signals() {
    let mut h = harness(3);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
    }
    let cmd = start_auth_session(SE_HMAC, &[4; 16]);
    let mut rb = Request::new();
    assert!(matches!(
        step_once(&mut h, &mut b, &mut rb, &cmd),
        Step::Sleep { .. }
    ));
    let id = rb.ticket().unwrap().id();
    let t0 = h.now;
    h.now += MS;
    let mut rc_ = Request::new();
    assert!(matches!(
        step_once(&mut h, &mut c, &mut rc_, &cmd),
        Step::Sleep { .. }
    ));
    let mut last_signal = t0;
    let r = loop {
        if h.now >= last_signal + 500 * MS {
            // A signal: the write ends with ERESTARTSYS and is restarted at once.
            h.rm.end_request(core::mem::take(&mut rb), h.now);
            h.rm.take_wakeup();
            rb = Request::new();
            last_signal = h.now;
        }
        match step_once(&mut h, &mut b, &mut rb, &cmd) {
            Step::Done(r) => break r,
            Step::Sleep { until_ns } => {
                assert_eq!(rb.ticket().map(|t| t.id()), Some(id), "kept its place");
                h.now = until_ns.min(last_signal + 500 * MS);
            }
        }
        assert!(h.now < t0 + 10 * T, "starved");
    };
    r.unwrap();
    assert_eq!(last_rc(), 0);
    assert!(h.now - t0 <= 2 * T, "served after {} ms", (h.now - t0) / MS);
    h.rm.end_request(rb, h.now);
    // c, which queued after b, is still waiting.
    assert!(h.rm.scheduler().contains(rc_.ticket().unwrap().id()));
    h.rm.end_request(rc_, h.now);
    for s in [&mut a, &mut b, &mut c] {
        h.close(s);
    }
}

/// A waiter whose space is closed (its file released) has a stale request: stepping it
/// sleeps (no busy loop), evicts nobody, and ending it changes nothing.
#[test]
fn a_closed_space_ends_its_waiter() {
    let mut h = harness(1);
    let (mut a, mut b) = (h.space(), h.space());
    start(&mut h, &mut a).unwrap();
    let cmd = start_auth_session(SE_HMAC, &[5; 16]);
    let mut rb = Request::new();
    assert!(matches!(
        step_once(&mut h, &mut b, &mut rb, &cmd),
        Step::Sleep { .. }
    ));
    h.close(&mut b);
    assert_eq!(h.rm.stats().waiting, 0);
    h.now += 10 * T;
    assert!(matches!(
        step_once(&mut h, &mut b, &mut rb, &cmd),
        Step::Sleep { .. }
    ));
    assert_eq!(h.rm.sleep_until(&rb, h.now), Some(h.now + P));
    assert_eq!(h.rm.stats().evictions, 0);
    h.rm.end_request(rb, h.now);
    assert_eq!(h.rm.stats().waiting, 0);
    h.close(&mut a);
}

/// Spaces that each got part of a set before the slots ran out, and wait for the rest, jam
/// the TPM: the first of them takes the part-sets of those waiting behind it after a retry
/// interval, not after SESSION_TIMEOUT. Nothing else changes: the space that works keeps
/// its young set, the victim keeps its queue place, and a victim (left with nothing) never
/// does the same in turn.
#[test]
fn a_hold_and_wait_jam_is_broken_early() {
    let mut h = harness(9);
    let (mut a, mut w1, mut w2, mut w3) = (h.space(), h.space(), h.space(), h.space());
    let a_set: Vec<u32> = (0..3).map(|_| start(&mut h, &mut a).unwrap()).collect();
    let _w1s: Vec<u32> = (0..2).map(|_| start(&mut h, &mut w1).unwrap()).collect();
    let _w2s: Vec<u32> = (0..2).map(|_| start(&mut h, &mut w2).unwrap()).collect();
    let w3s: Vec<u32> = (0..2).map(|_| start(&mut h, &mut w3).unwrap()).collect();
    let t1 = queue(&mut h, &mut w1);
    let since = h.now;
    let t2 = queue(&mut h, &mut w2);
    let t3 = queue(&mut h, &mut w3);
    let since3 = h.now;
    // Not before a retry interval.
    assert_eq!(h.rm.evict_for(&t1, &mut h.tpm, since + P - 1), Ok(false));
    h.now = since + P;
    assert_eq!(h.rm.wait_step(&t1, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    // The latest part-set went, whole: one slot for w1, the other for w2 (next in line).
    assert_eq!(h.rm.stats().evictions, 2);
    assert_eq!(h.rm.stats().early_evictions, 2);
    let left = h.tpm.sessions();
    assert!(w3s.iter().all(|s| !left.contains(s)));
    assert!(
        a_set.iter().all(|s| left.contains(s)),
        "a's young set stays"
    );
    assert!(h.rm.scheduler().is_reserved(t2.id()));
    served(&mut h, &mut w1, t1);
    served(&mut h, &mut w2, t2);
    // w3 waits on, first in line now, holding nothing: it does not evict early (a's set is
    // protected, w1 and w2 do not wait) until SESSION_TIMEOUT.
    assert!(h.rm.scheduler().contains(t3.id()));
    h.now += P;
    assert_eq!(h.rm.evict_for(&t3, &mut h.tpm, h.now), Ok(false));
    assert_eq!(h.rm.stats().evictions, 2);
    h.now = since3 + T;
    assert_eq!(h.rm.evict_for(&t3, &mut h.tpm, h.now - 1), Ok(false));
    assert_eq!(h.rm.evict_for(&t3, &mut h.tpm, h.now), Ok(true));
    assert!(
        a_set.iter().all(|s| !h.tpm.sessions().contains(s)),
        "a had its turn"
    );
    assert_eq!(
        h.rm.stats().early_evictions,
        2,
        "a's set was not taken early"
    );
    served(&mut h, &mut w3, t3);
    // w3's client hears of its evicted sessions at their next use.
    assert_eq!(use_rc(&mut h, &mut w3, w3s[0]), expired_s(1));
    close_all(&mut h, [&mut a, &mut w1, &mut w2, &mut w3]);
}

/// Without a jam -- the spaces that wait hold less than half of the sessions --, for a
/// waiter that holds nothing or a whole set, or with a slot freed for the queue in the last
/// retry interval, nobody is evicted before SESSION_TIMEOUT.
#[test]
fn no_early_eviction_without_a_jam() {
    // Not jammed: a and b work with 6 sessions, w1 and w2 wait with 3.
    let mut h = harness(9);
    let (mut a, mut b, mut w1, mut w2) = (h.space(), h.space(), h.space(), h.space());
    for _ in 0..3 {
        start(&mut h, &mut a).unwrap();
        start(&mut h, &mut b).unwrap();
    }
    for _ in 0..2 {
        start(&mut h, &mut w1).unwrap();
    }
    start(&mut h, &mut w2).unwrap();
    let t1 = queue(&mut h, &mut w1);
    let since = h.now;
    let t2 = queue(&mut h, &mut w2);
    for at in [since + P, since + T / 2, since + T - 1] {
        assert_eq!(h.rm.evict_for(&t1, &mut h.tpm, at), Ok(false));
    }
    assert_eq!(h.rm.stats().evictions, 0);
    h.now = since + T;
    assert_eq!(h.rm.evict_for(&t1, &mut h.tpm, h.now), Ok(true));
    served(&mut h, &mut w1, t1);
    h.rm.wait_end(t2, h.now);
    close_all(&mut h, [&mut a, &mut b, &mut w1, &mut w2]);

    // Jammed, but the first waiter holds a whole set and asks for more (a hog gathering): it
    // waits for SESSION_TIMEOUT like anybody.
    assert!(!first_waiter_in_a_jam_evicts_early(3));

    // Jammed, but a slot was freed for the queue within the last retry interval: the queue
    // moves without evictions for that long.
    let mut h = harness(8);
    let (mut x, mut w1, mut w2, mut w3) = (h.space(), h.space(), h.space(), h.space());
    let xs: Vec<u32> = (0..2).map(|_| start(&mut h, &mut x).unwrap()).collect();
    for w in [&mut w1, &mut w2, &mut w3] {
        for _ in 0..2 {
            start(&mut h, w).unwrap();
        }
    }
    let t1 = queue(&mut h, &mut w1);
    let since = h.now;
    let t2 = queue(&mut h, &mut w2);
    let t3 = queue(&mut h, &mut w3);
    h.now = since + P / 2;
    h.success(&mut x, &flush_context(xs[0]));
    let freed = h.now;
    assert!(h.rm.scheduler().is_reserved(t1.id()));
    assert_eq!(h.rm.evict_for(&t2, &mut h.tpm, freed + P - 1), Ok(false));
    h.now = freed + P;
    assert_eq!(h.rm.evict_for(&t2, &mut h.tpm, h.now), Ok(true));
    assert_eq!(h.rm.stats().evictions, 2, "w3's part-set");
    served(&mut h, &mut w1, t1);
    served(&mut h, &mut w2, t2);
    h.rm.wait_end(t3, h.now);
    close_all(&mut h, [&mut x, &mut w1, &mut w2, &mut w3]);
}

/// Issue 22 at 128 x 3: when every client asks at once, the first 62 get one session each
/// and wait for the rest, and the first waiter is one that got none. It breaks the jam after
/// a retry interval as a waiter holding part of a set does: it takes the part-set of the
/// space waiting behind it, not only SESSION_TIMEOUT later (in the guest that cost the
/// first generation 2.3 s, and every later client as much).
#[test]
fn a_first_waiter_holding_nothing_breaks_a_jam() {
    assert!(first_waiter_in_a_jam_evicts_early(0));
}

/// A waiter that may evict but finds nobody's protection over tries again when the first
/// protection ends, not a retry interval later: at 256 x 3 each of 12 generations paid up
/// to that interval on top of SESSION_TIMEOUT.
#[test]
fn a_waiter_evicts_when_the_first_protection_ends() {
    let mut h = harness(3);
    let (mut a, mut b, mut w) = (h.space(), h.space(), h.space());
    let b1 = start(&mut h, &mut b).unwrap();
    for _ in 0..2 {
        start(&mut h, &mut a).unwrap();
    }
    let t0 = h.now;
    let ta = queue(&mut h, &mut a);
    let tw = queue(&mut h, &mut w);
    // b gives its session back P/2 later: a takes it and has its set from then on, so its
    // protection ends T after that.
    h.now = t0 + P / 2;
    h.success(&mut b, &flush_context(b1));
    served(&mut h, &mut a, ta);
    let protected_until = h.now + T;
    // When w has waited T it may evict, but finds no victim; it heads the queue, so it
    // polls the TPM.
    h.now = t0 + T + 2 * MS;
    assert_eq!(h.rm.wait_step(&tw, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    assert_eq!(
        start_as(&mut h, &mut w, &tw),
        Err(RmError::SessionsExhausted)
    );
    // Its next step is when a's protection ends, before its next poll.
    assert!(protected_until < h.now + P);
    assert_eq!(
        h.rm.wait_step(&tw, &mut h.tpm, h.now),
        Ok(WaitStep::Sleep {
            until_ns: protected_until
        })
    );
    assert_eq!(h.rm.stats().evictions, 0);
    h.now = protected_until;
    assert_eq!(h.rm.wait_step(&tw, &mut h.tpm, h.now), Ok(WaitStep::Retry));
    assert_eq!(h.rm.stats().evictions, 3, "a's set");
    served(&mut h, &mut w, tw);
    for s in [&mut a, &mut b, &mut w] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// x works with 2 sessions, w holds `held` and waits first, v holds 2 and waits behind it
/// (the spaces that wait hold at least half: jammed). Whether w evicts after a retry
/// interval (never before): if it does, it takes v's part-set, not x's sessions.
fn first_waiter_in_a_jam_evicts_early(held: usize) -> bool {
    let mut h = harness(4 + held);
    let (mut x, mut w, mut v) = (h.space(), h.space(), h.space());
    for _ in 0..2 {
        start(&mut h, &mut x).unwrap();
        start(&mut h, &mut v).unwrap();
    }
    for _ in 0..held {
        start(&mut h, &mut w).unwrap();
    }
    let tw = queue(&mut h, &mut w);
    let since = h.now;
    let tv = queue(&mut h, &mut v);
    assert_eq!(h.rm.evict_for(&tw, &mut h.tpm, since + P - 1), Ok(false));
    let evicted = h.rm.evict_for(&tw, &mut h.tpm, since + P).unwrap();
    if evicted {
        assert_eq!(h.rm.stats().early_evictions, 2, "v's part-set, not x's");
        served(&mut h, &mut w, tw);
    } else {
        assert_eq!(h.rm.stats().evictions, 0);
        h.rm.wait_end(tw, h.now);
    }
    h.rm.wait_end(tv, h.now);
    for s in [&mut x, &mut w, &mut v] {
        h.close(s);
    }
    h.tpm.assert_empty();
    evicted
}

/// Issue 20, item 5: a space at its session limit (`max_sessions`) is refused at once, with
/// the RM-layer TPM_RC_SESSION_MEMORY, whoever waits and however full the budget: not held
/// back by the FIFO gate, and not after waiting SESSION_TIMEOUT and evicting another space
/// for nothing.
#[test]
fn a_space_at_its_session_limit_is_refused_before_the_queue() {
    let config = Config {
        session_headroom: 0,
        max_sessions: 1,
        ..Config::default()
    };
    let mut h = harness_with(2, config);
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    let sb = start(&mut h, &mut b).unwrap();
    start(&mut h, &mut a).unwrap();
    // c waits ahead: a's StartAuthSession is not held back behind it.
    assert_eq!(start(&mut h, &mut c), Err(RmError::SessionsExhausted));
    let tc = h.rm.wait_begin(&c, h.now, h.exhausted_rc).unwrap();
    let r = h.exec(&mut a, &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(r.map(|r| rc(&r)), Ok(rm(TPM_RC_SESSION_MEMORY)));
    h.rm.wait_end(tc, h.now);
    // Nobody waits, the budget is full: refused at once, nobody evicted.
    let (r, waited) = h.run(&mut a, &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(rc(&r.unwrap()), rm(TPM_RC_SESSION_MEMORY));
    assert_eq!(waited, 0, "refused at once");
    assert_eq!(h.rm.stats().evictions, 0, "nobody evicted for it");
    assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    for s in [&mut a, &mut b, &mut c] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// Issue 20, item 6: a session that cannot be saved after its owner's command succeeded
/// (a ContextSave error other than a warning that says "not executed") is flushed like an
/// eviction: a tombstone, traced, and its owner told TPM_RC_EXPIRED at its next use. If
/// the TPM hands the number back to the same space, the space's new session gets another
/// one, so the old reference never reaches it.
#[test]
fn a_session_that_cannot_be_saved_leaves_a_tombstone() {
    let mut h = harness(4);
    let mut a = h.space();
    let s = start(&mut h, &mut a).unwrap();
    h.rm.clear_events();
    h.tpm.fail(CC_CONTEXT_SAVE, 0, Fault::Rc(0x12E)); // TPM_RC_TOO_MANY_CONTEXTS
    assert_eq!(use_rc(&mut h, &mut a, s), 0, "the command's answer stands");
    assert!(h.rm.sessions().get(s).is_none());
    assert!(!h.tpm.sessions().contains(&s), "flushed");
    assert_eq!(h.rm.stats().evictions, 1);
    assert_eq!(h.rm.evictions_of(a.id()), 1);
    assert!(h.rm.events().contains(&Event::Evict {
        handle: s,
        victim: a.id(),
        waiter: 0,
        reason: EvictReason::Unsaved,
    }));
    // The TPM's lowest free number is s again: a's new session gets another.
    let new = start(&mut h, &mut a).unwrap();
    assert_ne!(new, s);
    assert_eq!(use_rc(&mut h, &mut a, s), expired_s(1));
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    h.close(&mut a);
    h.tpm.assert_empty();
}

/// Issue 20, item 6: a session whose save after its owner's command meets a context gap
/// that cannot be repaired (the oldest context is a session outside tpmrs) is evicted for
/// the gap, with a tombstone: its owner is told TPM_RC_EXPIRED, not "unknown handle".
#[test]
fn a_session_lost_to_an_unrepairable_gap_leaves_a_tombstone() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(4);
    h.tpm.external_session(); // the oldest: we cannot renew it
    let mut a = h.space();
    let sa = start(&mut h, &mut a).unwrap();
    h.rm.clear_events();
    for _ in 0..5 {
        if h.rm.sessions().get(sa).is_none() {
            break;
        }
        assert_eq!(use_rc(&mut h, &mut a, sa), 0, "the command's answer stands");
    }
    assert!(h.rm.sessions().get(sa).is_none(), "lost to the gap");
    assert!(!h.tpm.sessions().contains(&sa), "flushed, not leaked");
    assert!(h.rm.events().contains(&Event::Evict {
        handle: sa,
        victim: a.id(),
        waiter: 0,
        reason: EvictReason::ContextGap,
    }));
    h.tpm.gap_max = None;
    let new = start(&mut h, &mut a).unwrap();
    assert_ne!(new, sa);
    assert_eq!(use_rc(&mut h, &mut a, sa), expired_s(1));
    assert_eq!(use_rc(&mut h, &mut a, new), 0);
    h.close(&mut a);
    assert_eq!(h.tpm.sessions().len(), 1, "the external session");
}

/// The blob of `h` that tpmrs holds: where it is allocated, and a copy.
fn held_blob(h: &Harness<FakeTpm>, s: u32) -> (*const u8, Vec<u8>) {
    match &h.rm.sessions().get(s).unwrap().state {
        SessionState::SavedByRm(b) => (b.as_ptr(), b.to_vec()),
        _ => panic!("{s:#x} is not saved by tpmrs"),
    }
}

/// Issue 20, item 10: a context-gap repair renews another space's session blob in the
/// blob's own allocation, so nothing is charged to the memory cgroup of the client whose
/// command ran into the gap.
#[test]
fn gap_repair_renews_a_blob_in_its_own_allocation() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(6);
    let (mut a, mut b) = (h.space(), h.space());
    let sa = start(&mut h, &mut a).unwrap();
    let sb = start(&mut h, &mut b).unwrap();
    let (at, before) = held_blob(&h, sa);
    // Until the first repair (a second one could land in a freed allocation again).
    for _ in 0..20 {
        if h.rm.stats().gap_repairs > 0 {
            break;
        }
        assert_eq!(use_rc(&mut h, &mut b, sb), 0);
    }
    assert_eq!(h.rm.stats().gap_repairs, 1);
    assert_eq!(h.rm.stats().evictions, 0);
    let (at_after, after) = held_blob(&h, sa);
    assert_ne!(after, before, "renewed");
    assert_eq!(at_after, at, "in the same allocation");
    assert_eq!(use_rc(&mut h, &mut a, sa), 0);
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

/// Issue 20, item 10: a client's FlushContext of its session that fails on the transport
/// is settled like tpmrs' own flushes, while the chip is held: the TPM is asked whether the
/// session is there. Flushed (the response was lost): the registry forgets it, the slot
/// goes to the waiter, and the client is answered success. Not run: flushed again.
#[test]
fn a_client_flush_that_fails_on_the_transport_is_settled() {
    for fault in [Fault::TransportAfter(-5), Fault::Transport(-5)] {
        let mut h = harness(1);
        let (mut a, mut b) = (h.space(), h.space());
        let s = start(&mut h, &mut a).unwrap();
        let tb = queue(&mut h, &mut b);
        h.tpm.fail(CC_FLUSH_CONTEXT, 0, fault);
        let r = h.exec(&mut a, &flush_context(s));
        assert_eq!(r.map(|r| rc(&r)), Ok(0), "{fault:?}");
        assert!(h.rm.sessions().get(s).is_none(), "{fault:?}");
        assert!(h.tpm.sessions().is_empty(), "{fault:?}");
        assert!(
            h.rm.scheduler().is_reserved(tb.id()),
            "{fault:?}: the slot is b's"
        );
        served(&mut h, &mut b, tb);
        h.close(&mut a);
        h.close(&mut b);
        h.tpm.assert_empty();
    }
}
