// SPDX-License-Identifier: GPL-2.0
//! TPM2_GetCapability(TPM_CAP_HANDLES) as a space sees it: transient handles synthesized from
//! the space's own virtual handles, other lists filtered.

use super::codec::{get_u32, put_u32, Reader, Truncated, Writer};
use super::constants::{
    TPM_CAP_HANDLES, TPM_CC_GET_CAPABILITY, TPM_RC_SUCCESS, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS,
};

/// Most handles one TPML_HANDLE holds (MAX_CAP_HANDLES for a 1024-byte MAX_CAP_BUFFER).
pub const MAX_CAP_HANDLES: u32 = 254;

/// The parameters of a TPM2_GetCapability command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityRequest {
    /// capability.
    pub capability: u32,
    /// property.
    pub property: u32,
    /// propertyCount.
    pub property_count: u32,
}

impl CapabilityRequest {
    /// Reads the parameters at `params_offset` of `cmd`.
    ///
    /// # Errors
    /// [`Truncated`] if they are incomplete.
    pub fn parse(cmd: &[u8], params_offset: usize) -> Result<Self, Truncated> {
        let mut r = Reader::at(cmd, params_offset);
        Ok(CapabilityRequest {
            capability: r.u32()?,
            property: r.u32()?,
            property_count: r.u32()?,
        })
    }
}

/// Writes a TPM_CAP_HANDLES response listing, in ascending order, the handles of `handles`
/// that are >= `property`, at most `property_count` (and [`MAX_CAP_HANDLES`]) of them, with
/// moreData set if more remain. `handles` need not be sorted and must not repeat.
///
/// # Errors
/// [`Truncated`] if `rsp` is too small.
pub fn write_handles_response(
    rsp: &mut [u8],
    handles: &[u32],
    property: u32,
    property_count: u32,
) -> Result<usize, Truncated> {
    let limit = property_count.min(MAX_CAP_HANDLES);
    let eligible = handles.iter().filter(|h| **h >= property).count();
    let listed = usize::try_from(limit).map_or(eligible, |l| l.min(eligible));
    let mut w = Writer::new(rsp);
    w.u16(TPM_ST_NO_SESSIONS)?;
    w.u32(0)?; // size, patched below
    w.u32(TPM_RC_SUCCESS)?;
    w.u8(u8::from(listed < eligible))?;
    w.u32(TPM_CAP_HANDLES)?;
    w.u32(u32::try_from(listed).map_err(|_| Truncated)?)?;
    // Selection by repeated minimum: tables are small.
    let mut floor = property;
    let mut first = true;
    for _ in 0..listed {
        let next = handles
            .iter()
            .copied()
            .filter(|h| if first { *h >= floor } else { *h > floor })
            .min();
        let Some(h) = next else { break };
        w.u32(h)?;
        floor = h;
        first = false;
    }
    let n = w.len();
    w.patch_u32(2, u32::try_from(n).map_err(|_| Truncated)?)?;
    Ok(n)
}

/// What [`filter_handles_response`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filtered {
    /// The new length of the response.
    pub len: usize,
    /// Handles kept in the list.
    pub kept: u32,
    /// The TPM's moreData: more handles follow the last one it listed.
    pub more_data: bool,
    /// A handle to keep was left out because `limit` were kept already.
    pub truncated: bool,
    /// The last handle the TPM listed (kept or not).
    pub last: Option<u32>,
}

impl Filtered {
    fn unchanged(len: usize) -> Self {
        Filtered {
            len,
            kept: 0,
            more_data: false,
            truncated: false,
            last: None,
        }
    }
}

/// Rewrites, in place, the successful TPM_CAP_HANDLES response of `len` bytes in `rsp` so that
/// it lists, for each handle `h` it held, `map(h)` if that is `Some` (the handle as the
/// client knows it) and nothing otherwise, at most `limit` of them. moreData is set if the
/// TPM set it or a handle was left out for `limit`. Other responses are left alone (and
/// reported with `more_data` false).
///
/// # Errors
/// [`Truncated`] if the response is malformed.
pub fn filter_handles_response(
    rsp: &mut [u8],
    len: usize,
    limit: u32,
    map: impl Fn(u32) -> Option<u32>,
) -> Result<Filtered, Truncated> {
    let r = rsp.get(..len).ok_or(Truncated)?;
    let mut rd = Reader::new(r);
    let tag = rd.u16()?;
    let _size = rd.u32()?;
    if rd.u32()? != TPM_RC_SUCCESS {
        return Ok(Filtered::unchanged(len));
    }
    // With sessions, parameterSize precedes the parameters and an auth area follows them.
    let param_size_at = if tag == TPM_ST_SESSIONS {
        let at = rd.position();
        rd.u32()?;
        Some(at)
    } else if tag == TPM_ST_NO_SESSIONS {
        None
    } else {
        return Err(Truncated);
    };
    let params_start = rd.position();
    let more_data = rd.u8()? != 0;
    if rd.u32()? != TPM_CAP_HANDLES {
        return Ok(Filtered::unchanged(len));
    }
    let count_at = rd.position();
    let count = rd.u32()?;
    let list_at = rd.position();
    let mut kept: u32 = 0;
    let mut out = list_at;
    let mut pos = list_at;
    let mut last = None;
    let mut truncated = false;
    for _ in 0..count {
        let h = get_u32(rsp, pos).ok_or(Truncated)?;
        last = Some(h);
        pos = pos.checked_add(4).ok_or(Truncated)?;
        if pos > len {
            return Err(Truncated);
        }
        match map(h) {
            Some(h) if kept < limit => {
                put_u32(rsp, out, h)?;
                out = out.checked_add(4).ok_or(Truncated)?;
                kept = kept.saturating_add(1);
            }
            Some(_) => truncated = true,
            None => {}
        }
    }
    if param_size_at.is_none() && pos != len {
        return Err(Truncated);
    }
    // Move whatever follows the list (the auth area of a TPM_ST_SESSIONS response).
    let removed = pos.checked_sub(out).ok_or(Truncated)?;
    let mut src = pos;
    while src < len {
        let b = *rsp.get(src).ok_or(Truncated)?;
        *rsp.get_mut(src.checked_sub(removed).ok_or(Truncated)?)
            .ok_or(Truncated)? = b;
        src = src.checked_add(1).ok_or(Truncated)?;
    }
    let new_len = len.checked_sub(removed).ok_or(Truncated)?;
    *rsp.get_mut(params_start).ok_or(Truncated)? = u8::from(more_data || truncated);
    put_u32(rsp, count_at, kept)?;
    if let Some(at) = param_size_at {
        let params_len = out.checked_sub(params_start).ok_or(Truncated)?;
        put_u32(rsp, at, u32::try_from(params_len).map_err(|_| Truncated)?)?;
    }
    put_u32(rsp, 2, u32::try_from(new_len).map_err(|_| Truncated)?)?;
    Ok(Filtered {
        len: new_len,
        kept,
        more_data,
        truncated,
        last,
    })
}

/// Writes TPM2_GetCapability(`capability`, `property`, `count`), without sessions, into
/// `cmd`; returns its length (22).
///
/// # Errors
/// [`Truncated`] if `cmd` is too small.
pub fn build_request(
    cmd: &mut [u8],
    capability: u32,
    property: u32,
    count: u32,
) -> Result<usize, Truncated> {
    let mut w = Writer::new(cmd);
    w.u16(TPM_ST_NO_SESSIONS)?;
    w.u32(22)?;
    w.u32(TPM_CC_GET_CAPABILITY)?;
    w.u32(capability)?;
    w.u32(property)?;
    w.u32(count)?;
    Ok(w.len())
}

/// Writes TPM2_GetCapability(TPM_CAP_HANDLES, `property`, 1) into `cmd`: is `property`, or
/// the next handle of its type, there? Returns the command's length.
///
/// # Errors
/// [`Truncated`] if `cmd` is too small.
pub fn build_handle_query(cmd: &mut [u8], property: u32) -> Result<usize, Truncated> {
    build_request(cmd, TPM_CAP_HANDLES, property, 1)
}

/// The first handle a successful TPM_CAP_HANDLES response lists, if any.
///
/// # Errors
/// [`Truncated`] if the response is malformed.
pub fn first_listed_handle(rsp: &[u8]) -> Result<Option<u32>, Truncated> {
    let mut r = Reader::new(rsp);
    r.u16()?;
    r.u32()?;
    r.u32()?;
    r.u8()?;
    if r.u32()? != TPM_CAP_HANDLES {
        return Err(Truncated);
    }
    match r.u32()? {
        0 => Ok(None),
        _ => r.u32().map(Some),
    }
}

/// Sets the property (the first handle wanted) of a TPM2_GetCapability command whose
/// parameters start at `params_offset`.
///
/// # Errors
/// [`Truncated`] if the command is too short.
pub fn set_property(cmd: &mut [u8], params_offset: usize, property: u32) -> Result<(), Truncated> {
    put_u32(
        cmd,
        params_offset.checked_add(4).ok_or(Truncated)?,
        property,
    )
}

/// Sets the propertyCount (the most entries wanted) of a TPM2_GetCapability command whose
/// parameters start at `params_offset`.
///
/// # Errors
/// [`Truncated`] if the command is too short.
pub fn set_property_count(
    cmd: &mut [u8],
    params_offset: usize,
    count: u32,
) -> Result<(), Truncated> {
    put_u32(cmd, params_offset.checked_add(8).ok_or(Truncated)?, count)
}

/// The property to ask a handle list again from, after the TPM listed `last` for a query of
/// `property`: the next index, in the handle type of `property`. The TPM lists saved sessions
/// in the HMAC form (0x02...), so `last + 1` would ask for loaded sessions. `None` past the
/// last index of the type.
pub fn next_property(property: u32, last: u32) -> Option<u32> {
    const INDEX: u32 = 0x00FF_FFFF;
    let next = (last & INDEX).checked_add(1).filter(|i| *i <= INDEX)?;
    Some((property & !INDEX) | next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rsp: &[u8]) -> (u8, std::vec::Vec<u32>) {
        let n = u32::from_be_bytes(rsp[15..19].try_into().unwrap()) as usize;
        let v = (0..n)
            .map(|i| u32::from_be_bytes(rsp[19 + 4 * i..23 + 4 * i].try_into().unwrap()))
            .collect();
        assert_eq!(
            u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize,
            19 + 4 * n
        );
        (rsp[10], v)
    }

    #[test]
    fn synthesized_transient_list() {
        let mut b = [0u8; 4096];
        let hs = [0x80ff_fffe, 0x80ff_fffc, 0x80ff_fffd, 0x8000_0005];
        let n = write_handles_response(&mut b, &hs, 0x8000_0000, 100).unwrap();
        assert_eq!(n, 19 + 16);
        assert_eq!(
            list(&b[..n]),
            (0, vec![0x8000_0005, 0x80ff_fffc, 0x80ff_fffd, 0x80ff_fffe])
        );
        let n = write_handles_response(&mut b, &hs, 0x80ff_fffd, 100).unwrap();
        assert_eq!(list(&b[..n]), (0, vec![0x80ff_fffd, 0x80ff_fffe]));
        let n = write_handles_response(&mut b, &hs, 0x8000_0000, 2).unwrap();
        assert_eq!(list(&b[..n]), (1, vec![0x8000_0005, 0x80ff_fffc]));
        let n = write_handles_response(&mut b, &hs, 0x8000_0000, 0).unwrap();
        assert_eq!(list(&b[..n]), (1, vec![]));
        let n = write_handles_response(&mut b, &[], 0x8000_0000, 10).unwrap();
        assert_eq!(list(&b[..n]), (0, vec![]));
        assert_eq!(b[..10], [0x80, 1, 0, 0, 0, 19, 0, 0, 0, 0]);
        assert_eq!(
            write_handles_response(&mut b[..20], &hs, 0, 9),
            Err(Truncated)
        );
    }

    fn cap_rsp(handles: &[u32]) -> std::vec::Vec<u8> {
        let mut v = vec![0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        v.extend_from_slice(&(handles.len() as u32).to_be_bytes());
        for h in handles {
            v.extend_from_slice(&h.to_be_bytes());
        }
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
        v
    }

    #[test]
    fn filtering() {
        let mut r = cap_rsp(&[0x0200_0000, 0x0200_0001, 0x0200_0002]);
        let len = r.len();
        let n = filter_handles_response(&mut r, len, 9, |h| (h != 0x0200_0001).then_some(h))
            .unwrap()
            .len;
        assert_eq!(list(&r[..n]), (1, vec![0x0200_0000, 0x0200_0002]));
        // Everything filtered out: the caller learns where the TPM's list stopped.
        let mut r = cap_rsp(&[0x0200_0000, 0x0200_0001]);
        let len = r.len();
        let f = filter_handles_response(&mut r, len, 9, |_| None).unwrap();
        assert_eq!((f.kept, f.more_data, f.last), (0, true, Some(0x0200_0001)));
        assert_eq!(list(&r[..f.len]), (1, vec![]));
        // Not TPM_CAP_HANDLES: untouched.
        let mut r = cap_rsp(&[1, 2]);
        r[14] = 6;
        let len = r.len();
        assert_eq!(
            filter_handles_response(&mut r, len, 9, |_| None).map(|f| f.len),
            Ok(len)
        );
        // Errors: untouched.
        let mut e = vec![0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x01];
        assert_eq!(
            filter_handles_response(&mut e, 10, 9, |_| None).map(|f| f.len),
            Ok(10)
        );
    }

    #[test]
    fn filtering_to_a_limit() {
        // Two of three kept, limit 1: the first, and moreData set for the one left out.
        let mut r = cap_rsp(&[0x0200_0000, 0x0200_0001, 0x0200_0002]);
        r[10] = 0;
        let len = r.len();
        let f =
            filter_handles_response(&mut r, len, 1, |h| (h != 0x0200_0001).then_some(h)).unwrap();
        assert_eq!((f.kept, f.more_data, f.truncated), (1, false, true));
        assert_eq!(list(&r[..f.len]), (1, vec![0x0200_0000]));
        // Nothing left out, the TPM's moreData clear: clear.
        let mut r = cap_rsp(&[0x0200_0000, 0x0200_0001]);
        r[10] = 0;
        let len = r.len();
        let f =
            filter_handles_response(&mut r, len, 1, |h| (h == 0x0200_0001).then_some(h)).unwrap();
        assert_eq!((f.kept, f.truncated), (1, false));
        assert_eq!(list(&r[..f.len]), (0, vec![0x0200_0001]));
        // Limit 0: nothing listed, moreData set if anything was to be kept.
        let mut r = cap_rsp(&[0x0200_0000]);
        r[10] = 0;
        let len = r.len();
        let f = filter_handles_response(&mut r, len, 0, Some).unwrap();
        assert_eq!(list(&r[..f.len]), (1, vec![]));
    }

    #[test]
    fn next_property_keeps_the_type() {
        assert_eq!(next_property(0x0300_0000, 0x0200_0004), Some(0x0300_0005));
        assert_eq!(next_property(0x0300_0007, 0x0300_0009), Some(0x0300_000A));
        assert_eq!(next_property(0x0200_0000, 0x0300_0001), Some(0x0200_0002));
        assert_eq!(next_property(0x8000_0000, 0x8000_0001), Some(0x8000_0002));
        assert_eq!(next_property(0x0300_0000, 0x02FF_FFFF), None);
        let mut c = [0u8; 22];
        assert_eq!(build_request(&mut c, TPM_CAP_HANDLES, 1, 2), Ok(22));
        set_property_count(&mut c, 10, 254).unwrap();
        assert_eq!(
            CapabilityRequest::parse(&c, 10).unwrap().property_count,
            254
        );
        assert_eq!(set_property_count(&mut c[..21], 10, 1), Err(Truncated));
    }

    #[test]
    fn filtering_with_sessions() {
        // Tag 0x8002: parameterSize, parameters, then a 5-byte auth area.
        let mut v = vec![
            0x80, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        v.extend_from_slice(&0x0300_0001u32.to_be_bytes());
        v.extend_from_slice(&0x0300_0002u32.to_be_bytes());
        v.extend_from_slice(&[0, 0, 1, 0, 0]);
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
        let len = v.len();
        let n = filter_handles_response(&mut v, len, 9, |h| (h == 0x0300_0002).then_some(h))
            .unwrap()
            .len;
        assert_eq!(n, len - 4);
        assert_eq!(&v[10..14], &13u32.to_be_bytes());
        assert_eq!(&v[19..23], &1u32.to_be_bytes());
        assert_eq!(&v[23..27], &0x0300_0002u32.to_be_bytes());
        assert_eq!(&v[27..32], &[0, 0, 1, 0, 0]);
        assert_eq!(&v[2..6], &(n as u32).to_be_bytes());
    }

    #[test]
    fn filtering_malformed() {
        let good = cap_rsp(&[0x0200_0000, 0x0200_0001]);
        for cut in 10..good.len() {
            let mut r = good.clone();
            assert_eq!(
                filter_handles_response(&mut r, cut, 9, Some),
                Err(Truncated),
                "{cut}"
            );
        }
        let mut r = good.clone();
        r[18] = 200; // count too large
        let len = r.len();
        assert_eq!(
            filter_handles_response(&mut r, len, 9, Some),
            Err(Truncated)
        );
        let mut r = good.clone();
        r.push(0); // trailing byte
        let len = r.len();
        assert_eq!(
            filter_handles_response(&mut r, len, 9, Some),
            Err(Truncated)
        );
        let mut r = good.clone();
        assert_eq!(
            filter_handles_response(&mut r, 5000, 9, Some),
            Err(Truncated)
        );
        let mut r = good;
        r[1] = 0xC4; // bad tag
        let len = r.len();
        assert_eq!(
            filter_handles_response(&mut r, len, 9, Some),
            Err(Truncated)
        );
    }
}
