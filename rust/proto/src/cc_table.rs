// SPDX-License-Identifier: GPL-2.0
//! The TPM's command attribute table (TPMA_CC), read with
//! TPM2_GetCapability(TPM_CAP_COMMANDS).

use super::codec::{Reader, Truncated};
use super::constants::{TPM_CAP_COMMANDS, TPM_HEADER_SIZE, TPM_RC_SUCCESS};
use super::platform::{OutOfMemory, Vec};

/// TPMA_CC commandIndex (bits 15:0).
pub const TPMA_CC_COMMANDINDEX: u32 = 0x0000_FFFF;
/// TPMA_CC nv (bit 22).
#[cfg(not(tpmrs_kernel))]
pub const TPMA_CC_NV: u32 = 1 << 22;
/// TPMA_CC extensive (bit 23).
#[cfg(not(tpmrs_kernel))]
pub const TPMA_CC_EXTENSIVE: u32 = 1 << 23;
/// TPMA_CC flushed (bit 24).
pub const TPMA_CC_FLUSHED: u32 = 1 << 24;
/// TPMA_CC cHandles (bits 27:25).
pub const TPMA_CC_CHANDLES_SHIFT: u32 = 25;
/// TPMA_CC rHandle (bit 28).
pub const TPMA_CC_RHANDLE: u32 = 1 << 28;
/// TPMA_CC V (bit 29): vendor command. Also the vendor bit of a TPM_CC.
pub const TPMA_CC_V: u32 = 1 << 29;
/// Bits of a TPM_CC that may be set: commandIndex and V.
const TPM_CC_VALID_BITS: u32 = TPMA_CC_COMMANDINDEX | TPMA_CC_V;
/// How many TPMA_CC one GetCapability asks for.
const CAP_COMMANDS_COUNT: u32 = 256;

/// The attributes of one command (a TPMA_CC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcAttrs(pub u32);

impl CcAttrs {
    /// The TPM_CC this entry describes.
    pub fn command_code(self) -> u32 {
        self.0 & TPM_CC_VALID_BITS
    }
    /// Number of handles in the command's handle area (cHandles).
    pub fn c_handles(self) -> usize {
        // Three bits: at most 7.
        ((self.0 >> TPMA_CC_CHANDLES_SHIFT) & 0x7) as usize
    }
    /// Whether the response has a handle (rHandle).
    pub fn r_handle(self) -> bool {
        self.0 & TPMA_CC_RHANDLE != 0
    }
    /// Whether a successful command flushes the object in handle 1 (flushed).
    pub fn flushed(self) -> bool {
        self.0 & TPMA_CC_FLUSHED != 0
    }
    /// Whether this is a vendor command (V).
    #[cfg(not(tpmrs_kernel))]
    pub fn vendor(self) -> bool {
        self.0 & TPMA_CC_V != 0
    }
}

/// Why a TPM_CAP_COMMANDS response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcTableError {
    /// The response is malformed or not a TPM_CAP_COMMANDS answer.
    BadResponse,
    /// The TPM answered with this error code.
    Tpm(u32),
    /// The table could not grow.
    OutOfMemory,
}

impl From<Truncated> for CcTableError {
    fn from(_: Truncated) -> Self {
        CcTableError::BadResponse
    }
}

impl From<OutOfMemory> for CcTableError {
    fn from(_: OutOfMemory) -> Self {
        CcTableError::OutOfMemory
    }
}

/// The commands the TPM implements, with their attributes.
#[derive(Default)]
pub struct CcTable {
    attrs: Vec<u32>,
}

impl CcTable {
    /// An empty table.
    pub const fn new() -> Self {
        CcTable { attrs: Vec::new() }
    }

    /// Number of commands.
    #[cfg(not(tpmrs_kernel))]
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Whether the table is empty (not read yet).
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.attrs.clear();
    }

    /// Adds one TPMA_CC.
    ///
    /// # Errors
    /// [`OutOfMemory`] if the table cannot grow.
    pub fn push(&mut self, attrs: u32) -> Result<(), OutOfMemory> {
        self.attrs.try_push(attrs)
    }

    /// The attributes of command code `cc`, matching commandIndex and the vendor bit V.
    /// `None` if the TPM does not implement it (or `cc` has reserved bits set).
    pub fn lookup(&self, cc: u32) -> Option<CcAttrs> {
        if cc & !TPM_CC_VALID_BITS != 0 {
            return None;
        }
        self.attrs
            .iter()
            .map(|a| CcAttrs(*a))
            .find(|a| a.command_code() == cc)
    }

    /// Writes TPM2_GetCapability(TPM_CAP_COMMANDS, `property`, 256) into `buf`; returns its
    /// length.
    ///
    /// # Errors
    /// [`Truncated`] if `buf` is too small (22 bytes are needed).
    pub fn build_request(buf: &mut [u8], property: u32) -> Result<usize, Truncated> {
        super::capability::build_request(buf, TPM_CAP_COMMANDS, property, CAP_COMMANDS_COUNT)
    }

    /// Appends the TPMA_CC list of one TPM_CAP_COMMANDS response. Returns the property to ask
    /// for next if the TPM reported moreData, `None` when the list is complete.
    ///
    /// # Errors
    /// [`CcTableError`] if the response is an error, malformed, or makes no progress.
    pub fn add_from_response(&mut self, rsp: &[u8]) -> Result<Option<u32>, CcTableError> {
        let mut r = Reader::new(rsp);
        let _tag = r.u16()?;
        let size = r.u32()?;
        let rc = r.u32()?;
        if usize::try_from(size).ok() != Some(rsp.len()) || rsp.len() < TPM_HEADER_SIZE {
            return Err(CcTableError::BadResponse);
        }
        if rc != TPM_RC_SUCCESS {
            return Err(CcTableError::Tpm(rc));
        }
        let more = r.u8()?;
        if r.u32()? != TPM_CAP_COMMANDS {
            return Err(CcTableError::BadResponse);
        }
        let count = r.u32()?;
        let mut last = None;
        for _ in 0..count {
            let a = r.u32()?;
            self.push(a)?;
            last = Some(CcAttrs(a));
        }
        if r.remaining() != 0 {
            return Err(CcTableError::BadResponse);
        }
        if more == 0 {
            return Ok(None);
        }
        // moreData: continue after the last command listed.
        let last = last.ok_or(CcTableError::BadResponse)?;
        let next = last
            .command_code()
            .checked_add(1)
            .ok_or(CcTableError::BadResponse)?;
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(cc: u32, handles: u32, rhandle: bool, flushed: bool) -> u32 {
        cc | (handles << TPMA_CC_CHANDLES_SHIFT)
            | if rhandle { TPMA_CC_RHANDLE } else { 0 }
            | if flushed { TPMA_CC_FLUSHED } else { 0 }
    }

    fn response(more: u8, cap: u32, list: &[u32]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::new();
        v.extend_from_slice(&0x8001u16.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.push(more);
        v.extend_from_slice(&cap.to_be_bytes());
        v.extend_from_slice(&(list.len() as u32).to_be_bytes());
        for a in list {
            v.extend_from_slice(&a.to_be_bytes());
        }
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
        v
    }

    #[test]
    fn lookup_matches_index_and_vendor_bit() {
        let mut t = CcTable::new();
        assert!(t.is_empty());
        t.push(attrs(0x13E, 2, false, true)).unwrap();
        t.push(attrs(0x17A, 0, false, false)).unwrap();
        t.push(attrs(0x17A, 1, true, false) | TPMA_CC_V).unwrap();
        assert_eq!(t.len(), 3);
        let a = t.lookup(0x13E).unwrap();
        assert_eq!(a.c_handles(), 2);
        assert!(a.flushed());
        assert!(!a.r_handle());
        assert!(!a.vendor());
        assert_eq!(t.lookup(0x17A).unwrap().c_handles(), 0);
        let v = t.lookup(0x2000_017A).unwrap();
        assert!(v.vendor());
        assert!(v.r_handle());
        assert_eq!(v.c_handles(), 1);
        assert_eq!(t.lookup(0x17B), None);
        assert_eq!(t.lookup(0x0001_017A), None);
        assert_eq!(t.lookup(0x8000_017A), None);
        assert_eq!(t.lookup(0x2000_013E), None);
        t.clear();
        assert_eq!(t.lookup(0x13E), None);
    }

    #[test]
    fn request_layout() {
        let mut b = [0u8; 22];
        assert_eq!(CcTable::build_request(&mut b, 0x11F), Ok(22));
        assert_eq!(
            b,
            [0x80, 1, 0, 0, 0, 22, 0, 0, 1, 0x7A, 0, 0, 0, 2, 0, 0, 1, 0x1F, 0, 0, 1, 0]
        );
        assert_eq!(CcTable::build_request(&mut [0u8; 21], 0), Err(Truncated));
    }

    #[test]
    fn parses_with_more_data() {
        let mut t = CcTable::new();
        let r1 = response(
            1,
            TPM_CAP_COMMANDS,
            &[attrs(0x11F, 1, false, false), attrs(0x120, 2, false, false)],
        );
        assert_eq!(t.add_from_response(&r1), Ok(Some(0x121)));
        let r2 = response(0, TPM_CAP_COMMANDS, &[attrs(0x121, 0, true, false)]);
        assert_eq!(t.add_from_response(&r2), Ok(None));
        assert_eq!(t.len(), 3);
        assert!(t.lookup(0x121).unwrap().r_handle());
        // Vendor continuation keeps the V bit.
        let r3 = response(
            1,
            TPM_CAP_COMMANDS,
            &[attrs(0x5, 0, false, false) | TPMA_CC_V],
        );
        assert_eq!(t.add_from_response(&r3), Ok(Some(0x2000_0006)));
    }

    #[test]
    fn rejects_malformed_responses() {
        let mut t = CcTable::new();
        let good = response(0, TPM_CAP_COMMANDS, &[attrs(0x11F, 1, false, false)]);
        // Every truncation.
        for n in 0..good.len() {
            let mut r = good[..n].to_vec();
            if r.len() >= 6 {
                let l = r.len() as u32;
                r[2..6].copy_from_slice(&l.to_be_bytes());
            }
            assert!(t.add_from_response(&r).is_err(), "len {n}");
        }
        // Size field wrong.
        let mut bad = good.clone();
        bad[5] ^= 1;
        assert_eq!(t.add_from_response(&bad), Err(CcTableError::BadResponse));
        // Trailing garbage.
        let mut bad = good.clone();
        bad.push(0);
        let l = bad.len() as u32;
        bad[2..6].copy_from_slice(&l.to_be_bytes());
        assert_eq!(t.add_from_response(&bad), Err(CcTableError::BadResponse));
        // Wrong capability.
        let bad = response(0, 1, &[1]);
        assert_eq!(t.add_from_response(&bad), Err(CcTableError::BadResponse));
        // moreData without entries: no progress.
        let bad = response(1, TPM_CAP_COMMANDS, &[]);
        assert_eq!(t.add_from_response(&bad), Err(CcTableError::BadResponse));
        // Huge count.
        let mut bad = response(0, TPM_CAP_COMMANDS, &[]);
        bad[15..19].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(t.add_from_response(&bad), Err(CcTableError::BadResponse));
        // A TPM error.
        let mut e = std::vec::Vec::from([0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x01]);
        assert_eq!(t.add_from_response(&e), Err(CcTableError::Tpm(0x101)));
        e.truncate(9);
        assert!(t.add_from_response(&e).is_err());
    }
}
