// SPDX-License-Identifier: GPL-2.0
//! command_parser: the fuzz input is one client command, exactly as written to /dev/tpmrs0.
//!
//! 1. The parsers alone: `CommandHeader::parse`, `Command::parse` with every cHandles and
//!    the attribute bits that matter, `CapabilityRequest::parse`, `parse_context` of the
//!    parameter area; each checked for consistency.
//! 2. The whole pipeline: `Rm::execute` of the command in a space holding a key, a hash
//!    sequence, an HMAC session and a policy session saved by its client (handles
//!    0x80000000, 0x80000001, 0x02000000, 0x03000001), then in an empty second space, against
//!    the fake TPM of the integration tests (healthy). Every response must be well framed,
//!    the RM's bookkeeping consistent, and after both spaces close the TPM must hold nothing
//!    but the RM's abandoned sessions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpmrs_fuzz::fake::FakeTpm;
use tpmrs_fuzz::marshal;
use tpmrs_fuzz::{check_all_closed, check_response, check_rm, check_tpm_matches_rm, FuzzTpm};
use tpmrs_proto::capability::CapabilityRequest;
use tpmrs_proto::command::{Command, CommandHeader, FramingError};
use tpmrs_proto::context::parse_context;
use tpmrs_proto::{CcAttrs, Config, Rm, RmError, Space, TPM_BUFSIZE};

fn parsers(data: &[u8]) {
    let header = CommandHeader::parse(data);
    if let Ok(h) = header {
        assert_eq!(h.size as usize, data.len());
    }
    let cc = data
        .get(6..10)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
    for c_handles in 0..8u32 {
        for extra in [0u32, 1 << 28 | 1 << 24] {
            let attrs = CcAttrs((cc & 0xFFFF) | c_handles << 25 | extra);
            match Command::parse(data, attrs) {
                Ok(c) => {
                    assert!(header.is_ok());
                    assert_eq!(c.handles().len(), c_handles as usize);
                    assert!(c.sessions().len() <= 3);
                    let tag = c.header.tag;
                    assert!(tag == 0x8001 || tag == 0x8002);
                    assert_eq!(tag == 0x8002, !c.sessions().is_empty());
                    let p = c.params_offset();
                    assert!(p <= data.len(), "params offset {p} past {}", data.len());
                    assert!(p >= 10 + 4 * c_handles as usize);
                    for (i, h) in c.handles().iter().enumerate() {
                        let at = Command::handle_offset(i);
                        assert_eq!(&data[at..at + 4], &h.to_be_bytes());
                    }
                    let _ = CapabilityRequest::parse(data, p);
                    if let Ok(info) = parse_context(&data[p..]) {
                        assert!(info.len <= data.len() - p);
                    }
                }
                Err(FramingError::TooShort | FramingError::SizeMismatch) => {
                    assert!(header.is_err());
                }
                Err(_) => assert!(header.is_ok()),
            }
        }
    }
}

struct World {
    rm: Rm,
    tpm: FuzzTpm,
    now: u64,
    rsp: Vec<u8>,
}

impl World {
    fn exec(&mut self, space: &mut Space, cmd: &[u8]) -> Result<Vec<u8>, RmError> {
        self.now += 1_000_000;
        let r = self
            .rm
            .execute(space, &mut self.tpm, self.now, None, cmd, &mut self.rsp)
            .and_then(|o| o.response());
        if let Ok(n) = r {
            check_response(&self.rsp, n);
        }
        r.map(|n| self.rsp[..n].to_vec())
    }

    fn setup_ok(&mut self, space: &mut Space, cmd: &[u8]) -> Vec<u8> {
        let r = self.exec(space, cmd).expect("setup command failed");
        assert_eq!(marshal::rc(&r), 0, "setup command rc");
        r
    }
}

fn pipeline(data: &[u8]) {
    let mut fake = FakeTpm::new();
    fake.max_loaded_sessions = 3;
    let mut w = World {
        rm: Rm::new(Config::default()).unwrap(),
        tpm: FuzzTpm::new(fake),
        now: 1_000,
        rsp: vec![0; TPM_BUFSIZE],
    };
    w.rm.init(&mut w.tpm).unwrap();
    let mut a = w.rm.new_space(1000).unwrap();
    let mut b = w.rm.new_space(1000).unwrap();
    let key = marshal::rhandle(&w.setup_ok(
        &mut a,
        &marshal::create_primary(&marshal::ecc_signing_public(&[])),
    ));
    let seq = marshal::rhandle(&w.setup_ok(&mut a, &marshal::hash_sequence_start()));
    let hmac = marshal::rhandle(&w.setup_ok(
        &mut a,
        &marshal::start_auth_session(marshal::SE_HMAC, &[1; 16]),
    ));
    let policy = marshal::rhandle(&w.setup_ok(
        &mut a,
        &marshal::start_auth_session(marshal::SE_POLICY, &[2; 16]),
    ));
    w.setup_ok(&mut a, &marshal::context_save(policy));
    assert_eq!(
        (key, seq, hmac, policy),
        (0x8000_0000, 0x8000_0001, 0x0200_0000, 0x0300_0001)
    );

    // The command as it is, then (if its size field is wrong) with the size fixed up, so
    // that mutations that change the length still reach the pipeline.
    let fixed = fix_size(data);
    let ids = [a.id(), b.id()];
    for (i, (in_a, use_fixed)) in [(true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        if i == 2 && fixed == data {
            break;
        }
        let space = if in_a { &mut a } else { &mut b };
        let cmd: &[u8] = if use_fixed { &fixed } else { data };
        let r = w.exec(space, cmd);
        check_rm(&w.rm, &ids);
        check_tpm_matches_rm(&w.rm, &w.tpm, &[&a, &b]);
        match r {
            // The fake is healthy: no transport error, and its answers are well formed.
            Err(
                RmError::Transport(_)
                | RmError::NotSent(_)
                | RmError::BadResponse
                | RmError::BufferTooSmall,
            ) => {
                panic!("unexpected {r:?} with a healthy TPM")
            }
            _ => {}
        }
    }
    w.rm.close_space(&mut a, &mut w.tpm, w.now);
    check_rm(&w.rm, &[b.id()]);
    w.rm.close_space(&mut b, &mut w.tpm, w.now);
    check_all_closed(&w.rm, &w.tpm);
}

/// `data` with its commandSize set to its length (if it has one).
fn fix_size(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    if v.len() >= 6 {
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
    }
    v
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    parsers(&fix_size(data));
    if data.len() <= TPM_BUFSIZE {
        pipeline(data);
    }
});
