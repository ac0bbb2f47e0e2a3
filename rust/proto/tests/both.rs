// SPDX-License-Identifier: GPL-2.0
//! Cases whose answer must not depend on the TPM: each runs against the fake TPM and
//! against a real swtpm (which must be installed: these tests fail, never skip, without it).

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::rc::*;
use common::swtpm::SwTpm;
use common::Harness;
use tpmrs_proto::{Config, RmError, Tpm, TPM_BUFSIZE};

/// Runs `case` against both TPMs.
fn on_both(case: fn(&mut Harness<FakeTpm>), case_sw: fn(&mut Harness<SwTpm>)) {
    case(&mut Harness::new(FakeTpm::new(), Config::default()));
    case_sw(&mut Harness::new(SwTpm::start(), Config::default()));
}

/// Malformed commands are refused with the errno tpmrm0 gives, unknown command codes and a
/// bad tag are answered in the RM layer, and none of them sends anything to the TPM.
fn malformed_commands_send_nothing<T: Tpm>(h: &mut Harness<T>) {
    let mut s = h.space();
    let k = rhandle(&h.success(&mut s, &create_primary(&ecc_signing_public(&[]))));
    let good = sign(k, Auth::pw(KEY_AUTH));
    let pw = Auth::pw(&[]);
    let with = |at: usize, f: fn(u8) -> u8| {
        let mut c = good.clone();
        c[at] = f(c[at]);
        c
    };
    let invalid: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("9 bytes", good[..9].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("size field too large", with(5, |b| b + 1)),
        ("size field wrong", with(5, |b| b ^ 0x10)),
        ("handle area truncated", command(CC_SIGN, &[], &[], &[])),
        ("authorizationSize overflowing", with(17, |_| 0xff)),
        ("authorizationSize too large", with(17, |_| 0x7f)),
        (
            "four sessions",
            command(
                CC_SIGN,
                &[k],
                &[pw.clone(), pw.clone(), pw.clone(), pw],
                &[],
            ),
        ),
        (
            "transient handle not the space's",
            sign(0x80FF_0000, Auth::pw(&[])),
        ),
        (
            "flush of a transient handle not the space's",
            flush_context(0x80FF_0000),
        ),
    ];
    let before = h.tpm_commands();
    for (what, c) in &invalid {
        assert_eq!(h.exec(&mut s, c), Err(RmError::InvalidCommand), "{what}");
    }
    let answered: [(&str, Vec<u8>, u32); 3] = [
        (
            "unknown command code",
            command(0x0000_0FFF, &[], &[], &[]),
            rm(TPM_RC_COMMAND_CODE),
        ),
        (
            "unknown vendor command",
            command(0x2000_0FFF, &[], &[], &[]),
            rm(TPM_RC_COMMAND_CODE),
        ),
        ("bad tag", with_tag(get_random(8), 0x80C1), 0x1E),
    ];
    for (what, c, code) in &answered {
        let r = h.ok(&mut s, c);
        assert_eq!((r.len(), rc(&r)), (10, *code), "{what}");
    }
    assert_eq!(
        h.exec(&mut s, &vec![0u8; TPM_BUFSIZE + 1]),
        Err(RmError::TooBig)
    );
    let mut small = vec![0u8; 100];
    assert_eq!(
        h.rm.execute(&mut s, &mut h.tpm, 0, None, &get_random(1), &mut small),
        Err(RmError::BufferTooSmall)
    );
    assert_eq!(h.tpm_commands(), before, "nothing sent");
    h.close(&mut s);
}

fn with_tag(mut cmd: Vec<u8>, tag: u16) -> Vec<u8> {
    cmd[..2].copy_from_slice(&tag.to_be_bytes());
    cmd
}

#[test]
fn malformed_commands_send_nothing_on_both() {
    on_both(
        malformed_commands_send_nothing,
        malformed_commands_send_nothing,
    );
}
