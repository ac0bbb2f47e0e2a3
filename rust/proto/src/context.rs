// SPDX-License-Identifier: GPL-2.0
//! The resource manager's own context-management commands (TPM2_ContextLoad,
//! TPM2_ContextSave, TPM2_FlushContext) and the TPMS_CONTEXT they move, and the minimal
//! TPM2_StartAuthSession with which it holds a session number (`rm/preoccupy.rs`).

use super::codec::{Reader, Truncated, Writer};
use super::constants::{
    TPM_ALG_NULL, TPM_ALG_SHA256, TPM_CC_CONTEXT_LOAD, TPM_CC_CONTEXT_SAVE, TPM_CC_FLUSH_CONTEXT,
    TPM_CC_START_AUTH_SESSION, TPM_HEADER_SIZE, TPM_RH_NULL, TPM_SE_HMAC, TPM_ST_NO_SESSIONS,
};

/// Size of the fixed part of a TPMS_CONTEXT (sequence, savedHandle, hierarchy, blob size).
#[cfg(not(tpmrs_kernel))]
pub const TPMS_CONTEXT_FIXED: usize = 8 + 4 + 4 + 2;

/// The interesting fields of a TPMS_CONTEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextInfo {
    /// sequence.
    pub sequence: u64,
    /// savedHandle: the session handle, or 0x80000000/1/2 for an object/sequence/stClear
    /// object.
    pub saved_handle: u32,
    /// hierarchy.
    pub hierarchy: u32,
    /// Length of the whole marshaled TPMS_CONTEXT.
    pub len: usize,
}

/// Reads the TPMS_CONTEXT at the start of `bytes`.
///
/// # Errors
/// [`Truncated`] if it is incomplete.
pub fn parse_context(bytes: &[u8]) -> Result<ContextInfo, Truncated> {
    let mut r = Reader::new(bytes);
    let sequence = r.u64()?;
    let saved_handle = r.u32()?;
    let hierarchy = r.u32()?;
    r.tpm2b()?;
    Ok(ContextInfo {
        sequence,
        saved_handle,
        hierarchy,
        len: r.position(),
    })
}

fn header(w: &mut Writer<'_>, cc: u32) -> Result<(), Truncated> {
    w.u16(TPM_ST_NO_SESSIONS)?;
    w.u32(0)?; // patched by finish()
    w.u32(cc)
}

fn finish(mut w: Writer<'_>) -> Result<usize, Truncated> {
    let n = w.len();
    w.patch_u32(2, u32::try_from(n).map_err(|_| Truncated)?)?;
    Ok(n)
}

/// Writes TPM2_ContextLoad(`context`) into `buf`; returns the length.
///
/// # Errors
/// [`Truncated`] if it does not fit.
pub fn build_context_load(buf: &mut [u8], context: &[u8]) -> Result<usize, Truncated> {
    let mut w = Writer::new(buf);
    header(&mut w, TPM_CC_CONTEXT_LOAD)?;
    w.bytes(context)?;
    finish(w)
}

/// Writes TPM2_ContextSave(`handle`) into `buf`; returns the length.
///
/// # Errors
/// [`Truncated`] if it does not fit.
pub fn build_context_save(buf: &mut [u8], handle: u32) -> Result<usize, Truncated> {
    let mut w = Writer::new(buf);
    header(&mut w, TPM_CC_CONTEXT_SAVE)?;
    w.u32(handle)?;
    finish(w)
}

/// Writes TPM2_FlushContext(`handle`) into `buf`; returns the length.
///
/// # Errors
/// [`Truncated`] if it does not fit.
pub fn build_flush_context(buf: &mut [u8], handle: u32) -> Result<usize, Truncated> {
    let mut w = Writer::new(buf);
    header(&mut w, TPM_CC_FLUSH_CONTEXT)?;
    w.u32(handle)?;
    finish(w)
}

/// Writes the smallest TPM2_StartAuthSession into `buf`: an HMAC session, unsalted and
/// unbound (tpmKey and bind TPM_RH_NULL), nonceCaller `nonce` (at least 16 bytes for
/// SHA-256), no symmetric algorithm, SHA-256. Returns the length.
///
/// # Errors
/// [`Truncated`] if it does not fit.
pub fn build_hmac_session(buf: &mut [u8], nonce: &[u8]) -> Result<usize, Truncated> {
    let mut w = Writer::new(buf);
    header(&mut w, TPM_CC_START_AUTH_SESSION)?;
    w.u32(TPM_RH_NULL)?; // tpmKey
    w.u32(TPM_RH_NULL)?; // bind
    w.tpm2b(nonce)?; // nonceCaller
    w.tpm2b(&[])?; // encryptedSalt
    w.u8(TPM_SE_HMAC)?;
    w.u16(TPM_ALG_NULL)?; // symmetric: TPM_ALG_NULL has no keyBits nor mode
    w.u16(TPM_ALG_SHA256)?; // authHash
    finish(w)
}

/// The TPMS_CONTEXT in a successful TPM2_ContextSave response.
///
/// # Errors
/// [`Truncated`] if the response does not hold one exactly.
pub fn context_save_blob(rsp: &[u8]) -> Result<&[u8], Truncated> {
    let body = rsp.get(TPM_HEADER_SIZE..).ok_or(Truncated)?;
    let info = parse_context(body)?;
    if info.len != body.len() {
        return Err(Truncated);
    }
    Ok(body)
}

/// The loadedHandle of a successful TPM2_ContextLoad response.
///
/// # Errors
/// [`Truncated`] if it is missing.
pub fn context_load_handle(rsp: &[u8]) -> Result<u32, Truncated> {
    Reader::at(rsp, TPM_HEADER_SIZE).u32()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: [u8; 21] = [
        0, 0, 0, 0, 0, 0, 0, 7, 0x02, 0, 0, 1, 0x40, 0, 0, 7, 0, 3, 0xa, 0xb, 0xc,
    ];

    #[test]
    fn context_fields() {
        let i = parse_context(&CTX).unwrap();
        assert_eq!(i.sequence, 7);
        assert_eq!(i.saved_handle, 0x0200_0001);
        assert_eq!(i.hierarchy, 0x4000_0007);
        assert_eq!(i.len, 21);
        for n in 0..CTX.len() {
            assert_eq!(parse_context(&CTX[..n]), Err(Truncated));
        }
    }

    #[test]
    fn builders() {
        let mut b = [0u8; 64];
        assert_eq!(build_context_save(&mut b, 0x8000_0001), Ok(14));
        assert_eq!(
            &b[..14],
            &[0x80, 1, 0, 0, 0, 14, 0, 0, 1, 0x62, 0x80, 0, 0, 1]
        );
        assert_eq!(build_flush_context(&mut b, 0x0200_0000), Ok(14));
        assert_eq!(&b[6..10], &[0, 0, 1, 0x65]);
        assert_eq!(build_context_load(&mut b, &CTX), Ok(31));
        assert_eq!(&b[..10], &[0x80, 1, 0, 0, 0, 31, 0, 0, 1, 0x61]);
        assert_eq!(&b[10..31], &CTX);
        assert_eq!(build_context_load(&mut b[..30], &CTX), Err(Truncated));
        assert_eq!(build_hmac_session(&mut b, &[7; 16]), Ok(43));
        assert_eq!(&b[..10], &[0x80, 1, 0, 0, 0, 43, 0, 0, 1, 0x76]);
        assert_eq!(&b[10..20], &[0x40, 0, 0, 7, 0x40, 0, 0, 7, 0, 16]);
        assert_eq!(&b[20..36], &[7; 16]);
        assert_eq!(&b[36..43], &[0, 0, 0, 0, 0x10, 0, 0x0B]);
        assert_eq!(build_hmac_session(&mut b[..42], &[7; 16]), Err(Truncated));
    }

    #[test]
    fn responses() {
        let mut r = std::vec::Vec::from([0x80, 1, 0, 0, 0, 31, 0, 0, 0, 0]);
        r.extend_from_slice(&CTX);
        assert_eq!(context_save_blob(&r), Ok(&CTX[..]));
        r.push(0);
        assert_eq!(context_save_blob(&r), Err(Truncated));
        assert_eq!(context_save_blob(&r[..5]), Err(Truncated));
        assert_eq!(context_load_handle(&r), Ok(0));
        assert_eq!(context_load_handle(&r[..13]), Err(Truncated));
    }
}
