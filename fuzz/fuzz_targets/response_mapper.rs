// SPDX-License-Identifier: GPL-2.0
//! response_mapper: arbitrary TPM responses.
//!
//! 1. The response parsers alone, on the whole input as one response: `ResponseHeader`,
//!    `context_save_blob`, `context_load_handle`, `CcTable::add_from_response`,
//!    `filter_handles_response` (and `write_handles_response` with handles from the input).
//! 2. The pipeline against a TPM whose answers come from the input, for the client's command
//!    and for the RM's own ContextLoad/ContextSave/FlushContext (and, if the first byte says
//!    so, for `Rm::init`'s GetCapability): any code, cut or extended responses, wrong size
//!    fields, lengths beyond the buffer, transport errors, swapped response handles (see
//!    `FuzzTpm::scripted`). Input layout:
//!
//!    `[config] [n] n x [menu entry, space] [menu arguments...] [script...]`
//!
//!    Every response the RM returns must be well framed, its bookkeeping consistent; after
//!    the script ends and both spaces close, no space owns a session and nothing is pending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpmrs_fuzz::fake::FakeTpm;
use tpmrs_fuzz::{check_response, check_rm, known_handles, marshal, menu_command, FuzzTpm, Input};
use tpmrs_proto::capability::{filter_handles_response, write_handles_response};
use tpmrs_proto::context::{context_load_handle, context_save_blob, parse_context};
use tpmrs_proto::response::ResponseHeader;
use tpmrs_proto::{CcTable, Config, Rm, TPM_BUFSIZE};

fn parsers(data: &[u8]) {
    let header = ResponseHeader::parse(data);
    if let Ok(h) = header {
        assert_eq!(h.size as usize, data.len());
    }
    if let Ok(b) = context_save_blob(data) {
        assert_eq!(parse_context(b).unwrap().len, b.len());
    }
    let _ = context_load_handle(data);
    let mut t = CcTable::new();
    if t.add_from_response(data).is_ok() {
        // Every entry read must be found again by its command code.
        for w in data.get(19..).unwrap_or(&[]).chunks_exact(4).take(t.len()) {
            let attrs = u32::from_be_bytes(w.try_into().unwrap());
            let cc = tpmrs_proto::CcAttrs(attrs).command_code();
            assert!(t.lookup(cc).is_some(), "{attrs:#x} read but not found");
        }
    }

    // Filtering, in a buffer of TPM_BUFSIZE as the RM has it.
    let mut buf = vec![0u8; TPM_BUFSIZE];
    let n = data.len().min(TPM_BUFSIZE);
    buf[..n].copy_from_slice(&data[..n]);
    let keep_odd = |h: u32| (h & 1 == 1).then_some(h ^ 0x10);
    let limit = u32::from(data.first().copied().unwrap_or(0) % 4);
    if let Ok(f) = filter_handles_response(&mut buf, n, limit, keep_odd) {
        let m = f.len;
        assert!(m <= n, "filtering grew the response {n} -> {m}");
        assert!(f.kept <= limit, "kept {} of at most {limit}", f.kept);
        if m != n {
            // Rewritten (the RM validates the header first; alone, the size field is not
            // read): the result is well framed.
            let h = ResponseHeader::parse(&buf[..m]).expect("filtered response malformed");
            assert_eq!(h.rc, 0);
        }
    }
    let _ = filter_handles_response(&mut buf, data.len().saturating_add(7), u32::MAX, keep_odd);

    // Synthesized handle lists: from the input's words, distinct.
    let mut handles: Vec<u32> = data
        .chunks_exact(4)
        .skip(2)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    handles.sort_unstable();
    handles.dedup();
    let (property, count) = match data {
        [a, b, c, d, e, f, g, h, ..] => (
            u32::from_be_bytes([*a, *b, *c, *d]),
            u32::from_be_bytes([*e, *f, *g, *h]),
        ),
        _ => (0, 0),
    };
    let mut out = vec![0u8; TPM_BUFSIZE];
    if let Ok(m) = write_handles_response(&mut out, &handles, property, count) {
        ResponseHeader::parse(&out[..m]).expect("synthesized list malformed");
        let listed = u32::from_be_bytes(out[15..19].try_into().unwrap()) as usize;
        assert_eq!(m, 19 + 4 * listed);
        assert!(listed as u32 <= count.min(254));
        let list: Vec<u32> = out[19..m]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert!(list.windows(2).all(|w| w[0] < w[1]), "list not ascending");
        assert!(list.iter().all(|h| *h >= property && handles.contains(h)));
        let eligible = handles.iter().filter(|h| **h >= property).count();
        assert_eq!(out[10] == 1, listed < eligible, "moreData");
    }
}

fn scenario(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = inp.u8();
    let config = Config {
        max_abandoned: [0, 1, 8][usize::from(cfg & 3) % 3],
        max_objects: if cfg & 4 != 0 { 2 } else { 64 },
        max_sessions: if cfg & 8 != 0 { 2 } else { 64 },
        ..Config::default()
    };
    let mut fake = FakeTpm::new();
    fake.gap_max = (cfg & 0x10 != 0).then_some(3);
    fake.max_loaded_sessions = if cfg & 0x20 != 0 { 1 } else { 3 };
    let mut tpm = FuzzTpm::new(fake);
    // Scripted answers contradict the fake's state: no leak checks here.
    tpm.misled = true;
    let mut rm = Rm::new(config).unwrap();

    let n_ops = usize::from(inp.u8() % 16);
    let ops: Vec<(u8, u8)> = (0..n_ops).map(|_| (inp.u8(), inp.u8())).collect();
    // The menu arguments come next, then the script; the split is fixed by a length byte.
    let args_len = usize::from(inp.u8()) * 2;
    let args = inp.bytes(args_len);
    let script = inp.rest().to_vec();

    if cfg & 0x80 != 0 {
        tpm.script = Some(script.clone());
        let r = rm.init(&mut tpm);
        if r.is_err() {
            // init must leave the RM unusable but sane.
            let mut s = rm.new_space(1000).unwrap();
            let mut rsp = vec![0u8; TPM_BUFSIZE];
            let r = rm.execute(&mut s, &mut tpm, 1, None, &marshal::get_random(8), &mut rsp);
            assert_eq!(r, Err(tpmrs_proto::RmError::NotInitialized));
            return;
        }
        tpm.script = None;
    } else {
        rm.init(&mut tpm).unwrap();
    }

    let mut now = 1_000u64;
    let mut rsp = vec![0u8; TPM_BUFSIZE];
    let mut spaces = [rm.new_space(1000).unwrap(), rm.new_space(1000).unwrap()];
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    // Healthy setup: a key, a sequence, an HMAC session, a policy session the client saved,
    // and a session in the other space.
    {
        let [a, b] = &mut spaces;
        for (in_a, cmd) in [
            (
                true,
                marshal::create_primary(&marshal::ecc_signing_public(&[])),
            ),
            (true, marshal::hash_sequence_start()),
            (
                true,
                marshal::start_auth_session(marshal::SE_HMAC, &[1; 16]),
            ),
            (
                true,
                marshal::start_auth_session(marshal::SE_POLICY, &[2; 16]),
            ),
            (true, marshal::context_save(0x0300_0001)),
            (
                false,
                marshal::start_auth_session(marshal::SE_HMAC, &[3; 16]),
            ),
        ] {
            let s = if in_a { &mut *a } else { &mut *b };
            now += 1_000;
            if let Ok(n) = rm
                .execute(s, &mut tpm, now, None, &cmd, &mut rsp)
                .and_then(|o| o.response())
            {
                if marshal::cc_of(&cmd) == marshal::CC_CONTEXT_SAVE && marshal::rc(&rsp[..n]) == 0 {
                    blobs.push(rsp[10..n].to_vec());
                }
            }
        }
    }

    tpm.script = Some(script);
    let ids = [spaces[0].id(), spaces[1].id()];
    let mut args = Input::new(args);
    for (kind, which) in ops {
        let space = &mut spaces[usize::from(which & 1)];
        let known = known_handles(&rm, space);
        let cmd = menu_command(&mut args, kind, &known, &blobs);
        now += 1_000_000 * u64::from(which >> 1);
        let r = rm
            .execute(space, &mut tpm, now, None, &cmd, &mut rsp)
            .and_then(|o| o.response());
        if let Ok(n) = r {
            check_response(&rsp, n);
            if marshal::cc_of(&cmd) == marshal::CC_CONTEXT_SAVE
                && marshal::rc(&rsp[..n]) == 0
                && n > 10
                && blobs.len() < 8
            {
                blobs.push(rsp[10..n].to_vec());
            }
        }
        check_rm(&rm, &ids);
    }

    tpm.clear_faults();
    let [a, b] = &mut spaces;
    rm.close_space(a, &mut tpm, now);
    check_rm(&rm, &[ids[1]]);
    rm.close_space(b, &mut tpm, now);
    check_rm(&rm, &[]);
    assert!(
        rm.pending_flushes().is_empty(),
        "flushes pending with a healthy TPM"
    );
    for e in rm.sessions().entries() {
        assert!(
            e.is_abandoned(),
            "session {:#x} left after close, not abandoned",
            e.handle
        );
    }
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    scenario(data);
});
