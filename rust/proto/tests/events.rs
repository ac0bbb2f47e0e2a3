// SPDX-License-Identifier: GPL-2.0
//! The event log the kernel glue turns into trace events (`tpmrs:*`): a wait's begin and
//! end, evictions (victim, waiter), context-gap repairs, against the fake TPM with a
//! controllable clock.

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::Harness;
use tpmrs_proto::{Config, Event, EvictReason, Request, Space, Step, WaitEnd, TPM_BUFSIZE};

const MS: u64 = 1_000_000;
const T: u64 = 2_000 * MS;

fn harness(slots: usize) -> Harness<FakeTpm> {
    let mut t = FakeTpm::new();
    t.max_sessions = slots;
    let config = Config {
        session_headroom: 0,
        ..Config::default()
    };
    Harness::new(t, config)
}

fn start(h: &mut Harness<FakeTpm>, s: &mut Space) -> u32 {
    let r = h.success(s, &start_auth_session(SE_HMAC, &[1; 16]));
    rhandle(&r)
}

/// A command that uses session `sess` (GetRandom with it as authorization).
fn use_session(h: &mut Harness<FakeTpm>, s: &mut Space, sess: u32) {
    let auths = [Auth::policy(sess, true, &[])];
    let cmd = command(CC_GET_RANDOM, &[], &auths, &Buf::new().u16(8).done());
    h.success(s, &cmd);
}

/// The events since the last call, and clears them (what the glue does after each call).
fn drain(h: &mut Harness<FakeTpm>) -> Vec<Event> {
    let e = h.rm.events().to_vec();
    h.rm.clear_events();
    e
}

#[test]
fn a_command_without_a_wait_records_nothing() {
    let mut h = harness(4);
    drain(&mut h);
    let mut a = h.space();
    let sa = start(&mut h, &mut a);
    use_session(&mut h, &mut a, sa);
    let (r, _) = h.run(&mut a, &flush_context(sa));
    assert_eq!(rc(&r.unwrap()), 0);
    assert_eq!(drain(&mut h), []);
}

#[test]
fn wait_begin_evictions_for_the_waiter_and_wait_end() {
    let mut h = harness(3);
    let (mut a, mut w) = (h.space(), h.space());
    let held: Vec<u32> = (0..3).map(|_| start(&mut h, &mut a)).collect();
    drain(&mut h);
    h.now += T;
    let cmd = start_auth_session(SE_HMAC, &[3; 16]);
    let began = h.now;
    let (r, waited) = h.run(&mut w, &cmd);
    assert_eq!(rc(&r.unwrap()), 0);
    assert!(waited >= T, "waited {waited}");
    let ev = drain(&mut h);
    assert_eq!(ev.first(), Some(&Event::WaitBegin { space: w.id() }));
    // a's whole space is evicted for w: one event per session, victim a, waiter w.
    let evicted: Vec<u32> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::Evict {
                handle,
                victim,
                waiter,
                reason,
            } => {
                assert_eq!(
                    (victim, waiter, reason),
                    (a.id(), w.id(), EvictReason::Waiter)
                );
                Some(handle)
            }
            _ => None,
        })
        .collect();
    let mut sorted = evicted.clone();
    sorted.sort_unstable();
    let mut want = held.clone();
    want.sort_unstable();
    assert_eq!(sorted, want);
    assert_eq!(h.rm.stats().evictions, 3);
    match ev.last() {
        Some(&Event::WaitEnd {
            space,
            waited_ns,
            end,
        }) => {
            assert_eq!((space, end), (w.id(), WaitEnd::Answered));
            assert!(waited_ns >= T && waited_ns <= h.now - began, "{waited_ns}");
        }
        other => panic!("last event {other:?}"),
    }
    assert_eq!(ev.len(), 2 + held.len());
    assert_eq!(h.rm.events_lost(), 0);
}

#[test]
fn an_abandoned_victim_has_no_space() {
    let mut h = harness(1);
    let (mut b, mut w) = (h.space(), h.space());
    let sb = start(&mut h, &mut b);
    let _blob = context_save_blob(&h.success(&mut b, &context_save(sb)));
    h.close(&mut b);
    drain(&mut h);
    h.now += T;
    let (r, _) = h.run(&mut w, &start_auth_session(SE_HMAC, &[3; 16]));
    assert_eq!(rc(&r.unwrap()), 0);
    let ev = drain(&mut h);
    assert!(ev.contains(&Event::Evict {
        handle: sb,
        victim: 0,
        waiter: w.id(),
        reason: EvictReason::Waiter
    }));
}

#[test]
fn a_wait_that_stops_before_an_answer_ends_interrupted() {
    let mut h = harness(1);
    let (mut a, mut w) = (h.space(), h.space());
    start(&mut h, &mut a);
    drain(&mut h);
    let cmd = start_auth_session(SE_HMAC, &[3; 16]);
    let mut rsp = vec![0u8; TPM_BUFSIZE];
    let mut req = Request::new();
    let step =
        h.rm.step(&mut req, &mut w, &mut h.tpm, h.now, &cmd, &mut rsp);
    assert!(matches!(step, Step::Sleep { .. }), "{step:?}");
    // A signal: the glue ends the request without a Done.
    h.rm.end_request(req, h.now + 5 * MS);
    assert_eq!(
        drain(&mut h),
        [
            Event::WaitBegin { space: w.id() },
            Event::WaitEnd {
                space: w.id(),
                waited_ns: 5 * MS,
                end: WaitEnd::Interrupted
            }
        ]
    );
}

#[test]
fn context_gap_repairs_renew_the_oldest_session() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(6);
    let (mut a, mut b) = (h.space(), h.space());
    let sa = start(&mut h, &mut a);
    let sb = start(&mut h, &mut b);
    drain(&mut h);
    for _ in 0..20 {
        use_session(&mut h, &mut b, sb);
    }
    let ev = drain(&mut h);
    let repairs: Vec<&Event> = ev
        .iter()
        .filter(|e| matches!(e, Event::GapRepair { .. }))
        .collect();
    assert_eq!(repairs.len() as u64, h.rm.stats().gap_repairs);
    assert!(!repairs.is_empty());
    // a's session is the oldest saved one: renewed, never evicted.
    assert!(repairs.contains(&&Event::GapRepair {
        handle: sa,
        owner: a.id(),
        renewed: true
    }));
    assert!(!ev.iter().any(|e| matches!(e, Event::Evict { .. })));
}

#[test]
fn context_gap_evicts_a_client_saved_session() {
    let mut h = harness(64);
    h.tpm.gap_max = Some(6);
    let (mut a, mut b) = (h.space(), h.space());
    let sa = start(&mut h, &mut a);
    context_save_blob(&h.success(&mut a, &context_save(sa)));
    let sb = start(&mut h, &mut b);
    drain(&mut h);
    for _ in 0..10 {
        use_session(&mut h, &mut b, sb);
    }
    let ev = drain(&mut h);
    let evict = Event::Evict {
        handle: sa,
        victim: a.id(),
        waiter: 0,
        reason: EvictReason::ContextGap,
    };
    let repair = Event::GapRepair {
        handle: sa,
        owner: a.id(),
        renewed: false,
    };
    let i = ev.iter().position(|e| *e == evict).expect("eviction");
    let j = ev.iter().position(|e| *e == repair).expect("repair");
    assert!(i < j, "{ev:?}");
}
