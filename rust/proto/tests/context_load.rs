// SPDX-License-Identifier: GPL-2.0
//! TPM2_ContextLoad of a session blob that names a session the space may not load (issue
//! 20, item 9). It must not tell which numbers other spaces hold: such a load goes to the
//! TPM, which refuses a forged or stale blob as it refuses one of an unused number, unless
//! the blob is byte for byte the session's current client-saved blob (whose holder knows
//! the number already), which the resource manager refuses. Only the exact, latest blob of
//! a saved session loads (its integrity HMAC covers sequence, handle and contents, and a
//! session's sequence number is replay-protected); a session the TPM loads all the same is
//! not handed over. Against swtpm (which must be installed: these tests fail, never skip,
//! without it) and a fake TPM that loads what a real one would refuse.

mod common;

use common::fake::{FakeTpm, Fault};
use common::marshal::*;
use common::rc::*;
use common::swtpm::SwTpm;
use common::Harness;
use tpmrs_proto::{Config, Space, Tpm};

const A: u32 = 1000;
const B: u32 = 1001;
const LAYER: u32 = TSS2_RESMGR_TPM_RC_LAYER;
/// The resource manager's refusal of a ContextLoad: TPM_RC_HANDLE, parameter 1.
const REFUSED: u32 = rm(rc_handle_at_parameter(1));
/// An index no session uses in these tests.
const UNUSED: u32 = 0x0300_0030;

fn new_session<T: Tpm>(h: &mut Harness<T>, s: &mut Space) -> u32 {
    rhandle(&h.success(s, &start_auth_session(SE_POLICY, &[1; 16])))
}

/// A TPMS_CONTEXT naming session `handle` that no TPM made: a plausible sequence, the
/// session hierarchy (TPM_RH_NULL), a SHA-256-sized integrity value and some contents.
fn forged_context(handle: u32) -> Vec<u8> {
    let blob = Buf::new().b2(&[0x5a; 32]).bytes(&[0xa5; 200]).done();
    Buf::new()
        .bytes(&7u64.to_be_bytes())
        .u32(handle)
        .u32(RH_NULL)
        .b2(&blob)
        .done()
}

/// The response code of `s`'s ContextLoad of `blob`, and whether it was sent to the TPM.
fn load_rc<T: Tpm>(h: &mut Harness<T>, s: &mut Space, blob: &[u8]) -> (u32, bool) {
    let before = h.tpm_commands();
    let r = rc(&h.ok(s, &context_load(blob)));
    (r, h.tpm_commands() > before)
}

/// The measurement of the issue: a forged context naming another space's session was
/// answered 0x000B01CB with nothing sent, one naming an unused index the TPM's own error.
/// Now both get the TPM's answer. The same for a stale blob (one the TPM really made, of
/// a session since loaded again): the TPM's TPM_RC_HANDLE for another space's session and
/// for a number no one holds.
#[test]
fn a_forged_or_stale_blob_gets_the_same_answer_for_a_held_and_a_free_number() {
    let mut h = Harness::new(SwTpm::start(), Config::default());
    let (mut a, mut b) = (h.space_as(A), h.space_as(B));
    let theirs = new_session(&mut h, &mut a);
    let held = load_rc(&mut h, &mut b, &forged_context(theirs));
    let free = load_rc(&mut h, &mut b, &forged_context(UNUSED));
    assert_eq!(held, free, "{:#x} against {:#x}", held.0, free.0);
    assert!(held.1, "sent to the TPM");
    assert_eq!(held.0 & LAYER, 0, "the TPM's answer: {:#x}", held.0);
    assert_ne!(held.0, 0);
    // The same from a file of the same uid: a session in use is nobody else's.
    let mut a2 = h.space_as(A);
    assert_eq!(load_rc(&mut h, &mut a2, &forged_context(theirs)), free);

    // Stale blobs: a's first saved blob of `theirs`, stale once a loaded it again and
    // used it; and one of a session since flushed.
    let stale_held = context_save_blob(&h.success(&mut a, &context_save(theirs)));
    h.success(&mut a, &context_load(&stale_held));
    h.success(&mut a, &policy_password(theirs));
    let gone = new_session(&mut h, &mut a);
    let stale_free = context_save_blob(&h.success(&mut a, &context_save(gone)));
    h.success(&mut a, &context_load(&stale_free));
    h.success(&mut a, &flush_context(gone));
    let held = load_rc(&mut h, &mut b, &stale_held);
    let free = load_rc(&mut h, &mut b, &stale_free);
    assert_eq!(held, free, "{:#x} against {:#x}", held.0, free.0);
    assert!(held.1);
    assert_eq!(held.0, rc_handle_at_parameter(1), "the TPM's TPM_RC_HANDLE");
    // a's session is as it was.
    h.success(&mut a, &policy_password(theirs));
    for s in [&mut a, &mut a2, &mut b] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// The current blob of a session another uid's file saved: its holder knows the number,
/// and the resource manager refuses it without sending it (it would load). The owner keeps
/// its session and loads it.
#[test]
fn the_exact_current_blob_is_refused_without_sending_it() {
    let mut h = Harness::new(SwTpm::start(), Config::default());
    let (mut a, mut b) = (h.space_as(A), h.space_as(B));
    let sess = new_session(&mut h, &mut a);
    let blob = context_save_blob(&h.success(&mut a, &context_save(sess)));
    assert_eq!(load_rc(&mut h, &mut b, &blob), (REFUSED, false));
    // One byte of it changed: sent, and the TPM refuses it (TPM_RC_INTEGRITY).
    let (r, sent) = load_rc(&mut h, &mut b, &tampered(&blob));
    assert!(sent && r != 0 && r & LAYER == 0, "{r:#x}");
    assert_eq!(h.rm.sessions().get(sess).unwrap().owner, Some(a.id()));
    // Abandoned, the same.
    h.close(&mut a);
    assert_eq!(load_rc(&mut h, &mut b, &blob), (REFUSED, false));
    let mut a2 = h.space_as(A);
    assert_eq!(rhandle(&h.success(&mut a2, &context_load(&blob))), sess);
    h.success(&mut a2, &policy_password(sess));
    h.close(&mut a2);
    h.close(&mut b);
    h.tpm.assert_empty();
}

/// `blob` with one byte of its contents changed: a real TPM refuses it (TPM_RC_INTEGRITY),
/// the fake loads it.
fn tampered(blob: &[u8]) -> Vec<u8> {
    let mut t = blob.to_vec();
    let last = t.len() - 1;
    t[last] ^= 0xFF;
    t
}

/// A TPM that loads a session for a space that may not have it (here the fake, which checks
/// no integrity; a real one only for the exact blob, which the resource manager refuses
/// first): the loader gets the refusal it would have got for the exact blob, the session is
/// flushed, and its owner is told at its next use that it was evicted (its own blob was
/// used up by the load). Before, any file could take another's client-saved session.
#[test]
fn a_session_the_tpm_loads_for_the_wrong_space_is_not_handed_over() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    let (mut a, mut b) = (h.space_as(A), h.space_as(B));
    let sess = new_session(&mut h, &mut a);
    let blob = context_save_blob(&h.success(&mut a, &context_save(sess)));
    let loads = h.tpm.count(CC_CONTEXT_LOAD);
    assert_eq!(load_rc(&mut h, &mut b, &tampered(&blob)), (REFUSED, true));
    assert_eq!(h.tpm.count(CC_CONTEXT_LOAD), loads + 1, "sent");
    assert!(h.rm.sessions().get(sess).is_none(), "nobody's");
    assert_eq!(h.tpm.sessions(), vec![], "flushed");
    assert_eq!(h.rm.stats().evictions, 1);
    assert_eq!(
        rc(&h.ok(&mut a, &policy_password(sess))),
        rm(rc_at_handle(TPM_RC_EXPIRED, 1)),
        "its owner is told"
    );
    // An abandoned one: flushed.
    let sess = new_session(&mut h, &mut a);
    let blob = context_save_blob(&h.success(&mut a, &context_save(sess)));
    h.close(&mut a);
    assert_eq!(h.rm.stats().abandoned, 1);
    assert_eq!(load_rc(&mut h, &mut b, &tampered(&blob)), (REFUSED, true));
    assert_eq!(h.rm.stats().abandoned, 0);
    assert_eq!(h.tpm.sessions(), vec![]);
    // One whose flush tpmrs has queued (trimmed past max_abandoned, the TPM busy): the same,
    // whoever loads it.
    h.close(&mut b);
    let mut h = Harness::new(
        FakeTpm::new(),
        Config {
            max_abandoned: 1,
            ..Config::default()
        },
    );
    let mut a1 = h.space_as(A);
    let first = new_session(&mut h, &mut a1);
    let first_blob = context_save_blob(&h.success(&mut a1, &context_save(first)));
    h.close(&mut a1);
    let mut a2 = h.space_as(A);
    let second = new_session(&mut h, &mut a2);
    h.success(&mut a2, &context_save(second));
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_RETRY));
    h.tpm.fail(CC_FLUSH_CONTEXT, 0, Fault::Rc(TPM_RC_RETRY));
    h.close(&mut a2);
    assert_eq!(h.rm.pending_flushes(), &[first]);
    let mut a3 = h.space_as(A);
    assert_eq!(load_rc(&mut h, &mut a3, &first_blob), (REFUSED, true));
    assert_eq!(h.rm.pending_flushes(), &[] as &[u32]);
    assert_eq!(h.tpm.sessions(), vec![second], "flushed at last");
    h.close(&mut a3);
}
