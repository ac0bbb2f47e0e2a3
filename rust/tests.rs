// SPDX-License-Identifier: GPL-2.0
//! KUnit suite `tpmrs`, built into `tpmrs_kunit.ko` (see `tpmrs_kunit.rs`) and run when that
//! module is loaded: results in the kernel log and in `/sys/kernel/debug/kunit/tpmrs/results`.
//!
//! They run against the real TPM of the test guest (swtpm): the transport through the C
//! shim, a full-size command, and the protocol core compiled for the kernel.

#[kernel::macros::kunit_tests(tpmrs)]
mod kunit {
    use crate::chip::Chip;
    use crate::proto::{self, Tpm, TPM_BUFSIZE};
    use kernel::{alloc::KVec, prelude::*};

    /// TPM2_GetRandom(8).
    const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];

    fn be32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    #[test]
    fn transmit_get_random() -> Result {
        let chip = Chip::get_default()?;
        let mut tpm = chip.lock()?;
        let mut rsp = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        let len = tpm.transmit(&GET_RANDOM_8, &mut rsp).map_err(|_| EIO)?;
        // Header (10) + TPM2B size (2) + 8 random bytes, rc TPM_RC_SUCCESS.
        assert_eq!(len, 20);
        assert_eq!(be32(&rsp, 6), 0);
        assert_eq!(be32(&rsp, 2), 20);
        Ok(())
    }

    #[test]
    fn transmit_full_size_command() -> Result {
        // A 4096-byte GetRandom whose parameter area carries trailing garbage: the transport
        // must deliver all of it (tpm_buf_init() alone cannot), and the TPM answers with a
        // TPM-format error, not a transport failure.
        let chip = Chip::get_default()?;
        let mut tpm = chip.lock()?;
        let mut cmd = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        cmd[..12].copy_from_slice(&GET_RANDOM_8);
        cmd[2..6].copy_from_slice(&(TPM_BUFSIZE as u32).to_be_bytes());
        let mut rsp = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        let len = tpm.transmit(&cmd, &mut rsp).map_err(|_| EIO)?;
        assert_eq!(len, 10);
        assert_ne!(be32(&rsp, 6), 0);
        Ok(())
    }

    #[test]
    fn transmit_rejects_oversize() -> Result {
        let chip = Chip::get_default()?;
        let mut tpm = chip.lock()?;
        let cmd = KVec::from_elem(0u8, TPM_BUFSIZE + 1, GFP_KERNEL)?;
        let mut rsp = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        assert!(tpm.transmit(&cmd, &mut rsp).is_err());
        Ok(())
    }

    /// The response length of an outcome that must be a response.
    fn response(o: proto::rm::Outcome) -> Result<usize> {
        match o {
            proto::rm::Outcome::Response(n) => Ok(n),
            proto::rm::Outcome::Exhausted { .. } => Err(EAGAIN),
        }
    }

    /// The protocol core, initialized from the real TPM, with one space and a response buffer.
    fn core_with_space(tpm: &mut dyn Tpm) -> Result<(proto::Rm, proto::Space, KVec<u8>)> {
        let mut rm = proto::Rm::new(proto::Config {
            max_objects: 4,
            max_sessions: 4,
            ..Default::default()
        })
        .map_err(|_| ENOMEM)?;
        rm.init(tpm).map_err(|_| EIO)?;
        let space = proto::SpaceIds::new().open(1000);
        Ok((rm, space, KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?))
    }

    #[test]
    fn core_in_kernel_unknown_command_sends_nothing() -> Result {
        let chip = Chip::get_default()?;
        let mut tpm = chip.lock()?;
        let (mut rm, mut space, mut rsp) = core_with_space(&mut tpm)?;

        let before = rm.stats().tpm_commands;
        // Command code 0x0000ffff does not exist.
        let bogus = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0xff, 0xff];
        let len = rm
            .execute(&mut space, &mut tpm, 0, None, &bogus, &mut rsp)
            .map_err(|_| EIO)
            .and_then(response)?;
        assert_eq!(len, 10);
        assert_eq!(be32(&rsp, 6), 0x000b_0143);
        assert_eq!(rm.stats().tpm_commands, before);

        let len = rm
            .execute(&mut space, &mut tpm, 0, None, &GET_RANDOM_8, &mut rsp)
            .map_err(|_| EIO)
            .and_then(response)?;
        assert_eq!(len, 20);
        assert_eq!(rm.stats().tpm_commands, before + 1);
        rm.close_space(&mut space, &mut tpm, 0);
        Ok(())
    }

    #[test]
    fn core_in_kernel_rejects_lying_size() -> Result {
        let chip = Chip::get_default()?;
        let mut tpm = chip.lock()?;
        let (mut rm, mut space, mut rsp) = core_with_space(&mut tpm)?;
        let mut cmd = GET_RANDOM_8;
        cmd[5] = 40;
        let before = rm.stats().tpm_commands;
        let err = rm.execute(&mut space, &mut tpm, 0, None, &cmd, &mut rsp);
        assert_eq!(err.map_err(|e| e.to_errno()), Err(-22));
        assert_eq!(rm.stats().tpm_commands, before);
        rm.close_space(&mut space, &mut tpm, 0);
        Ok(())
    }
}
