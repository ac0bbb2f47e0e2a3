// SPDX-License-Identifier: GPL-2.0
//! Writes the seed corpus of the three fuzz targets into fuzz/corpus/<target>/:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//!
//! The seeds are committed; run this again only when an input format changes (the layouts
//! are described at the top of each fuzz target).

use std::fs;
use std::path::Path;

use tpmrs_fuzz::marshal::*;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

/// A TPMS_CONTEXT as the fake TPM writes it.
fn blob(seq: u64, saved: u32, data: &[u8]) -> Vec<u8> {
    Buf::new()
        .bytes(&seq.to_be_bytes())
        .u32(saved)
        .u32(0x4000_0001)
        .b2(data)
        .done()
}

fn command_parser() {
    // Handles of the space the target prepares: key, sequence, HMAC session, policy session
    // (saved by its client).
    let (key, seq, hmac, policy) = (0x8000_0000, 0x8000_0001, 0x0200_0000, 0x0300_0001);
    let t = "command_parser";
    write(
        t,
        "create_primary",
        &create_primary(&ecc_signing_public(&[])),
    );
    write(t, "hash_sequence_start", &hash_sequence_start());
    write(
        t,
        "start_hmac_session",
        &start_auth_session(SE_HMAC, &[1; 16]),
    );
    write(
        t,
        "start_policy_session",
        &start_auth_session(SE_POLICY, &[1; 16]),
    );
    write(t, "flush_key", &flush_context(key));
    write(t, "flush_hmac_session", &flush_context(hmac));
    write(t, "flush_saved_session", &flush_context(policy));
    write(t, "save_key", &context_save(key));
    write(t, "save_session", &context_save(hmac));
    write(
        t,
        "load_object",
        &context_load(&blob(0, 0x8000_0000, &[0, 0, 0, 1, 0, 0, 0, 0])),
    );
    write(
        t,
        "load_session",
        &context_load(&blob(3, policy, &policy.to_be_bytes())),
    );
    write(
        t,
        "cap_transient",
        &get_capability(CAP_HANDLES, 0x8000_0000, 10),
    );
    write(
        t,
        "cap_loaded_sessions",
        &get_capability(CAP_HANDLES, 0x0200_0000, 10),
    );
    write(
        t,
        "cap_saved_sessions",
        &get_capability(CAP_HANDLES, 0x0300_0000, 10),
    );
    write(t, "cap_commands", &get_capability(2, 0, 256));
    write(t, "policy_password", &policy_password(hmac));
    write(t, "sign_pw", &sign(key, Auth::pw(KEY_AUTH)));
    write(
        t,
        "sign_session_continue",
        &sign(key, Auth::policy(hmac, true, KEY_AUTH)),
    );
    write(
        t,
        "sign_session_end",
        &sign(key, Auth::policy(hmac, false, KEY_AUTH)),
    );
    let three = [
        Auth::pw(&[]),
        Auth::policy(hmac, true, &[]),
        Auth::policy(policy, false, &[]),
    ];
    write(
        t,
        "get_random_3_sessions",
        &command(CC_GET_RANDOM, &[], &three, &Buf::new().u16(8).done()),
    );
    write(t, "sequence_update", &sequence_update(seq, b"abc"));
    write(t, "sequence_complete", &sequence_complete(seq, b"abc"));
    write(
        t,
        "vendor",
        &command(tpmrs_fuzz::fake::CC_VENDOR, &[key], &[], &[]),
    );
    let params = Buf::new().u32(CAP_HANDLES).u32(0x0200_0000).u32(16).done();
    write(
        t,
        "cap_with_auth",
        &command(CC_GET_CAPABILITY, &[], &[Auth::pw(&[])], &params),
    );
    let mut bad_tag = get_random(8);
    bad_tag[1] = 0xC4;
    write(t, "bad_tag", &bad_tag);
    write(
        t,
        "header_only",
        &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x7B],
    );
}

/// A response with a correct size field.
fn response(tag: u16, rc: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Buf::new().u16(tag).u32(0).u32(rc).bytes(body).done();
    let n = v.len() as u32;
    v[2..6].copy_from_slice(&n.to_be_bytes());
    v
}

fn response_mapper() {
    let t = "response_mapper";
    // The parsers take the whole input as a response.
    let handles = Buf::new()
        .u8(0)
        .u32(1)
        .u32(3)
        .u32(0x0200_0000)
        .u32(0x0200_0001)
        .u32(0x0300_0002)
        .done();
    write(t, "rsp_cap_handles", &response(0x8001, 0, &handles));
    let cmds = Buf::new()
        .u8(1)
        .u32(2)
        .u32(2)
        .u32(0x0200_0131)
        .u32(0x1200_0176)
        .done();
    write(t, "rsp_cap_commands", &response(0x8001, 0, &cmds));
    write(
        t,
        "rsp_context",
        &response(0x8001, 0, &blob(7, 0x0200_0000, &[1, 2, 3, 4])),
    );
    write(t, "rsp_error", &response(0x8001, 0x922, &[]));

    // Scenarios: [config] [n] n x [menu entry, space] [args len / 2] [args] [script].
    // Menu entries: 0 CreatePrimary, 1 HashSequenceStart, 2 StartAuthSession,
    // 3 FlushContext, 4 ContextSave, 5 ContextLoad, 6 GetCapability, 7 PolicyPassword,
    // 8 Sign, 9 GetRandom with sessions, 10 sequence, 11 raw, 12 GetCapability with auth,
    // 13 vendor. Script entries: see FuzzTpm::scripted.
    let scenario = |ops: &[(u8, u8)], args: &[u8], script: &[u8]| -> Vec<u8> {
        let mut v = vec![0x01, ops.len() as u8];
        for (k, s) in ops {
            v.extend_from_slice(&[*k, *s]);
        }
        let mut a = args.to_vec();
        if a.len() % 2 == 1 {
            a.push(0);
        }
        v.push((a.len() / 2) as u8);
        v.extend_from_slice(&a);
        v.extend_from_slice(script);
        v
    };
    // Known handles in space A: [key, sequence, HMAC session, policy session(, B's)].
    let ops = [(0, 0), (8, 0), (2, 0), (4, 0), (3, 0), (6, 0)];
    let args = [1, 0, 0, 2, 0, 0, 0x00, 2, 0, 0];
    write(t, "healthy", &scenario(&ops, &args, &[]));
    // The same, with every answer scripted one way.
    for (name, entry) in [
        ("error_rc", &[1u8, 0, 25, 0, 0][..]), // well framed, TPM_RC_RETRY
        ("cut", &[3, 0, 4][..]),
        ("size_off", &[3, 3, 0, 0, 0, 0, 1][..]),
        ("extended", &[3, 2, 4, 1, 2, 3, 4][..]),
        ("transport", &[4][..]),
        ("lost", &[5][..]),
        ("too_long", &[6, 9][..]),
        ("handle_swap", &[7, 2, 1][..]),
        (
            "raw",
            &[2, 0, 12, 0x80, 1, 0, 0, 0, 12, 0, 0, 0, 0, 0x80, 0][..],
        ),
    ] {
        let script: Vec<u8> = entry
            .iter()
            .copied()
            .cycle()
            .take(entry.len() * 12)
            .collect();
        write(t, name, &scenario(&ops, &args, &script));
    }
    // Sessions in use: policy password, sign with a session ending it, get random with three.
    let ops = [(7, 0), (8, 0), (9, 0), (5, 1)];
    let args = [2, 0, 2, 0, 2, 2, 1, 0, 3, 0, 0, 0, 0];
    write(
        t,
        "sessions",
        &scenario(&ops, &args, &[0, 0, 1, 0, 10, 0, 0, 0, 3, 4, 0]),
    );
    // A scripted init (config bit 7): the command table read from the script.
    let mut v = vec![0x80, 0, 0];
    v.extend_from_slice(&[1, 0, 0, 5, 0]);
    write(t, "scripted_init", &v);
}

/// space_state_machine inputs.
#[derive(Default)]
struct Sm(Vec<u8>);

impl Sm {
    fn new(c0: u8, c1: u8, c2: u8) -> Self {
        Sm(vec![c0, c1, c2])
    }
    fn op(mut self, op: u8, space: u8, args: &[u8]) -> Self {
        self.0.extend_from_slice(&[op, space]);
        self.0.extend_from_slice(args);
        self
    }
}

fn space_state_machine() {
    let t = "space_state_machine";
    // Config: c0 = objects-1 | (sessions-1) << 2 | abandoned << 4 | timeout sel << 6;
    // c1 = interval sel | (TPM sessions-2) << 1 | (loaded sessions-1) << 4;
    // c2 = gap (4..7, else none) | (page-1) << 5.
    let roomy = (3 | 3 << 2 | 2 << 4, 7 << 1 | 2 << 4, 0);
    let (c0, c1, c2) = roomy;
    // A key and a session used together; the session saved by its client; the space
    // closed (the session is abandoned) and the blob loaded by another space.
    let basic = Sm::new(c0, c1, c2)
        .op(0, 0, &[1]) // CreatePrimary
        .op(2, 0, &[0]) // StartAuthSession (HMAC)
        .op(8, 0, &[0, 0, 1, 1]) // Sign(key, session, continue)
        .op(7, 0, &[1]) // PolicyPassword(session)
        .op(9, 0, &[0, 1, 0, 0]) // GetRandom(session, continue)
        .op(4, 0, &[1]) // ContextSave(session)
        .op(6, 0, &[0, 0, 2]) // GetCapability(transient)
        .op(6, 0, &[0, 2, 2]) // GetCapability(loaded sessions)
        .op(18, 0, &[0]) // close space 0
        .op(5, 1, &[0, 2]) // ContextLoad(blob) in space 1
        .op(9, 1, &[0, 0, 0, 0]) // GetRandom(session, end it)
        .op(3, 1, &[0]); // FlushContext
    write(t, "basic", &basic.0);
    // Sequences: start, update, save, complete; objects to the limit; flush.
    let seqs = Sm::new(1, c1, c2)
        .op(1, 0, &[])
        .op(10, 0, &[0, 1])
        .op(4, 0, &[0])
        .op(10, 0, &[0, 0])
        .op(0, 0, &[0])
        .op(0, 0, &[0])
        .op(0, 0, &[0])
        .op(3, 0, &[0])
        .op(3, 0, &[0xD0]);
    write(t, "sequences", &seqs.0);
    // Exhaustion: a TPM with 2 session slots, sessions in two spaces, a third queues, time
    // passes beyond SESSION_TIMEOUT, the waiter evicts and retries.
    let exhaust = Sm::new(c0, 1 << 4, c2)
        .op(2, 0, &[0])
        .op(2, 1, &[1])
        .op(14, 2, &[0, 0])
        .op(15, 2, &[0, 1])
        .op(19, 0, &[4])
        .op(15, 2, &[0, 1])
        .op(15, 2, &[0, 1])
        .op(7, 0, &[0])
        .op(16, 0, &[0]);
    write(t, "exhaustion", &exhaust.0);
    // Context gap: a gap of 4, several sessions saved in turn.
    let mut gap = Sm::new(c0, c1, 4);
    for i in 0..6u8 {
        gap = gap.op(2, i % 3, &[i & 1]).op(7, i % 3, &[0]);
    }
    write(t, "context_gap", &gap.0);
    // Faults: an error on the RM's save, a transport failure on its flush, garbage on a
    // load, the transport down across a close, an external session.
    let faults = Sm::new(c0, c1, c2)
        .op(0, 0, &[1])
        .op(2, 0, &[0])
        .op(20, 0, &[1, 0, 0, 10]) // ContextSave: TPM_RC_CONTEXT_GAP
        .op(7, 0, &[1])
        .op(20, 0, &[2, 0, 4]) // FlushContext: transport
        .op(8, 0, &[0, 0, 1, 1])
        .op(20, 0, &[0, 0, 6]) // ContextLoad: garbage
        .op(7, 0, &[1])
        .op(21, 0, &[1]) // down
        .op(18, 0, &[0])
        .op(21, 0, &[0]) // up
        .op(22, 1, &[1, 1]) // external loaded session
        .op(2, 1, &[0])
        .op(23, 0, &[]);
    write(t, "faults", &faults.0);
}

fn main() {
    command_parser();
    response_mapper();
    space_state_machine();
}
