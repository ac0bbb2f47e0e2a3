// SPDX-License-Identifier: GPL-2.0
//! A small fake TPM that models just what the resource manager relies on (transient object
//! and session slots, context save/load/flush with replay protection, a command table) and
//! lets a test inject faults on chosen commands.

use std::collections::BTreeMap;

use super::marshal::{Buf, Rd};
use tpmrs_proto::context::build_hmac_session;
use tpmrs_proto::{Tpm, TransportError};

/// What to do to a matching command.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer this response code without executing.
    Rc(u32),
    /// Fail on the transport without executing (the RM cannot tell: it may have run).
    Transport(i32),
    /// Fail on the transport before the command reaches the TPM (an allocation failure,
    /// say), and say so.
    NotSent(i32),
    /// Execute, then fail on the transport (the response is lost).
    TransportAfter(i32),
    /// Answer a malformed response.
    Garbage,
}

struct Rule {
    cc: u32,
    skip: usize,
    fault: Fault,
}

#[derive(Clone, Copy)]
struct Object {
    id: u32,
    state: u32,
    sequence: bool,
}

#[derive(Clone, Copy)]
struct Session {
    loaded: bool,
    seq: u64,
}

/// The fake TPM.
pub struct FakeTpm {
    objects: BTreeMap<u32, Object>,
    sessions: BTreeMap<u32, Session>,
    next_id: u32,
    next_seq: u64,
    rules: Vec<Rule>,
    /// Every command code received, in order.
    pub log: Vec<u32>,
    /// StartAuthSessions received: tpmrs' own (the one `build_hmac_session` writes), and
    /// the others (its clients').
    pub starts: (usize, usize),
    /// Every transmit fails while set.
    pub down: bool,
    /// TPM_CAP_COMMANDS entries per response (exercises moreData).
    pub page: usize,
    /// Most handles per TPM_CAP_HANDLES response, whatever propertyCount asks (a TPM may
    /// list fewer and set moreData).
    pub handle_page: usize,
    /// Most sessions (loaded + saved): TPM_RC_SESSION_HANDLES beyond.
    pub max_sessions: usize,
    /// Most loaded sessions: TPM_RC_SESSION_MEMORY beyond.
    pub max_loaded_sessions: usize,
    /// Most loaded objects: TPM_RC_OBJECT_MEMORY beyond (TPM_PT_HR_TRANSIENT_MIN).
    pub max_loaded_objects: usize,
    /// TPM Resets so far: an object context saved before one no longer loads.
    epoch: u64,
    /// Context gap: a session ContextSave fails with TPM_RC_CONTEXT_GAP when the oldest saved
    /// session's sequence is this far behind the next one (None: no limit).
    pub gap_max: Option<u64>,
}

pub const CC_VENDOR: u32 = 0x2000_0001;

/// (cc, cHandles, rHandle, flushed)
const TABLE: &[(u32, u32, bool, bool)] = &[
    (0x131, 1, true, false),  // CreatePrimary
    (0x13E, 1, false, true),  // SequenceComplete
    (0x15C, 1, false, false), // SequenceUpdate
    (0x15D, 1, false, false), // Sign
    (0x161, 0, true, false),  // ContextLoad
    (0x162, 1, false, false), // ContextSave
    (0x165, 0, false, false), // FlushContext
    (0x176, 2, true, false),  // StartAuthSession
    (0x17A, 0, false, false), // GetCapability
    (0x17B, 0, false, false), // GetRandom
    (0x186, 0, true, false),  // HashSequenceStart
    (0x18C, 1, false, false), // PolicyPassword
    (CC_VENDOR, 1, false, false),
];

fn attrs(e: &(u32, u32, bool, bool)) -> u32 {
    e.0 | (e.1 << 25) | if e.2 { 1 << 28 } else { 0 } | if e.3 { 1 << 24 } else { 0 }
}

impl Default for FakeTpm {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeTpm {
    pub fn new() -> Self {
        FakeTpm {
            objects: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_id: 1,
            next_seq: 1,
            rules: Vec::new(),
            log: Vec::new(),
            starts: (0, 0),
            down: false,
            page: 5,
            handle_page: usize::MAX,
            max_sessions: 64,
            max_loaded_sessions: 3,
            max_loaded_objects: 3,
            epoch: 0,
            gap_max: None,
        }
    }

    /// Applies `fault` to the (`skip`+1)-th next command with code `cc`.
    pub fn fail(&mut self, cc: u32, skip: usize, fault: Fault) {
        self.rules.push(Rule { cc, skip, fault });
    }

    pub fn loaded_objects(&self) -> usize {
        self.objects.len()
    }

    /// Flushes a loaded object behind the resource manager's back (a /dev/tpm0 user's
    /// FlushContext).
    pub fn drop_object(&mut self, h: u32) {
        self.objects.remove(&h);
    }

    /// Loaded objects: their handles.
    pub fn object_handles(&self) -> Vec<u32> {
        self.objects.keys().copied().collect()
    }

    /// A power loss without TPM2_Shutdown (a TPM Reset): every loaded object and session is
    /// gone, and every saved context no longer loads.
    pub fn reset(&mut self) {
        self.objects.clear();
        self.sessions.clear();
        self.epoch += 1;
    }

    /// TPM2_Shutdown(STATE), a power cycle and TPM2_Startup(STATE) (a TPM Resume): loaded
    /// objects and sessions are gone, saved sessions stay and load again.
    pub fn resume(&mut self) {
        self.objects.clear();
        self.sessions.retain(|_, s| !s.loaded);
    }

    /// Sessions the TPM holds (loaded or saved).
    pub fn sessions(&self) -> Vec<u32> {
        self.sessions.keys().copied().collect()
    }

    pub fn loaded_sessions(&self) -> usize {
        self.sessions.values().filter(|s| s.loaded).count()
    }

    /// A saved session created behind the resource manager's back (the kernel's, a
    /// /dev/tpm0 user's): it holds a slot and takes part in the context gap.
    pub fn external_session(&mut self) -> u32 {
        assert!(self.sessions.len() < self.max_sessions, "fake TPM full");
        let h = self.free_session_handle();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sessions.insert(h, Session { loaded: false, seq });
        h
    }

    /// A session loaded (in TPM memory) behind the resource manager's back.
    pub fn external_loaded_session(&mut self) -> u32 {
        let h = self.external_session();
        self.sessions.get_mut(&h).unwrap().loaded = true;
        h
    }

    /// Flushes a session behind the resource manager's back.
    pub fn drop_session(&mut self, h: u32) {
        self.sessions.remove(&h);
    }

    fn free_session_handle(&self) -> u32 {
        (0x0200_0000..)
            .find(|h| {
                !self.sessions.contains_key(h) && !self.sessions.contains_key(&(h | 0x0100_0000))
            })
            .unwrap()
    }

    /// TPM_RC_CONTEXT_GAP if saving one more session context would exceed the gap.
    fn gap_exceeded(&self) -> bool {
        let Some(g) = self.gap_max else { return false };
        self.sessions
            .values()
            .filter(|s| !s.loaded)
            .map(|s| s.seq)
            .min()
            .is_some_and(|oldest| self.next_seq - oldest >= g)
    }

    /// Asserts that nothing is left in the TPM.
    pub fn assert_empty(&self) {
        assert_eq!(self.loaded_objects(), 0, "objects left loaded");
        assert_eq!(self.sessions(), vec![], "sessions left");
    }

    pub fn count(&self, cc: u32) -> usize {
        self.log.iter().filter(|c| **c == cc).count()
    }

    fn rsp(rc: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Buf::new().u16(0x8001).u32(0).u32(rc).bytes(body).done();
        let n = v.len() as u32;
        v[2..6].copy_from_slice(&n.to_be_bytes());
        v
    }

    fn new_phandle(&self) -> u32 {
        (0x8000_0000..)
            .find(|h| !self.objects.contains_key(h))
            .unwrap()
    }

    fn blob(seq: u64, saved: u32, data: &[u8]) -> Vec<u8> {
        let mut b = Buf::new()
            .bytes(&seq.to_be_bytes())
            .u32(saved)
            .u32(0x4000_0001)
            .b2(data);
        b = b.bytes(&[]);
        b.done()
    }

    fn execute(&mut self, cmd: &[u8]) -> Vec<u8> {
        let cc = u32::from_be_bytes(cmd[6..10].try_into().unwrap());
        let Some(e) = TABLE.iter().find(|e| e.0 == cc) else {
            return Self::rsp(0x143, &[]);
        };
        let tag = u16::from_be_bytes([cmd[0], cmd[1]]);
        let mut r = Rd(cmd, 10);
        let handles: Vec<u32> = (0..e.1).map(|_| r.u32()).collect();
        for (i, h) in handles.iter().enumerate() {
            let ok = match h >> 24 {
                0x80 => self.objects.contains_key(h),
                0x02 | 0x03 => self.sessions.get(h).is_some_and(|s| s.loaded),
                _ => true,
            };
            if !ok {
                return Self::rsp(0x910 + i as u32, &[]);
            }
        }
        let mut ended = Vec::new();
        if tag == 0x8002 {
            let size = r.u32() as usize;
            let end = r.1.saturating_add(size).min(cmd.len());
            let mut i = 0;
            while r.1 < end {
                let h = r.u32();
                r.b2();
                let a = r.u8();
                r.b2();
                if h >> 24 == 2 || h >> 24 == 3 {
                    if !self.sessions.get(&h).is_some_and(|s| s.loaded) {
                        return Self::rsp(0x918 + i, &[]);
                    }
                    if a & 1 == 0 {
                        ended.push(h);
                    }
                }
                i += 1;
            }
        }
        if r.overrun() {
            return Self::rsp(0x095, &[]);
        }
        let params = &cmd[r.1..];
        let out = match cc {
            0x131 | 0x186 if self.objects.len() >= self.max_loaded_objects => {
                return Self::rsp(0x902, &[]);
            }
            0x131 | 0x186 => {
                let h = self.new_phandle();
                let id = self.next_id;
                self.next_id += 1;
                self.objects.insert(
                    h,
                    Object {
                        id,
                        state: 0,
                        sequence: cc == 0x186,
                    },
                );
                Self::rsp(0, &h.to_be_bytes())
            }
            0x176 => {
                if self.sessions.len() >= self.max_sessions {
                    return Self::rsp(0x905, &[]);
                }
                if self.loaded_sessions() >= self.max_loaded_sessions {
                    return Self::rsp(0x903, &[]);
                }
                let kind = params
                    .get(params.len().wrapping_sub(5))
                    .copied()
                    .unwrap_or(0);
                let h = self.free_session_handle() | if kind == 1 { 0x0100_0000 } else { 0 };
                self.sessions.insert(
                    h,
                    Session {
                        loaded: true,
                        seq: 0,
                    },
                );
                Self::rsp(0, &Buf::new().u32(h).b2(&[7; 16]).done())
            }
            0x162 => {
                let h = handles[0];
                if let Some(o) = self.objects.get(&h) {
                    let saved = if o.sequence { 0x8000_0001 } else { 0x8000_0000 };
                    let data = Buf::new().u32(o.id).u32(o.state).done();
                    Self::rsp(0, &Self::blob(self.epoch, saved, &data))
                } else {
                    if !self.sessions.contains_key(&h) {
                        return Self::rsp(0x18B, &[]);
                    }
                    if self.gap_exceeded() {
                        return Self::rsp(0x901, &[]);
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let Some(s) = self.sessions.get_mut(&h) else {
                        return Self::rsp(0x18B, &[]);
                    };
                    s.loaded = false;
                    s.seq = seq;
                    Self::rsp(0, &Self::blob(seq, h, &h.to_be_bytes()))
                }
            }
            0x161 => {
                let mut p = Rd(params, 0);
                let seq = u64::from_be_bytes(p.bytes(8).try_into().unwrap());
                let saved = p.u32();
                p.u32();
                let data = p.b2();
                if p.overrun() {
                    return Self::rsp(0x095, &[]);
                }
                if saved >> 24 == 0x80 && seq != self.epoch {
                    // TPM_RC_INTEGRITY, parameter 1: saved before a TPM Reset.
                    return Self::rsp(0x1DF, &[]);
                }
                if saved >> 24 == 0x80 && self.objects.len() >= self.max_loaded_objects {
                    return Self::rsp(0x902, &[]);
                }
                if saved >> 24 == 0x80 {
                    let mut d = Rd(&data, 0);
                    let (id, state) = (d.u32(), d.u32());
                    let h = self.new_phandle();
                    self.objects.insert(
                        h,
                        Object {
                            id,
                            state,
                            sequence: saved == 0x8000_0001,
                        },
                    );
                    Self::rsp(0, &h.to_be_bytes())
                } else {
                    let full = self.loaded_sessions() >= self.max_loaded_sessions;
                    match self.sessions.get_mut(&saved) {
                        Some(s) if !s.loaded && s.seq == seq && full => Self::rsp(0x903, &[]),
                        Some(s) if !s.loaded && s.seq == seq => {
                            s.loaded = true;
                            Self::rsp(0, &saved.to_be_bytes())
                        }
                        _ => Self::rsp(0x1CB, &[]),
                    }
                }
            }
            0x165 => {
                let h = Rd(params, 0).u32();
                // A session in either form (HMAC 0x02, policy 0x03), as the reference
                // implementation: it looks sessions up by index.
                let other_form = match h >> 24 {
                    0x02 | 0x03 => h ^ 0x0100_0000,
                    _ => h,
                };
                if self.objects.remove(&h).is_some()
                    || self.sessions.remove(&h).is_some()
                    || self.sessions.remove(&other_form).is_some()
                {
                    Self::rsp(0, &[])
                } else {
                    Self::rsp(0x1CB, &[])
                }
            }
            0x15C => {
                match self.objects.get_mut(&handles[0]) {
                    Some(o) => o.state += 1,
                    None => return Self::rsp(0x18B, &[]),
                }
                Self::rsp(0, &[])
            }
            0x13E => {
                let Some(o) = self.objects.remove(&handles[0]) else {
                    return Self::rsp(0x18B, &[]);
                };
                Self::rsp(0, &Buf::new().u32(o.state).done())
            }
            0x17A => {
                let mut p = Rd(params, 0);
                let (cap, prop, count) = (p.u32(), p.u32(), p.u32() as usize);
                if cap == 2 {
                    let all: Vec<u32> = TABLE.iter().filter(|e| e.0 >= prop).map(attrs).collect();
                    let n = all.len().min(self.page).min(count);
                    let mut b = Buf::new().u8(u8::from(n < all.len())).u32(2).u32(n as u32);
                    for a in &all[..n] {
                        b = b.u32(*a);
                    }
                    Self::rsp(0, &b.done())
                } else if cap == 6 && (0x10E..=0x111).contains(&prop) {
                    // TPM_PT_HR_TRANSIENT_MIN, TPM_PT_HR_LOADED_MIN and
                    // TPM_PT_ACTIVE_SESSIONS_MAX: the slots this fake models (PT_FIXED
                    // properties it does not know are left out).
                    let all = [
                        (0x10E, self.max_loaded_objects),
                        (0x110, self.max_loaded_sessions),
                        (0x111, self.max_sessions),
                    ];
                    let list: Vec<(u32, usize)> = all
                        .into_iter()
                        .filter(|(p, _)| *p >= prop)
                        .take(count)
                        .collect();
                    let mut b = Buf::new().u8(0).u32(6).u32(list.len() as u32);
                    for (p, v) in list {
                        b = b.u32(p).u32(v as u32);
                    }
                    Self::rsp(0, &b.done())
                } else if cap == 1 {
                    let list: Vec<u32> = match prop >> 24 {
                        0x80 => self.objects.keys().copied().collect(),
                        0x02 => self
                            .sessions
                            .iter()
                            .filter(|s| s.1.loaded)
                            .map(|s| *s.0)
                            .collect(),
                        // Saved sessions in the HMAC form, whatever their type, as the
                        // reference implementation lists them (SessionCapGetSaved).
                        0x03 => self
                            .sessions
                            .iter()
                            .filter(|s| !s.1.loaded)
                            .map(|s| 0x0200_0000 | (*s.0 & 0xFF_FFFF))
                            .collect(),
                        _ => vec![],
                    };
                    // In index order, as the reference implementation walks its slots
                    // (sessions of both forms share the indices).
                    let mut list: Vec<u32> = list
                        .into_iter()
                        .filter(|h| *h & 0xFF_FFFF >= prop & 0xFF_FFFF)
                        .collect();
                    list.sort_by_key(|h| *h & 0xFF_FFFF);
                    let count = count.min(self.handle_page);
                    let more = list.len() > count;
                    let list: Vec<u32> = list.into_iter().take(count).collect();
                    let mut b = Buf::new().u8(u8::from(more)).u32(1).u32(list.len() as u32);
                    for h in list {
                        b = b.u32(h);
                    }
                    Self::rsp(0, &b.done())
                } else {
                    Self::rsp(0x2C4, &[])
                }
            }
            _ => Self::rsp(0, &[]),
        };
        if u32::from_be_bytes(out[6..10].try_into().unwrap()) == 0 {
            for h in ended {
                self.sessions.remove(&h);
            }
        }
        out
    }
}

impl Tpm for FakeTpm {
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        assert!(
            cmd.len() >= 10 && cmd.len() <= 4096,
            "RM sent a malformed command"
        );
        assert_eq!(
            u32::from_be_bytes(cmd[2..6].try_into().unwrap()) as usize,
            cmd.len()
        );
        let cc = u32::from_be_bytes(cmd[6..10].try_into().unwrap());
        self.log.push(cc);
        if cc == 0x176 {
            let mut own = [0u8; 64];
            let n = build_hmac_session(&mut own, &[0; 16]).unwrap();
            if cmd == &own[..n] {
                self.starts.0 += 1;
            } else {
                self.starts.1 += 1;
            }
        }
        if self.down {
            return Err(TransportError::maybe_sent(-19));
        }
        let mut fault = None;
        if let Some(i) = self.rules.iter().position(|r| r.cc == cc) {
            if self.rules[i].skip == 0 {
                fault = Some(self.rules.remove(i).fault);
            } else {
                self.rules[i].skip -= 1;
            }
        }
        let out = match fault {
            None => self.execute(cmd),
            Some(Fault::Rc(rc)) => Self::rsp(rc, &[]),
            Some(Fault::Transport(e)) => return Err(TransportError::maybe_sent(e)),
            Some(Fault::NotSent(e)) => return Err(TransportError::not_sent(e)),
            Some(Fault::TransportAfter(e)) => {
                self.execute(cmd);
                return Err(TransportError::maybe_sent(e));
            }
            Some(Fault::Garbage) => vec![0x80, 0x01, 0, 0, 0, 99, 0, 0, 0, 0],
        };
        rsp[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }
}
