// SPDX-License-Identifier: GPL-2.0
//! Bounds-checked big-endian reading and writing of TPM 2.0 marshaled data.
//!
//! Nothing here can panic: every access is checked and reports [`Truncated`] instead.

/// The data ended before the value being read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// Reads big-endian values from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// A reader at offset `pos` of `buf` (reads fail if `pos` is past the end).
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes.
    ///
    /// # Errors
    /// [`Truncated`] if fewer than `n` bytes are left.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Skips `n` bytes.
    ///
    /// # Errors
    /// [`Truncated`] if fewer than `n` bytes are left.
    #[cfg(not(tpmrs_kernel))]
    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.bytes(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a `u8`.
    ///
    /// # Errors
    /// [`Truncated`] at the end of the data.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u16`.
    ///
    /// # Errors
    /// [`Truncated`] if fewer than 2 bytes are left.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    /// [`Truncated`] if fewer than 4 bytes are left.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    ///
    /// # Errors
    /// [`Truncated`] if fewer than 8 bytes are left.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a TPM2B: a `u16` size followed by that many bytes; returns the bytes.
    ///
    /// # Errors
    /// [`Truncated`] if the size or the bytes run past the end.
    pub fn tpm2b(&mut self) -> Result<&'a [u8], Truncated> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }
}

/// Writes big-endian values into a byte slice.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written yet.
    #[cfg(not(tpmrs_kernel))]
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Appends `s`.
    ///
    /// # Errors
    /// [`Truncated`] if `s` does not fit (nothing is written then).
    pub fn bytes(&mut self, s: &[u8]) -> Result<(), Truncated> {
        let end = self.pos.checked_add(s.len()).ok_or(Truncated)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Truncated)?
            .copy_from_slice(s);
        self.pos = end;
        Ok(())
    }

    /// Appends a `u8`.
    ///
    /// # Errors
    /// [`Truncated`] if the buffer is full.
    pub fn u8(&mut self, v: u8) -> Result<(), Truncated> {
        self.bytes(&[v])
    }

    /// Appends a big-endian `u16`.
    ///
    /// # Errors
    /// [`Truncated`] if it does not fit.
    pub fn u16(&mut self, v: u16) -> Result<(), Truncated> {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian `u32`.
    ///
    /// # Errors
    /// [`Truncated`] if it does not fit.
    pub fn u32(&mut self, v: u32) -> Result<(), Truncated> {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a TPM2B (`u16` size, then `s`).
    ///
    /// # Errors
    /// [`Truncated`] if it does not fit or `s` is longer than `u16::MAX` (nothing is written
    /// then).
    pub fn tpm2b(&mut self, s: &[u8]) -> Result<(), Truncated> {
        let n = u16::try_from(s.len()).map_err(|_| Truncated)?;
        let room = self.buf.len().saturating_sub(self.pos);
        if room < s.len().saturating_add(2) {
            return Err(Truncated);
        }
        self.u16(n)?;
        self.bytes(s)
    }

    /// Overwrites the big-endian `u32` at `offset` (already written or not).
    ///
    /// # Errors
    /// [`Truncated`] if `offset..offset + 4` is outside the buffer.
    pub fn patch_u32(&mut self, offset: usize, v: u32) -> Result<(), Truncated> {
        put_u32(self.buf, offset, v)
    }
}

/// The big-endian `u16` at `offset`, if `buf` holds it.
#[cfg(not(tpmrs_kernel))]
pub fn get_u16(buf: &[u8], offset: usize) -> Option<u16> {
    Reader::at(buf, offset).u16().ok()
}

/// The big-endian `u32` at `offset`, if `buf` holds it.
pub fn get_u32(buf: &[u8], offset: usize) -> Option<u32> {
    Reader::at(buf, offset).u32().ok()
}

/// Stores `v` big-endian at `offset`.
///
/// # Errors
/// [`Truncated`] if `offset..offset + 4` is outside `buf`.
pub fn put_u32(buf: &mut [u8], offset: usize, v: u32) -> Result<(), Truncated> {
    let end = offset.checked_add(4).ok_or(Truncated)?;
    buf.get_mut(offset..end)
        .ok_or(Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut r = Reader::new(&b);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.u8(), Err(Truncated));
    }

    #[test]
    fn reader_truncation_never_panics() {
        let b = [0u8; 3];
        assert_eq!(Reader::new(&b).u32(), Err(Truncated));
        assert_eq!(Reader::new(&b).u64(), Err(Truncated));
        assert_eq!(Reader::at(&b, 2).u16(), Err(Truncated));
        assert_eq!(Reader::at(&b, 100).u8(), Err(Truncated));
        assert_eq!(Reader::at(&b, usize::MAX).bytes(2), Err(Truncated));
        assert_eq!(Reader::at(&b, 100).remaining(), 0);
        assert_eq!(Reader::new(&b).bytes(usize::MAX), Err(Truncated));
        // A failed read does not move the reader.
        let mut r = Reader::new(&b);
        assert!(r.u32().is_err());
        assert_eq!(r.position(), 0);
    }

    #[test]
    fn tpm2b_checks_its_size() {
        assert_eq!(Reader::new(&[0, 2, 9, 8]).tpm2b(), Ok(&[9u8, 8][..]));
        assert_eq!(Reader::new(&[0, 3, 9, 8]).tpm2b(), Err(Truncated));
        assert_eq!(Reader::new(&[0xff, 0xff]).tpm2b(), Err(Truncated));
        assert_eq!(Reader::new(&[0]).tpm2b(), Err(Truncated));
        assert_eq!(Reader::new(&[0, 0]).tpm2b(), Ok(&[][..]));
    }

    #[test]
    fn writer_checks_room() {
        let mut b = [0u8; 7];
        let mut w = Writer::new(&mut b);
        assert!(w.is_empty());
        assert_eq!(w.u16(0x0102), Ok(()));
        assert_eq!(w.u32(0x0304_0506), Ok(()));
        assert_eq!(w.u16(1), Err(Truncated));
        assert_eq!(w.u8(7), Ok(()));
        assert_eq!(w.u8(8), Err(Truncated));
        assert_eq!(w.len(), 7);
        assert_eq!(w.patch_u32(3, 0xaabb_ccdd), Ok(()));
        assert_eq!(w.patch_u32(4, 0), Err(Truncated));
        assert_eq!(b, [1, 2, 3, 0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn writer_tpm2b() {
        let mut b = [0u8; 4];
        let mut w = Writer::new(&mut b);
        assert_eq!(w.tpm2b(&[5, 6, 7]), Err(Truncated));
        assert_eq!(w.tpm2b(&[5, 6]), Ok(()));
        assert_eq!(b, [0, 2, 5, 6]);
    }

    #[test]
    fn free_helpers() {
        let mut b = [0u8; 6];
        assert_eq!(put_u32(&mut b, 2, 0x1122_3344), Ok(()));
        assert_eq!(put_u32(&mut b, 3, 0), Err(Truncated));
        assert_eq!(put_u32(&mut b, usize::MAX - 1, 0), Err(Truncated));
        assert_eq!(get_u32(&b, 2), Some(0x1122_3344));
        assert_eq!(get_u32(&b, 3), None);
        assert_eq!(get_u16(&b, 4), Some(0x3344));
        assert_eq!(get_u16(&b, 5), None);
    }
}
