// SPDX-License-Identifier: GPL-2.0
//! Response headers and responses synthesized by the resource manager.

use super::codec::{Reader, Truncated, Writer};
use super::constants::{TPM_HEADER_SIZE, TPM_ST_NO_SESSIONS, TSS2_RESMGR_TPM_RC_LAYER};

/// A response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// TPM_ST.
    pub tag: u16,
    /// responseSize.
    pub size: u32,
    /// responseCode.
    pub rc: u32,
}

impl ResponseHeader {
    /// Reads the header of `rsp` and checks that responseSize is `rsp.len()`.
    ///
    /// # Errors
    /// [`Truncated`] if the header is incomplete or its size is not `rsp.len()`.
    pub fn parse(rsp: &[u8]) -> Result<Self, Truncated> {
        let mut r = Reader::new(rsp);
        let tag = r.u16()?;
        let size = r.u32()?;
        let rc = r.u32()?;
        if usize::try_from(size).ok() != Some(rsp.len()) {
            return Err(Truncated);
        }
        Ok(ResponseHeader { tag, size, rc })
    }
}

/// Writes a 10-byte response (TPM_ST_NO_SESSIONS) with response code `rc`; returns 10.
///
/// # Errors
/// [`Truncated`] if `rsp` is shorter than 10 bytes.
pub fn write_rc_response(rsp: &mut [u8], rc: u32) -> Result<usize, Truncated> {
    let mut w = Writer::new(rsp);
    w.u16(TPM_ST_NO_SESSIONS)?;
    w.u32(TPM_HEADER_SIZE as u32)?;
    w.u32(rc)?;
    Ok(w.len())
}

/// Writes a 10-byte error response from the resource-manager layer (`rc` | layer 11).
///
/// # Errors
/// [`Truncated`] if `rsp` is shorter than 10 bytes.
pub fn write_rm_error(rsp: &mut [u8], rc: u32) -> Result<usize, Truncated> {
    write_rc_response(rsp, rc | TSS2_RESMGR_TPM_RC_LAYER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesized() {
        let mut b = [0u8; 12];
        assert_eq!(write_rm_error(&mut b, 0x143), Ok(10));
        assert_eq!(&b[..10], &[0x80, 1, 0, 0, 0, 10, 0, 0x0B, 0x01, 0x43]);
        assert_eq!(ResponseHeader::parse(&b[..10]).unwrap().rc, 0x000B_0143);
        assert_eq!(ResponseHeader::parse(&b), Err(Truncated));
        assert_eq!(ResponseHeader::parse(&b[..9]), Err(Truncated));
        assert_eq!(write_rc_response(&mut b[..9], 0), Err(Truncated));
    }
}
