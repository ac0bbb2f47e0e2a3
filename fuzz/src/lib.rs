// SPDX-License-Identifier: GPL-2.0
//! Shared pieces of the fuzz targets: the integration tests' fake TPM and marshaling helpers
//! (included as they are from rust/proto/tests/common), an input cursor, a TPM wrapper that
//! injects faults or answers scripted bytes, and the invariant checks.
#![allow(dead_code)]

#[path = "../../rust/proto/tests/common/marshal.rs"]
pub mod marshal;

#[path = "../../rust/proto/tests/common/fake.rs"]
pub mod fake;

#[path = "../../rust/proto/tests/common/invariants.rs"]
pub mod invariants;

pub use invariants::{check_response, check_rm, rm_has_pending};

use fake::FakeTpm;
use tpmrs_proto::{Rm, Space, Tpm, TransportError, TPM_BUFSIZE};

/// Whether `TPMRS_FUZZ_TRACE` is set: then the targets print what they do (to explain a
/// crash input: `TPMRS_FUZZ_TRACE=1 fuzz/target/.../<target> <input>`).
pub fn trace_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TPMRS_FUZZ_TRACE").is_some())
}

/// Prints a line when tracing.
#[macro_export]
macro_rules! trace {
    ($($a:tt)*) => {
        if $crate::trace_on() {
            eprintln!($($a)*);
        }
    };
}

/// Reads the fuzz input front to back; past its end every read gives zeros.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        v
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let n = self.data.len().saturating_sub(self.pos);
        self.bytes(n)
    }
    pub fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

/// Response codes worth trying more often than a random u32.
pub const INTERESTING_RCS: &[u32] = &[
    0x000,       // TPM_RC_SUCCESS
    0x01E,       // TPM_RC_BAD_TAG
    0x095,       // TPM_RC_SIZE (format one)
    0x101,       // TPM_RC_FAILURE
    0x143,       // TPM_RC_COMMAND_CODE
    0x08B,       // TPM_RC_HANDLE
    0x18B,       // TPM_RC_HANDLE, handle 1
    0x1CB,       // TPM_RC_HANDLE, parameter 1
    0x98B,       // TPM_RC_HANDLE, session 1
    0x0A3,       // TPM_RC_EXPIRED
    0x901,       // TPM_RC_CONTEXT_GAP
    0x902,       // TPM_RC_OBJECT_MEMORY
    0x903,       // TPM_RC_SESSION_MEMORY
    0x904,       // TPM_RC_MEMORY
    0x905,       // TPM_RC_SESSION_HANDLES
    0x906,       // TPM_RC_OBJECT_HANDLES
    0x908,       // TPM_RC_YIELDED
    0x909,       // TPM_RC_CANCELED
    0x90A,       // TPM_RC_TESTING
    0x910,       // TPM_RC_REFERENCE_H0
    0x918,       // TPM_RC_REFERENCE_S0
    0x91E,       // TPM_RC_REFERENCE_S6
    0x920,       // TPM_RC_NV_RATE
    0x921,       // TPM_RC_LOCKOUT
    0x922,       // TPM_RC_RETRY
    0x923,       // TPM_RC_NV_UNAVAILABLE
    0x000B_0143, // resource-manager layer
    0xFFFF_FFFF,
];

/// A response code from the input: mostly interesting ones, sometimes any u32.
pub fn pick_rc(inp: &mut Input<'_>) -> u32 {
    let sel = inp.u8();
    if sel < 0xF0 {
        INTERESTING_RCS[usize::from(sel) % INTERESTING_RCS.len()]
    } else {
        inp.u32()
    }
}

/// Whether a TPM response code, if the TPM gave it *without doing anything*, may make the
/// resource manager believe a handle is gone while the fake TPM still holds it. Such an
/// answer contradicts the fake's state, so after one the "nothing leaked" checks are skipped.
///
/// "Success" (for something not done), a handle error (a real TPM gives one only when the
/// handle really is gone), and an error other than a "not executed" warning on a
/// FlushContext or ContextLoad: a real TPM fails the RM's own flush, or the load of the RM's
/// own untouched blob, only when the handle or context is no longer valid, and the RM acts
/// on that (it forgets the handle). A warning (TPM_RC_RETRY, TPM_RC_CANCELED, ...) is the
/// truth: the RM must keep the handle and try again, and the leak checks hold it to that.
pub fn rc_misleads(cc: u32, rc: u32) -> bool {
    use tpmrs_proto::constants::{is_handle_rc, is_not_executed_rc};
    rc == 0 || is_handle_rc(rc) || ((cc == 0x165 || cc == 0x161) && !is_not_executed_rc(rc))
}

/// What [`FuzzTpm`] does to a command that matches a rule: the fake TPM's own fault kinds
/// (`Garbage` is a response whose size field is wrong, without executing).
pub use fake::Fault;

struct Rule {
    cc: u32,
    skip: u8,
    fault: Fault,
}

/// The fake TPM of the integration tests, wrapped: fault rules (like the fake's own, but
/// clearable and observable) or, when `script` is set, answers read from fuzz bytes.
pub struct FuzzTpm {
    pub fake: FakeTpm,
    rules: Vec<Rule>,
    /// Scripted answers (see [`FuzzTpm::scripted`]); None: the fake answers.
    pub script: Option<Vec<u8>>,
    script_pos: usize,
    /// An answer contradicting the fake's state was given (see [`rc_misleads`]).
    pub misled: bool,
    /// Commands transmitted.
    pub transmits: u64,
    /// Sessions created behind the resource manager's back.
    pub externals: Vec<u32>,
    /// Those of them created loaded.
    pub ext_loaded: Vec<u32>,
    scratch: Vec<u8>,
}

impl FuzzTpm {
    pub fn new(fake: FakeTpm) -> Self {
        FuzzTpm {
            fake,
            rules: Vec::new(),
            script: None,
            script_pos: 0,
            misled: false,
            transmits: 0,
            externals: Vec::new(),
            ext_loaded: Vec::new(),
            scratch: vec![0; TPM_BUFSIZE],
        }
    }

    /// Applies `fault` to the (`skip`+1)-th next command with code `cc`.
    pub fn fail(&mut self, cc: u32, skip: u8, fault: Fault) {
        if self.rules.len() < 8 {
            self.rules.push(Rule { cc, skip, fault });
        }
    }

    pub fn clear_faults(&mut self) {
        self.rules.clear();
        self.script = None;
        self.fake.down = false;
    }

    fn script_u8(&mut self) -> Option<u8> {
        let s = self.script.as_ref()?;
        let v = s.get(self.script_pos).copied();
        self.script_pos += 1;
        v
    }

    fn script_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        for x in &mut b {
            *x = self.script_u8().unwrap_or(0);
        }
        u32::from_be_bytes(b)
    }

    fn script_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n.min(TPM_BUFSIZE));
        for _ in 0..n {
            match self.script_u8() {
                Some(b) => v.push(b),
                None => break,
            }
        }
        v
    }

    /// Executes on the fake into `self.scratch`; returns the length or the transport error.
    fn model(&mut self, cmd: &[u8]) -> Result<usize, TransportError> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.fake.transmit(cmd, &mut buf);
        self.scratch = buf;
        r
    }

    /// One scripted answer. The first script byte chooses:
    /// 0: the fake answers; 1: a well-framed response with a scripted code and body;
    /// 2: raw scripted bytes; 3: the fake answers, then the answer is cut, extended, or its
    /// size field or code changed; 4: transport error; 5: the fake executes, the response is
    /// lost; 6: a length beyond the buffer; 7: the fake answers with its response handle
    /// replaced. A transport error (4) may have reached the TPM or not, as the next byte
    /// says.
    fn scripted(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        let Some(t) = self.script_u8() else {
            self.script = None;
            return self.fake.transmit(cmd, rsp);
        };
        let write = |rsp: &mut [u8], v: &[u8]| -> usize {
            let n = v.len().min(rsp.len());
            rsp[..n].copy_from_slice(&v[..n]);
            n
        };
        match t % 8 {
            0 => self.fake.transmit(cmd, rsp),
            1 => {
                let tag = if self.script_u8().unwrap_or(0) & 1 == 0 {
                    0x8001u16
                } else {
                    0x8002
                };
                let sel = self.script_u8().unwrap_or(0);
                let rc = if sel < 0xF0 {
                    INTERESTING_RCS[usize::from(sel) % INTERESTING_RCS.len()]
                } else {
                    self.script_u32()
                };
                let len = usize::from(self.script_u8().unwrap_or(0)) * 4
                    + usize::from(self.script_u8().unwrap_or(0) % 4);
                let body = self.script_bytes(len);
                let mut v = Vec::with_capacity(10 + body.len());
                v.extend_from_slice(&tag.to_be_bytes());
                v.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
                v.extend_from_slice(&rc.to_be_bytes());
                v.extend_from_slice(&body);
                Ok(write(rsp, &v))
            }
            2 => {
                let hi = usize::from(self.script_u8().unwrap_or(0));
                let lo = usize::from(self.script_u8().unwrap_or(0));
                let v = self.script_bytes(((hi << 8) | lo) % (TPM_BUFSIZE + 1));
                Ok(write(rsp, &v))
            }
            3 => {
                let n = self.model(cmd)?;
                let mut v = self.scratch[..n].to_vec();
                let how = self.script_u8().unwrap_or(0);
                let k = usize::from(self.script_u8().unwrap_or(0));
                match how % 5 {
                    0 => v.truncate(n.saturating_sub(k % (n + 1))), // cut, size kept
                    1 => {
                        // cut, size fixed up
                        v.truncate(n.saturating_sub(k % (n + 1)).max(10));
                        let len = v.len() as u32;
                        v[2..6].copy_from_slice(&len.to_be_bytes());
                    }
                    2 => {
                        // extended, size fixed up (trailing bytes)
                        let extra = self.script_bytes(k);
                        v.extend_from_slice(&extra);
                        let len = v.len().min(TPM_BUFSIZE) as u32;
                        v[2..6].copy_from_slice(&len.to_be_bytes());
                    }
                    3 => {
                        // size field off
                        let d = self.script_u32();
                        let s = u32::from_be_bytes(v[2..6].try_into().unwrap());
                        v[2..6].copy_from_slice(&s.wrapping_add(d).to_be_bytes());
                    }
                    _ => {
                        // code replaced, body kept
                        let sel = self.script_u8().unwrap_or(0);
                        let rc = INTERESTING_RCS[usize::from(sel) % INTERESTING_RCS.len()];
                        v[6..10].copy_from_slice(&rc.to_be_bytes());
                    }
                }
                Ok(write(rsp, &v))
            }
            4 => Err(if self.script_u8().unwrap_or(0) & 1 == 0 {
                TransportError::maybe_sent(-5)
            } else {
                TransportError::not_sent(-12)
            }),
            5 => {
                self.model(cmd)?;
                Err(TransportError::maybe_sent(-62))
            }
            6 => {
                let n = self.fake.transmit(cmd, rsp)?;
                let extra = usize::from(self.script_u8().unwrap_or(0)) + 1;
                Ok(if n & 1 == 0 {
                    rsp.len() + extra
                } else {
                    n + rsp.len()
                })
            }
            _ => {
                let n = self.model(cmd)?;
                let mut v = self.scratch[..n].to_vec();
                let h = match self.script_u8().unwrap_or(0) % 4 {
                    0 => self.script_u32(),
                    1 => 0x8000_0000 | u32::from(self.script_u8().unwrap_or(0)),
                    2 => 0x0200_0000 | u32::from(self.script_u8().unwrap_or(0)),
                    _ => 0x0300_0000 | u32::from(self.script_u8().unwrap_or(0)),
                };
                if v.len() >= 14 {
                    v[10..14].copy_from_slice(&h.to_be_bytes());
                }
                Ok(write(rsp, &v))
            }
        }
    }
}

impl Tpm for FuzzTpm {
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        // The resource manager must only ever send well-framed commands.
        assert!(
            cmd.len() >= 10 && cmd.len() <= TPM_BUFSIZE,
            "RM sent a command of {} bytes",
            cmd.len()
        );
        assert_eq!(
            u32::from_be_bytes(cmd[2..6].try_into().unwrap()) as usize,
            cmd.len(),
            "RM sent a command whose size field is wrong"
        );
        assert!(rsp.len() >= TPM_BUFSIZE, "RM gave a short response buffer");
        self.transmits += 1;
        // Every RM loop is bounded: a runaway would show here rather than as a timeout.
        assert!(self.transmits < 1_000_000, "runaway TPM traffic");
        let cc = u32::from_be_bytes(cmd[6..10].try_into().unwrap());
        let r = self.transmit_inner(cc, cmd, rsp);
        if trace_on() {
            let arg = cmd
                .get(10..14)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
            match &r {
                Ok(n) => {
                    let rc = rsp
                        .get(6..10)
                        .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
                    let h = rsp.get(10..14.min(*n)).filter(|b| b.len() == 4);
                    eprintln!("    tpm: cc {cc:#x} {arg:x?} -> {n} bytes, rc {rc:x?} {h:02x?}");
                }
                Err(e) => eprintln!("    tpm: cc {cc:#x} {arg:x?} -> {e:?}"),
            }
        }
        r
    }
}

impl FuzzTpm {
    fn transmit_inner(
        &mut self,
        cc: u32,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<usize, TransportError> {
        if self.script.is_some() {
            return self.scripted(cmd, rsp);
        }
        let arg = cmd
            .get(10..14)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        if cc == 0x165 && !self.misled {
            // Only its own sessions may the RM flush; external ones are someone else's.
            if let Some(h) = arg.filter(|h| self.externals.contains(h)) {
                panic!("RM flushed session {h:#x}, which it does not own");
            }
        }
        let r = self.fault_or_model(cc, cmd, rsp);
        if cc == 0x161 {
            // A client loading an external session (a forged blob) makes it the RM's.
            if let Ok(n) = r {
                let rc = rsp.get(6..10).filter(|_| n >= 10);
                let h = rsp.get(10..14).filter(|_| n >= 14);
                if let (Some(&[0, 0, 0, 0]), Some(h)) = (rc, h) {
                    let h = u32::from_be_bytes(h.try_into().unwrap());
                    self.externals.retain(|x| *x != h);
                    self.ext_loaded.retain(|x| *x != h);
                }
            }
        }
        r
    }

    fn fault_or_model(
        &mut self,
        cc: u32,
        cmd: &[u8],
        rsp: &mut [u8],
    ) -> Result<usize, TransportError> {
        let mut fault = None;
        if let Some(i) = self.rules.iter().position(|r| r.cc == cc) {
            if self.rules[i].skip == 0 {
                fault = Some(self.rules.remove(i).fault);
            } else {
                self.rules[i].skip -= 1;
            }
        }
        if let Some(f) = fault {
            trace!("    fault {f:?} on cc {cc:#x}");
        }
        let out: Vec<u8> = match fault {
            None => return self.fake.transmit(cmd, rsp),
            Some(Fault::Rc(rc)) => {
                if rc_misleads(cc, rc) {
                    self.misled = true;
                }
                let mut v = vec![0x80, 0x01, 0, 0, 0, 10];
                v.extend_from_slice(&rc.to_be_bytes());
                v
            }
            Some(Fault::Transport(e)) => return Err(TransportError::maybe_sent(e)),
            // Never sent: nothing happened, and the RM is told so.
            Some(Fault::NotSent(e)) => return Err(TransportError::not_sent(e)),
            Some(Fault::TransportAfter(e)) => {
                // Executed, answer lost: the RM cannot know what the TPM now holds.
                self.misled = true;
                self.model(cmd)?;
                return Err(TransportError::maybe_sent(e));
            }
            Some(Fault::Garbage) => vec![0x80, 0x01, 0, 0, 0, 99, 0, 0, 0, 0],
        };
        rsp[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }
}

/// Between commands nothing of the RM's is loaded in the TPM -- but its resident objects
/// and sessions (`Config::resident`), and objects and sessions whose save the TPM refused
/// with a "not executed" warning on every try, which stay loaded as they were
/// (`ObjectEntry::loaded`, `SessionState::Loaded`) -- and every
/// session the TPM holds (apart from external ones) is one the RM tracks. Only meaningful
/// when no misleading answer was given and no flush is queued.
pub fn check_tpm_matches_rm(rm: &Rm, tpm: &FuzzTpm, spaces: &[&Space]) {
    // Handles given up after an unverifiable flush are left in the TPM by design.
    if tpm.misled || rm_has_pending(rm) || rm.stats().flushes_given_up > 0 {
        return;
    }
    // Left loaded by a failed save (the spaces'), or resident (the resource manager's).
    let kept_objects: usize = spaces.iter().map(|s| s.loaded_handles().count()).sum::<usize>()
        + rm.resident_objects().len();
    assert_eq!(
        tpm.fake.loaded_objects(),
        kept_objects,
        "objects left loaded between commands"
    );
    let mut resident: Vec<u32> = rm.resident_objects().iter().map(|o| o.phandle).collect();
    resident.sort_unstable();
    for p in resident {
        assert!(
            tpm.fake.object_handles().contains(&p),
            "resident object {p:#x} not in the TPM"
        );
    }
    let kept_sessions = rm
        .sessions()
        .entries()
        .iter()
        .filter(|e| e.state.is_loaded())
        .count();
    let ext_loaded = tpm.externals_loaded();
    assert_eq!(
        tpm.fake.loaded_sessions(),
        ext_loaded + kept_sessions,
        "RM sessions left loaded between commands"
    );
    for h in tpm.fake.sessions() {
        if tpm.externals.contains(&h) {
            continue;
        }
        assert!(
            rm.sessions().get(h).is_some(),
            "TPM holds session {h:#x} the RM does not track (leaked)"
        );
    }
}

/// After every space is closed (and faults cleared, pending flushes retried): the TPM holds
/// no objects and exactly the RM's abandoned sessions (plus external ones).
pub fn check_all_closed(rm: &Rm, tpm: &FuzzTpm) {
    check_rm(rm, &[]);
    assert!(
        rm.pending_flushes().is_empty(),
        "flushes still pending: {:x?}",
        rm.pending_flushes()
    );
    assert!(
        rm.unverified_flushes().is_empty(),
        "unverified flushes left with the transport up: {:x?}",
        rm.unverified_flushes()
    );
    assert!(
        rm.scheduler().is_empty(),
        "waiters left after every space closed"
    );
    for e in rm.sessions().entries() {
        assert!(
            e.is_abandoned(),
            "session {:#x} tracked after close but not abandoned",
            e.handle
        );
    }
    if tpm.misled || rm.stats().flushes_given_up > 0 {
        return;
    }
    assert_eq!(tpm.fake.loaded_objects(), 0, "objects leaked after close");
    // A client may have loaded (and so adopted) an external session by forging its blob.
    let mut held: Vec<u32> = tpm
        .fake
        .sessions()
        .into_iter()
        .filter(|h| !tpm.externals.contains(h) || rm.sessions().get(*h).is_some())
        .collect();
    held.sort_unstable();
    let mut abandoned: Vec<u32> = rm.sessions().entries().iter().map(|e| e.handle).collect();
    abandoned.sort_unstable();
    assert_eq!(
        held, abandoned,
        "TPM sessions after close != the RM's abandoned list"
    );
    assert_eq!(
        tpm.fake.loaded_sessions(),
        tpm.externals_loaded(),
        "abandoned sessions must be saved, not loaded"
    );
}

impl FuzzTpm {
    /// External sessions created loaded and still there.
    pub fn externals_loaded(&self) -> usize {
        let held = self.fake.sessions();
        self.ext_loaded.iter().filter(|h| held.contains(h)).count()
    }

    /// A session behind the RM's back (if the fake has room).
    pub fn add_external(&mut self, loaded: bool) {
        if self.fake.sessions().len() >= self.fake.max_sessions {
            return;
        }
        if loaded && self.fake.loaded_sessions() >= self.fake.max_loaded_sessions {
            return;
        }
        let h = if loaded {
            let h = self.fake.external_loaded_session();
            self.ext_loaded.push(h);
            h
        } else {
            self.fake.external_session()
        };
        self.externals.push(h);
    }

    /// Forgets external sessions that are gone or that a client adopted (ContextLoad of a
    /// forged blob): from then on they are the RM's.
    pub fn sync_externals(&mut self, rm: &Rm) {
        let held = self.fake.sessions();
        let keep = |h: &u32| held.contains(h) && rm.sessions().get(*h).is_none();
        self.externals.retain(keep);
        self.ext_loaded.retain(keep);
    }

    /// A TPM Resume (TPM2_Shutdown(STATE), power cycle, TPM2_Startup(STATE)) behind the
    /// RM's back: loaded objects and sessions are gone, saved ones stay. If anything of the
    /// RM's was loaded (a resident, or what a failed save left), the fake now contradicts
    /// the RM until it finds out: the checks between commands stop.
    pub fn resume_behind_rm(&mut self, rm: &Rm) {
        let ours_loaded = self.fake.loaded_objects() > 0
            || rm.sessions().entries().iter().any(|e| e.state.is_loaded());
        self.fake.resume();
        let held = self.fake.sessions();
        self.ext_loaded.retain(|h| held.contains(h));
        self.externals.retain(|h| held.contains(h));
        if ours_loaded {
            self.misled = true;
        }
    }

    /// Loses a context of the RM behind its back, as a /dev/tpm0 user's FlushContext or a
    /// power cycle would (`k` picks which): a resident object, a resident session, or
    /// everything loaded (a TPM Resume without the suspend path).
    pub fn lose(&mut self, rm: &Rm, k: u8) {
        let objects: Vec<u32> = rm.resident_objects().iter().map(|o| o.phandle).collect();
        let sessions: Vec<u32> = rm
            .sessions()
            .entries()
            .iter()
            .filter(|e| e.is_resident())
            .map(|e| e.handle)
            .collect();
        match k % 3 {
            0 if !objects.is_empty() => {
                self.fake.drop_object(objects[usize::from(k / 3) % objects.len()]);
                self.misled = true;
            }
            1 if !sessions.is_empty() => {
                self.fake
                    .drop_session(sessions[usize::from(k / 3) % sessions.len()]);
                self.misled = true;
            }
            2 => self.resume_behind_rm(rm),
            _ => {}
        }
    }

    /// Flushes the `i`-th external session behind the RM's back (frees a slot), unless
    /// the RM has adopted it.
    pub fn drop_external(&mut self, rm: &Rm, i: usize) {
        if self.externals.is_empty() {
            return;
        }
        let h = self.externals[i % self.externals.len()];
        if rm.sessions().get(h).is_some() {
            return;
        }
        self.fake.drop_session(h);
        self.externals.retain(|x| *x != h);
        self.ext_loaded.retain(|x| *x != h);
    }
}

/// Handles worth naming that no space owns (unknown, other types).
pub const ODD_HANDLES: &[u32] = &[
    0x8000_0000,
    0x8000_0003,
    0x80FF_FFFF,
    0x8100_0001,
    0x0200_0000,
    0x0200_0007,
    0x0300_0000,
    0x0300_0002,
    0x4000_0001,
    0x4000_0007,
    0x4000_0009,
    0x0100_0000,
    0x0000_0000,
    0xFFFF_FFFF,
];

/// A handle from `known` (mostly) or [`ODD_HANDLES`].
pub fn pick_handle(inp: &mut Input<'_>, known: &[u32]) -> u32 {
    let sel = inp.u8();
    if sel >= 0xD0 || known.is_empty() {
        if sel == 0xFF {
            return inp.u32();
        }
        ODD_HANDLES[usize::from(sel) % ODD_HANDLES.len()]
    } else {
        known[usize::from(sel) % known.len()]
    }
}

/// Number of entries of the command menu of [`menu_command`].
pub const MENU_LEN: u8 = 14;

/// A client command from a small menu: `kind` (mod [`MENU_LEN`]) chooses which, the input
/// its handles (from `known`, see [`pick_handle`]), context blobs (from `blobs`) and flags.
pub fn menu_command(inp: &mut Input<'_>, kind: u8, known: &[u32], blobs: &[Vec<u8>]) -> Vec<u8> {
    use marshal::*;
    match kind % MENU_LEN {
        0 => {
            let public = if inp.bool() {
                ecc_signing_public(&[])
            } else {
                ecc_storage_public()
            };
            create_primary(&public)
        }
        1 => hash_sequence_start(),
        2 => {
            let kind = if inp.bool() { SE_POLICY } else { SE_HMAC };
            start_auth_session(kind, &[3; 16])
        }
        3 => flush_context(pick_handle(inp, known)),
        4 => context_save(pick_handle(inp, known)),
        5 => {
            let sel = inp.u8();
            let mut blob = if blobs.is_empty() || sel >= 0xF0 {
                // A made-up context: sequence, savedHandle, hierarchy, blob.
                Buf::new()
                    .bytes(&u64::from(inp.u8()).to_be_bytes())
                    .u32(pick_handle(inp, known))
                    .u32(0x4000_0001)
                    .b2(&[0; 8])
                    .done()
            } else {
                blobs[usize::from(sel) % blobs.len()].clone()
            };
            // Sometimes corrupted: a byte changed, or cut short.
            match inp.u8() % 8 {
                0 if !blob.is_empty() => {
                    let i = usize::from(inp.u8()) % blob.len();
                    blob[i] ^= inp.u8() | 1;
                }
                1 => {
                    let n = usize::from(inp.u8()) % (blob.len() + 1);
                    blob.truncate(n);
                }
                _ => {}
            }
            context_load(&blob)
        }
        6 => {
            let cap = if inp.u8() < 0xF0 {
                CAP_HANDLES
            } else {
                u32::from(inp.u8() % 10)
            };
            let prop = match inp.u8() % 8 {
                0 | 1 => 0x8000_0000,
                2 => 0x0200_0000,
                3 => 0x0300_0000,
                4 => 0x8100_0000,
                5 => 0x4000_0000,
                6 => pick_handle(inp, known),
                _ => inp.u32(),
            };
            let count = match inp.u8() % 5 {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => 254,
                _ => u32::MAX,
            };
            get_capability(cap, prop, count)
        }
        7 => policy_password(pick_handle(inp, known)),
        8 => {
            let key = pick_handle(inp, known);
            let auth = if inp.bool() {
                Auth::pw(KEY_AUTH)
            } else {
                Auth::policy(pick_handle(inp, known), inp.bool(), KEY_AUTH)
            };
            sign(key, auth)
        }
        9 => {
            // GetRandom with one to three sessions, each continueSession 0 or 1.
            let n = 1 + usize::from(inp.u8() % 3);
            let auths: Vec<Auth> = (0..n)
                .map(|_| {
                    let h = pick_handle(inp, known);
                    let mut a = Auth::policy(h, inp.bool(), &[]);
                    a.attrs |= inp.u8() & 0xFE;
                    a
                })
                .collect();
            command(CC_GET_RANDOM, &[], &auths, &Buf::new().u16(8).done())
        }
        10 => {
            let h = pick_handle(inp, known);
            if inp.bool() {
                sequence_update(h, b"abc")
            } else {
                sequence_complete(h, b"def")
            }
        }
        11 => {
            // Raw bytes, size field fixed up.
            let n = usize::from(inp.u8());
            let mut v = Buf::new().u16(0x8001).u32(0).bytes(inp.bytes(n)).done();
            if v.len() < 10 {
                v.resize(10, 0);
            }
            let len = v.len() as u32;
            v[2..6].copy_from_slice(&len.to_be_bytes());
            if inp.bool() {
                v[1] = 2;
            }
            v
        }
        12 => {
            // GetCapability(handles) with an authorization area (not synthesized by the RM).
            let prop = pick_handle(inp, known);
            let params = Buf::new().u32(CAP_HANDLES).u32(prop).u32(16).done();
            command(CC_GET_CAPABILITY, &[], &[Auth::pw(&[])], &params)
        }
        _ => {
            // The fake's vendor command, one handle.
            command(fake::CC_VENDOR, &[pick_handle(inp, known)], &[], &[])
        }
    }
}

/// Handles a space may name: its objects, its sessions, abandoned sessions.
pub fn known_handles(rm: &Rm, space: &tpmrs_proto::Space) -> Vec<u32> {
    let mut v: Vec<u32> = space.objects().iter().map(|o| o.vhandle).collect();
    for e in rm.sessions().entries() {
        if e.owner == Some(space.id()) || e.owner.is_none() {
            v.push(e.handle);
        }
    }
    v
}
