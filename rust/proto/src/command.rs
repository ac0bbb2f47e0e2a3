// SPDX-License-Identifier: GPL-2.0
//! Parsing of a client command: header, handle area and authorization area.
//!
//! Only the framing is checked here; the parameters are left to the TPM, apart from the few
//! the resource manager must see (read by the pipeline through [`Command::params_offset`]).

use super::cc_table::CcAttrs;
use super::codec::Reader;
use super::constants::{
    MAX_SESSIONS_PER_COMMAND, TPM_HEADER_SIZE, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS,
};

/// Most handles a handle area can hold (cHandles is three bits).
pub const MAX_HANDLES: usize = 7;

/// Why a command is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Shorter than the 10-byte header.
    TooShort,
    /// The header's commandSize is not the number of bytes written.
    SizeMismatch,
    /// The tag is neither TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS.
    BadTag,
    /// The handle area (cHandles handles) does not fit.
    HandleAreaTruncated,
    /// TPM_ST_SESSIONS without a complete authorizationSize.
    AuthSizeTruncated,
    /// authorizationSize runs past the end of the command.
    AuthSizeOverflow,
    /// A session entry runs past authorizationSize.
    SessionOverrun,
    /// More than three sessions.
    TooManySessions,
    /// TPM_ST_SESSIONS with an empty authorization area.
    NoSessions,
}

/// The command header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHeader {
    /// TPMI_ST_COMMAND_TAG.
    pub tag: u16,
    /// commandSize.
    pub size: u32,
    /// commandCode.
    pub cc: u32,
}

impl CommandHeader {
    /// Reads the header of `cmd` and checks that commandSize is `cmd.len()`.
    ///
    /// # Errors
    /// [`FramingError::TooShort`] or [`FramingError::SizeMismatch`].
    pub fn parse(cmd: &[u8]) -> Result<Self, FramingError> {
        let mut r = Reader::new(cmd);
        let tag = r.u16().map_err(|_| FramingError::TooShort)?;
        let size = r.u32().map_err(|_| FramingError::TooShort)?;
        let cc = r.u32().map_err(|_| FramingError::TooShort)?;
        if usize::try_from(size).ok() != Some(cmd.len()) {
            return Err(FramingError::SizeMismatch);
        }
        Ok(CommandHeader { tag, size, cc })
    }
}

/// One entry of the authorization area (TPMS_AUTH_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthSession {
    /// sessionHandle.
    pub handle: u32,
    /// sessionAttributes (TPMA_SESSION).
    pub attributes: u8,
    /// Offset of sessionHandle in the command.
    pub offset: usize,
}

/// A command whose framing is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// The header.
    pub header: CommandHeader,
    /// The command's TPMA_CC.
    pub attrs: CcAttrs,
    handles: [u32; MAX_HANDLES],
    n_handles: usize,
    sessions: [AuthSession; MAX_SESSIONS_PER_COMMAND],
    n_sessions: usize,
    params_offset: usize,
}

impl Command {
    /// Parses `cmd`, whose command code has attributes `attrs`.
    ///
    /// # Errors
    /// A [`FramingError`] saying what is malformed.
    pub fn parse(cmd: &[u8], attrs: CcAttrs) -> Result<Self, FramingError> {
        let header = CommandHeader::parse(cmd)?;
        if header.tag != TPM_ST_NO_SESSIONS && header.tag != TPM_ST_SESSIONS {
            return Err(FramingError::BadTag);
        }
        let mut r = Reader::at(cmd, TPM_HEADER_SIZE);
        let mut handles = [0u32; MAX_HANDLES];
        let n_handles = attrs.c_handles();
        for h in handles.iter_mut().take(n_handles) {
            *h = r.u32().map_err(|_| FramingError::HandleAreaTruncated)?;
        }
        let mut sessions = [AuthSession::default(); MAX_SESSIONS_PER_COMMAND];
        let mut n_sessions = 0;
        if header.tag == TPM_ST_SESSIONS {
            let auth_size = r.u32().map_err(|_| FramingError::AuthSizeTruncated)?;
            let auth_size =
                usize::try_from(auth_size).map_err(|_| FramingError::AuthSizeOverflow)?;
            let area_at = r.position();
            let area = r
                .bytes(auth_size)
                .map_err(|_| FramingError::AuthSizeOverflow)?;
            let mut a = Reader::new(area);
            while a.remaining() > 0 {
                let slot = sessions
                    .get_mut(n_sessions)
                    .ok_or(FramingError::TooManySessions)?;
                let offset = area_at.saturating_add(a.position());
                let handle = a.u32().map_err(|_| FramingError::SessionOverrun)?;
                a.tpm2b().map_err(|_| FramingError::SessionOverrun)?; // nonceCaller
                let attributes = a.u8().map_err(|_| FramingError::SessionOverrun)?;
                a.tpm2b().map_err(|_| FramingError::SessionOverrun)?; // hmac
                *slot = AuthSession {
                    handle,
                    attributes,
                    offset,
                };
                // PANIC: n_sessions indexed a slot above, so it is < 3.
                n_sessions += 1;
            }
            if n_sessions == 0 {
                return Err(FramingError::NoSessions);
            }
        }
        Ok(Command {
            header,
            attrs,
            handles,
            n_handles,
            sessions,
            n_sessions,
            params_offset: r.position(),
        })
    }

    /// The command code.
    pub fn cc(&self) -> u32 {
        self.header.cc
    }

    /// The handle area.
    pub fn handles(&self) -> &[u32] {
        self.handles.get(..self.n_handles).unwrap_or(&[])
    }

    /// The authorization sessions.
    pub fn sessions(&self) -> &[AuthSession] {
        self.sessions.get(..self.n_sessions).unwrap_or(&[])
    }

    /// Offset in the command of handle `i` (0-based) of the handle area.
    pub fn handle_offset(i: usize) -> usize {
        // i < MAX_HANDLES: no overflow.
        TPM_HEADER_SIZE.saturating_add(i.saturating_mul(4))
    }

    /// Offset of the parameter area.
    pub fn params_offset(&self) -> usize {
        self.params_offset
    }
}

#[cfg(test)]
mod tests {
    use super::super::cc_table::TPMA_CC_CHANDLES_SHIFT;
    use super::*;

    fn attrs(handles: u32) -> CcAttrs {
        CcAttrs(0x15D | (handles << TPMA_CC_CHANDLES_SHIFT))
    }

    fn finish(mut v: std::vec::Vec<u8>) -> std::vec::Vec<u8> {
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
        v
    }

    fn cmd(tag: u16, handles: &[u32], auth: Option<&[u8]>, params: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::new();
        v.extend_from_slice(&tag.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&0x15Du32.to_be_bytes());
        for h in handles {
            v.extend_from_slice(&h.to_be_bytes());
        }
        if let Some(a) = auth {
            v.extend_from_slice(&(a.len() as u32).to_be_bytes());
            v.extend_from_slice(a);
        }
        v.extend_from_slice(params);
        finish(v)
    }

    fn session(handle: u32, nonce: &[u8], attrs: u8, hmac: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::new();
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
        v.extend_from_slice(nonce);
        v.push(attrs);
        v.extend_from_slice(&(hmac.len() as u16).to_be_bytes());
        v.extend_from_slice(hmac);
        v
    }

    #[test]
    fn header() {
        assert_eq!(CommandHeader::parse(&[]), Err(FramingError::TooShort));
        assert_eq!(
            CommandHeader::parse(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1]),
            Err(FramingError::TooShort)
        );
        assert_eq!(
            CommandHeader::parse(&[0x80, 1, 0, 0, 0, 11, 0, 0, 1, 0x7b]),
            Err(FramingError::SizeMismatch)
        );
        assert_eq!(
            CommandHeader::parse(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x7b, 0]),
            Err(FramingError::SizeMismatch)
        );
        assert_eq!(
            CommandHeader::parse(&[0x80, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0x7b]),
            Err(FramingError::SizeMismatch)
        );
        let h = CommandHeader::parse(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x7b]).unwrap();
        assert_eq!(
            h,
            CommandHeader {
                tag: 0x8001,
                size: 10,
                cc: 0x17b
            }
        );
    }

    #[test]
    fn no_sessions() {
        let c = cmd(0x8001, &[0x8000_0001, 0x4000_0001], None, &[1, 2]);
        let p = Command::parse(&c, attrs(2)).unwrap();
        assert_eq!(p.handles(), &[0x8000_0001, 0x4000_0001]);
        assert!(p.sessions().is_empty());
        assert_eq!(p.params_offset(), 18);
        assert_eq!(p.cc(), 0x15D);
        assert_eq!(Command::handle_offset(1), 14);
    }

    #[test]
    fn bad_tags() {
        for tag in [0u16, 0x00C1, 0x8003, 0xffff, 0x8000] {
            let c = cmd(tag, &[], None, &[]);
            assert_eq!(Command::parse(&c, attrs(0)), Err(FramingError::BadTag));
        }
    }

    #[test]
    fn handle_area_truncated() {
        let c = cmd(0x8001, &[0x8000_0001], None, &[1, 2]);
        assert_eq!(
            Command::parse(&c, attrs(2)),
            Err(FramingError::HandleAreaTruncated)
        );
        assert_eq!(
            Command::parse(&c, attrs(7)),
            Err(FramingError::HandleAreaTruncated)
        );
        assert!(Command::parse(&c, attrs(1)).is_ok());
    }

    #[test]
    fn sessions() {
        let mut a = session(0x0200_0000, &[1; 16], 1, &[2; 32]);
        a.extend(session(0x4000_0009, &[], 0, &[]));
        a.extend(session(0x0300_0001, &[3; 32], 0x21, &[]));
        let c = cmd(0x8002, &[0x8000_0000], Some(&a), &[9, 9, 9]);
        let p = Command::parse(&c, attrs(1)).unwrap();
        assert_eq!(
            p.sessions(),
            &[
                AuthSession {
                    handle: 0x0200_0000,
                    attributes: 1,
                    offset: 18
                },
                AuthSession {
                    handle: 0x4000_0009,
                    attributes: 0,
                    offset: 75
                },
                AuthSession {
                    handle: 0x0300_0001,
                    attributes: 0x21,
                    offset: 84
                }
            ]
        );
        assert_eq!(p.params_offset(), c.len() - 3);
        for s in p.sessions() {
            assert_eq!(c[s.offset..s.offset + 4], s.handle.to_be_bytes());
        }
    }

    #[test]
    fn too_many_sessions() {
        let mut a = std::vec::Vec::new();
        for _ in 0..4 {
            a.extend(session(0x4000_0009, &[], 0, &[]));
        }
        let c = cmd(0x8002, &[], Some(&a), &[]);
        assert_eq!(
            Command::parse(&c, attrs(0)),
            Err(FramingError::TooManySessions)
        );
    }

    #[test]
    fn malformed_auth_area() {
        // No authorizationSize at all.
        let c = cmd(0x8002, &[1], None, &[]);
        assert_eq!(
            Command::parse(&c, attrs(1)),
            Err(FramingError::AuthSizeTruncated)
        );
        let c = cmd(0x8002, &[1], None, &[0, 0, 0]);
        assert_eq!(
            Command::parse(&c, attrs(1)),
            Err(FramingError::AuthSizeTruncated)
        );
        // Empty area.
        let c = cmd(0x8002, &[], Some(&[]), &[]);
        assert_eq!(Command::parse(&c, attrs(0)), Err(FramingError::NoSessions));
        // authorizationSize past the end.
        let s = session(0x4000_0009, &[], 0, &[]);
        let mut c = cmd(0x8002, &[], Some(&s), &[]);
        c[13] += 1;
        assert_eq!(
            Command::parse(&c, attrs(0)),
            Err(FramingError::AuthSizeOverflow)
        );
        c[10] = 0xff;
        assert_eq!(
            Command::parse(&c, attrs(0)),
            Err(FramingError::AuthSizeOverflow)
        );
        // An entry overrunning the area, every cut.
        for cut in 1..s.len() {
            let mut area = s.clone();
            area.truncate(cut);
            let c = cmd(0x8002, &[], Some(&area), &[0; 16]);
            assert_eq!(
                Command::parse(&c, attrs(0)),
                Err(FramingError::SessionOverrun),
                "cut {cut}"
            );
        }
        // A nonce claiming more than the area.
        let bad = session(0x0200_0000, &[1; 4], 1, &[]);
        let mut area = bad.clone();
        area[5] = 40;
        let c = cmd(0x8002, &[], Some(&area), &[0; 64]);
        assert_eq!(
            Command::parse(&c, attrs(0)),
            Err(FramingError::SessionOverrun)
        );
    }

    #[test]
    fn fuzz_never_panics() {
        // Cheap deterministic fuzzing of every prefix and byte flip of a valid command.
        let mut a = session(0x0200_0000, &[1; 16], 1, &[2; 32]);
        a.extend(session(0x4000_0009, &[], 0, &[]));
        let c = cmd(0x8002, &[0x8000_0000, 0x8000_0001], Some(&a), &[9, 9, 9]);
        for n in 0..c.len() {
            let _ = Command::parse(&c[..n], attrs(2));
        }
        for i in 0..c.len() {
            for bit in 0..8 {
                let mut m = c.clone();
                m[i] ^= 1 << bit;
                for h in 0..8 {
                    let _ = Command::parse(&m, attrs(h));
                }
            }
        }
    }
}
