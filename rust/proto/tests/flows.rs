// SPDX-License-Identifier: GPL-2.0
//! Flows of real TSS clients that a protocol review found broken, against a real swtpm
//! through the resource manager: HMAC sessions authorizing policy commands, session handles
//! in either form, sessions lost behind tpmrs's back, audit sessions on GetCapability, and
//! a client's sessions after an answer of the resource-manager layer. Each test starts its
//! own swtpm (it must be installed: these tests fail, never skip, without it).

mod common;

use common::marshal::*;
use common::rc::*;
use common::swtpm::SwTpm;
use common::Harness;
use tpmrs_proto::{Config, Space};

const CC_POLICY_SECRET: u32 = 0x151;
const CC_EVENT_SEQUENCE_COMPLETE: u32 = 0x185;
/// TPM_RC_AUTH_CONTEXT in the resource-manager layer.
const RM_AUTH_CONTEXT: u32 = rm(TPM_RC_AUTH_CONTEXT);
/// TPMA_SESSION continueSession / audit.
const CONTINUE: u8 = 0x01;
const AUDIT: u8 = 0x80;

fn harness_with(config: Config) -> Harness<SwTpm> {
    Harness::new(SwTpm::start(), config)
}

fn harness() -> Harness<SwTpm> {
    harness_with(Config::default())
}

/// An HMAC session (unbound, unsalted: its HMAC key is the entity's authValue) and the
/// nonceTPM of its last response.
struct HmacSession {
    handle: u32,
    nonce_tpm: Vec<u8>,
}

impl HmacSession {
    fn start(h: &mut Harness<SwTpm>, s: &mut Space) -> Self {
        let r = h.success(s, &start_auth_session(SE_HMAC, &[3; 16]));
        HmacSession {
            handle: rhandle(&r),
            nonce_tpm: start_auth_session_nonce(&r),
        }
    }

    /// The command `cc` on `handles` (their Names: `names`) with this session in the
    /// authorization area (`attrs`), keyed with `auth_value`.
    fn command(
        &self,
        cc: u32,
        handles: &[u32],
        names: &[&[u8]],
        attrs: u8,
        auth_value: &[u8],
        params: &[u8],
    ) -> Vec<u8> {
        let auth = hmac_auth(
            self.handle,
            &[7; 16],
            &self.nonce_tpm,
            attrs,
            auth_value,
            &cp_hash(cc, names, params),
        );
        command(cc, handles, &[auth], params)
    }

    /// Takes the new nonceTPM from a successful response with `rhandles` response handles.
    fn roll(&mut self, rsp: &[u8], rhandles: usize) {
        self.nonce_tpm = auth_response_nonce(rsp, rhandles);
    }
}

/// TPM2_PolicySecret(authHandle, policySession) parameters: no nonce, cpHash or policyRef,
/// no expiration.
fn policy_secret_params() -> Vec<u8> {
    Buf::new().b2(&[]).b2(&[]).b2(&[]).u32(0).done()
}

/// TPM2_CreatePrimary parameters (the ones `create_primary` sends).
fn create_primary_params() -> Vec<u8> {
    let public = ecc_signing_public(&[]);
    let cmd = create_primary(&public);
    // Header, one handle, authorization size and a password session of 9 bytes.
    let auth_size = u32_at(&cmd, 14) as usize;
    cmd[18 + auth_size..].to_vec()
}

#[test]
fn policy_secret_authorized_by_an_hmac_session_after_a_session_vanished() {
    // A session of the space is flushed behind tpmrs's back (through the TPM itself, as a
    // /dev/tpm0 or /dev/tpmrm0 user may): the registry still holds it. The space's next
    // sessions get the TPM's numbers, never rewritten ones, so an HMAC over a policy
    // session's Name (its handle) is right.
    let mut h = harness();
    let mut s = h.space();
    let gone = rhandle(&h.success(&mut s, &start_auth_session(SE_POLICY, &[1; 16])));
    assert_eq!(rc(&h.tpm.raw(&flush_context(gone))), 0);
    let mut hmac = HmacSession::start(&mut h, &mut s);
    assert_eq!(
        hmac.handle & 0x00FF_FFFF,
        gone & 0x00FF_FFFF,
        "the number came back"
    );
    assert_eq!(hmac.handle >> 24, 0x02);
    let policy = rhandle(&h.success(&mut s, &start_auth_session(SE_POLICY, &[2; 16])));
    assert!(h.tpm.raw_handles(0x0300_0000).len() + h.tpm.raw_handles(0x0200_0000).len() >= 2);
    let params = policy_secret_params();
    let owner = RH_OWNER.to_be_bytes();
    let name = policy.to_be_bytes();
    // Twice: the second time with the nonce the first rolled, as the client saw it.
    for _ in 0..2 {
        let cmd = hmac.command(
            CC_POLICY_SECRET,
            &[RH_OWNER, policy],
            &[&owner, &name],
            CONTINUE,
            &[],
            &params,
        );
        let r = h.ok(&mut s, &cmd);
        assert_eq!(rc(&r), 0, "PolicySecret with an HMAC-authorized authHandle");
        hmac.roll(&r, 0);
    }
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn a_session_resolves_in_either_form() {
    let mut h = harness();
    let mut s = h.space();
    let policy = rhandle(&h.success(&mut s, &start_auth_session(SE_POLICY, &[1; 16])));
    assert_eq!(policy >> 24, 0x03);
    let hmac_form = policy ^ 0x0100_0000;
    // Listed (saved by tpmrs between commands) for its owner, in whatever form the TPM
    // lists it.
    let (_, saved) = handles_of(&h.success(&mut s, &get_capability(CAP_HANDLES, 0x0300_0000, 64)));
    assert_eq!(
        saved.iter().map(|x| x & 0x00FF_FFFF).collect::<Vec<_>>(),
        vec![policy & 0x00FF_FFFF]
    );
    // `tpm2 flushcontext -s` flushes what the listing said: the HMAC form here.
    let before = h.tpm_commands();
    h.success(&mut s, &flush_context(hmac_form));
    assert_eq!(h.tpm_commands() - before, 1, "sent as the client wrote it");
    assert!(h.rm.sessions().is_empty());
    h.tpm.assert_empty();
    // Another space cannot flush a session in the other form either.
    let mut t = h.space();
    let theirs = rhandle(&h.success(&mut t, &start_auth_session(SE_POLICY, &[2; 16])));
    let r = h.ok(&mut s, &flush_context(theirs ^ 0x0100_0000));
    assert_eq!(rc(&r), rm(rc_handle_at_parameter(1)));
    h.close(&mut s);
    h.close(&mut t);
    h.tpm.assert_empty();
}

#[test]
fn handle_lists_with_an_audit_session_are_refused_and_the_session_lives_on() {
    let mut h = harness();
    let mut s = h.space();
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let mut hmac = HmacSession::start(&mut h, &mut s);
    let audit = CONTINUE | AUDIT;
    for first in [0x8000_0000, 0x0200_0000, 0x0300_0000] {
        let params = Buf::new().u32(CAP_HANDLES).u32(first).u32(64).done();
        let cmd = hmac.command(CC_GET_CAPABILITY, &[], &[], audit, &[], &params);
        let before = h.tpm_commands();
        let r = h.ok(&mut s, &cmd);
        assert_eq!(rc(&r), RM_AUTH_CONTEXT, "list from {first:#x}");
        assert_eq!(h.tpm_commands(), before, "nothing sent");
    }
    // A list tpmrs does not rewrite goes to the TPM with the session.
    let params = Buf::new().u32(CAP_HANDLES).u32(0x8100_0000).u32(64).done();
    let r = h.ok(
        &mut s,
        &hmac.command(CC_GET_CAPABILITY, &[], &[], audit, &[], &params),
    );
    assert_eq!(rc(&r), 0);
    hmac.roll(&r, 0);
    // The session's nonce was never rolled behind the client's back: it still works.
    let params = Buf::new().u16(8).done();
    let r = h.ok(
        &mut s,
        &hmac.command(CC_GET_RANDOM, &[], &[], audit, &[], &params),
    );
    assert_eq!(rc(&r), 0);
    // Without a session the space's own list is answered.
    let (_, l) = handles_of(&h.success(&mut s, &get_capability(CAP_HANDLES, 0x8000_0000, 64)));
    assert_eq!(l, vec![key]);
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn an_rm_layer_answer_leaves_the_clients_session_usable() {
    // The space is full: the RM refuses a CreatePrimary before the TPM runs it, so the HMAC
    // session authorizing it keeps the nonce the client knows.
    let mut h = harness_with(Config {
        max_objects: 1,
        max_sessions: 2,
        ..Config::default()
    });
    let mut s = h.space();
    let mut hmac = HmacSession::start(&mut h, &mut s);
    let params = create_primary_params();
    let owner = RH_OWNER.to_be_bytes();
    let create = |hmac: &HmacSession| {
        hmac.command(
            CC_CREATE_PRIMARY,
            &[RH_OWNER],
            &[&owner],
            CONTINUE,
            &[],
            &params,
        )
    };
    let r = h.ok(&mut s, &create(&hmac));
    assert_eq!(rc(&r), 0);
    hmac.roll(&r, 1);
    let key = rhandle(&r);
    let before = h.tpm_commands();
    let cmd = create(&hmac);
    let r = h.ok(&mut s, &cmd);
    assert_eq!(
        rc(&r),
        rm(TPM_RC_OBJECT_MEMORY),
        "TPM_RC_OBJECT_MEMORY of the RM layer"
    );
    assert_eq!(h.tpm_commands(), before, "refused before sending");
    // Same for a session beyond max_sessions.
    h.success(&mut s, &start_auth_session(SE_POLICY, &[4; 16]));
    let before = h.tpm_commands();
    let r = h.ok(&mut s, &start_auth_session(SE_POLICY, &[5; 16]));
    assert_eq!(
        rc(&r),
        rm(TPM_RC_SESSION_MEMORY),
        "TPM_RC_SESSION_MEMORY of the RM layer"
    );
    assert_eq!(h.tpm_commands(), before, "refused before sending");
    // Room again: the same session, with the nonce the client holds, works.
    h.success(&mut s, &flush_context(key));
    let r = h.ok(&mut s, &cmd);
    assert_eq!(rc(&r), 0);
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn event_sequence_complete_flushes_its_sequence() {
    let mut h = harness();
    let mut s = h.space();
    let start = command(
        CC_HASH_SEQUENCE_START,
        &[],
        &[],
        &Buf::new().b2(&[]).u16(ALG_NULL).done(),
    );
    let seq = rhandle(&h.success(&mut s, &start));
    h.success(&mut s, &sequence_update(seq, b"event"));
    let before = h.tpm_commands();
    let cmd = command(
        CC_EVENT_SEQUENCE_COMPLETE,
        &[RH_NULL, seq],
        &[Auth::pw(&[]), Auth::pw(&[])],
        &Buf::new().b2(b"data").done(),
    );
    h.success(&mut s, &cmd);
    assert_eq!(
        h.tpm_commands() - before,
        2,
        "load the sequence, complete it: nothing to save or flush"
    );
    assert!(s.objects().is_empty());
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn a_session_blob_moves_to_another_file_with_its_session() {
    // `tpm2 startauthsession -S s.ctx` in one process, `session:s.ctx` in the next.
    let mut h = harness();
    let (mut a, mut b) = (h.space(), h.space());
    let sess = rhandle(&h.success(&mut a, &start_auth_session(SE_POLICY, &[1; 16])));
    let blob = context_save_blob(&h.success(&mut a, &context_save(sess)));
    assert_eq!(rhandle(&h.success(&mut b, &context_load(&blob))), sess);
    h.success(&mut b, &policy_password(sess));
    assert_eq!(
        rc(&h.ok(&mut a, &policy_password(sess))),
        rm(rc_handle_at_handle(1))
    );
    h.close(&mut a);
    h.success(&mut b, &policy_password(sess));
    h.close(&mut b);
    h.tpm.assert_empty();
}

#[test]
fn a_tpm_reset_behind_tpmrs_loses_nothing_it_cannot_answer_for() {
    // Hibernation or a TPM reboot: every session is gone and every saved context invalid.
    // The space's next use of its key and session gets RM-layer handle errors (nothing is
    // flushed blind: after a reset the numbers may be anyone's), then it starts over and
    // gets the TPM's own session numbers.
    let mut h = harness();
    let mut s = h.space();
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let sess = rhandle(&h.success(&mut s, &start_auth_session(SE_HMAC, &[1; 16])));
    h.tpm.reset();
    let flushes = h.rm.stats().flushes;
    let r = h.ok(&mut s, &sign(key, Auth::pw(KEY_AUTH)));
    assert_eq!(
        rc(&r),
        rm(rc_handle_at_handle(1)),
        "the key's context is no longer valid"
    );
    assert!(s.objects().is_empty());
    let r = h.ok(&mut s, &policy_password(sess));
    assert_eq!(rc(&r), rm(rc_handle_at_handle(1)), "nor the session's");
    assert!(h.rm.sessions().is_empty());
    assert_eq!(h.rm.stats().flushes, flushes, "nothing flushed blind");
    let again = rhandle(&h.success(&mut s, &start_auth_session(SE_HMAC, &[2; 16])));
    assert_eq!(
        again & 0x00FF_FFFF,
        sess & 0x00FF_FFFF,
        "the TPM's own number, no rewrite"
    );
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    h.success(&mut s, &sign(key, Auth::pw(KEY_AUTH)));
    h.close(&mut s);
    h.tpm.assert_empty();
}

#[test]
fn saving_an_object_leaves_a_session_of_the_same_index_alone() {
    // tpm2-tools saves the objects it creates (`-c key.ctx`) while a session of the same
    // index (0x02000000 and 0x80000000 are both index 0) is in use: the session must stay
    // ours, saved by tpmrs, and go on working.
    let mut h = harness();
    let mut s = h.space();
    let mut hmac = HmacSession::start(&mut h, &mut s);
    let key = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    assert_eq!(key & 0x00FF_FFFF, hmac.handle & 0x00FF_FFFF);
    h.success(&mut s, &context_save(key));
    let params = Buf::new().u16(8).done();
    let r = h.ok(
        &mut s,
        &hmac.command(CC_GET_RANDOM, &[], &[], CONTINUE | AUDIT, &[], &params),
    );
    assert_eq!(rc(&r), 0);
    hmac.roll(&r, 0);
    h.success(&mut s, &context_save(hmac.handle));
    h.close(&mut s);
    // Saved by its client and left behind: kept for continuation, nothing else.
    assert_eq!(h.rm.stats().abandoned, 1);
    assert_eq!(h.tpm.raw_handles(0x8000_0000), vec![]);
    assert_eq!(h.tpm.raw_handles(0x0300_0000).len(), 1);
}

#[test]
fn flushcontext_s_cleans_up_abandoned_sessions() {
    // `tpm2 startauthsession -S s.ctx` leaves a saved session behind; later
    // `tpm2 getcap handles-saved-session` lists it and `tpm2 flushcontext -s` flushes each
    // listed handle, in the form listed.
    let mut h = harness();
    let mut a = h.space();
    let sess = rhandle(&h.success(&mut a, &start_auth_session(SE_POLICY, &[1; 16])));
    h.success(&mut a, &context_save(sess));
    h.close(&mut a);
    let mut b = h.space();
    let mut c = h.space();
    let mine = rhandle(&h.success(&mut c, &start_auth_session(SE_HMAC, &[2; 16])));
    let (_, listed) = handles_of(&h.success(&mut b, &get_capability(CAP_HANDLES, 0x0300_0000, 64)));
    assert_eq!(
        listed.iter().map(|x| x & 0x00FF_FFFF).collect::<Vec<_>>(),
        vec![sess & 0x00FF_FFFF],
        "the abandoned session, not c's"
    );
    for l in listed {
        h.success(&mut b, &flush_context(l));
    }
    assert_eq!(h.rm.stats().abandoned, 0);
    // c's session is not b's to flush.
    assert_eq!(
        rc(&h.ok(&mut b, &flush_context(mine))),
        rm(rc_handle_at_parameter(1))
    );
    h.close(&mut b);
    h.close(&mut c);
    h.tpm.assert_empty();
}

#[test]
fn a_trial_session_computes_a_policy_digest() {
    // `tpm2 startauthsession` without --policy-session starts a trial session (TPM_SE_TRIAL):
    // a policy session in the policy form whose digest is computed and read back.
    const SE_TRIAL: u8 = 3;
    let mut h = harness();
    let mut s = h.space();
    let trial = rhandle(&h.success(&mut s, &start_auth_session(SE_TRIAL, &[1; 16])));
    assert_eq!(trial >> 24, 0x03);
    h.success(&mut s, &policy_password(trial));
    let r = h.success(&mut s, &command(CC_POLICY_GET_DIGEST, &[trial], &[], &[]));
    assert_eq!(Rd(&r, 10).b2(), policy_password_digest());
    h.success(&mut s, &flush_context(trial));
    h.close(&mut s);
    h.tpm.assert_empty();
}
