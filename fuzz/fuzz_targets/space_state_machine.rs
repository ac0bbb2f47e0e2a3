// SPDX-License-Identifier: GPL-2.0
//! space_state_machine: arbitrary sequences of operations on one `Rm` with three spaces,
//! against the fake TPM of the integration tests with faults injected by the input (any
//! response code, transport errors before or after executing, malformed responses, the
//! transport down), sessions created behind the RM's back, and a clock.
//!
//! Input: `[config x3]` then operations `[op] [space] [arguments...]` until the input ends
//! (at most 200). Operations: client commands from the menu of `tpmrs_fuzz::menu_command`
//! (CreatePrimary, HashSequenceStart, StartAuthSession, FlushContext, ContextSave and
//! ContextLoad of known or unknown handles, GetCapability, PolicyPassword / Sign / GetRandom
//! with sessions and continueSession 0 or 1, sequences, raw commands), a StartAuthSession
//! that queues on exhaustion (`wait_begin`), `wait_step` (and the retry it allows),
//! `wait_end`, `evict_for`, closing a space and opening a new one, time passing, faults,
//! and, with resident contexts on (a bit of the configuration), a suspend (`Rm::suspend`,
//! then a TPM Resume, `Rm::resume`) and contexts lost behind the RM's back (a resident
//! object or session flushed, or a TPM Resume without the suspend).
//!
//! After every step: nothing panicked, responses are well framed, the stats gauges match
//! the registry, no session belongs to a closed space, residents stay within the loaded
//! slots less the reserves, and, unless an answer contradicted the fake's state (see
//! `tpmrs_fuzz::rc_misleads`), a context was lost behind the RM's back, or a flush is
//! queued, nothing of the RM is loaded in the TPM between commands but its residents (and
//! what a failed save left loaded) and every session the TPM holds is tracked.
//! At the end (faults cleared, every waiter ended, every space closed) the TPM holds no
//! object and exactly the RM's abandoned sessions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpmrs_fuzz::fake::FakeTpm;
use tpmrs_fuzz::{
    check_all_closed, check_response, check_rm, check_tpm_matches_rm, known_handles, marshal,
    menu_command, pick_rc, trace, Fault, FuzzTpm, Input,
};
use tpmrs_proto::{
    Config, Outcome, Request, Rm, RmError, Space, Step, Ticket, WaitStep, TPM_BUFSIZE,
};

const SPACES: usize = 3;
/// The uid that opens each space (two files of one user, one of another); reopened, a
/// space may be root's.
const UIDS: [u32; SPACES] = [1000, 1000, 1001];
const MAX_OPS: usize = 200;
const MAX_TICKETS: usize = 4;

/// Command codes faults are aimed at.
const FAULT_CCS: &[u32] = &[
    0x161, // ContextLoad
    0x162, // ContextSave
    0x165, // FlushContext
    0x176, // StartAuthSession
    0x131, // CreatePrimary
    0x17A, // GetCapability
    0x18C, // PolicyPassword
    0x15D, // Sign
    0x17B, // GetRandom
    0x186, // HashSequenceStart
    0x15C, // SequenceUpdate
    0x13E, // SequenceComplete
];

struct Sm {
    rm: Rm,
    tpm: FuzzTpm,
    now: u64,
    rsp: Vec<u8>,
    spaces: [Space; SPACES],
    /// Waiting commands: (space slot, ticket, a policy session?).
    tickets: Vec<(usize, Ticket, bool)>,
    blobs: Vec<Vec<u8>>,
    /// The TPM's answer behind the last `Outcome::Exhausted`.
    exhausted_rc: Option<u32>,
}

impl Sm {
    fn ids(&self) -> [u64; SPACES] {
        [
            self.spaces[0].id(),
            self.spaces[1].id(),
            self.spaces[2].id(),
        ]
    }

    fn check(&self) {
        check_rm(&self.rm, &self.ids());
        if !self.tpm.fake.down {
            check_tpm_matches_rm(&self.rm, &self.tpm, &self.spaces.each_ref());
        }
    }

    /// Runs a client command in space `slot` (as the waiter `ticket`, if any).
    fn exec(&mut self, slot: usize, cmd: &[u8], ticket: Option<usize>) -> Result<usize, RmError> {
        self.now += 1_000;
        trace!(
            "space {slot} (id {}): command cc {:#x} {:02x?}{}",
            self.spaces[slot].id(),
            marshal::cc_of(cmd),
            &cmd[10..cmd.len().min(30)],
            if ticket.is_some() { " with ticket" } else { "" }
        );
        let t = ticket.map(|i| &self.tickets[i].1);
        let r = self.rm.execute(
            &mut self.spaces[slot],
            &mut self.tpm,
            self.now,
            t,
            cmd,
            &mut self.rsp,
        );
        if let Ok(Outcome::Exhausted { rc }) = r {
            self.exhausted_rc = rc;
        }
        let r = r.and_then(|o| o.response());
        trace!("  -> {:x?}", r.map(|n| marshal::rc(&self.rsp[..n])));
        if let Ok(n) = r {
            check_response(&self.rsp, n);
            if marshal::cc_of(cmd) == marshal::CC_CONTEXT_SAVE
                && marshal::rc(&self.rsp[..n]) == 0
                && n > 10
            {
                if self.blobs.len() >= 8 {
                    self.blobs.remove(0);
                }
                self.blobs.push(self.rsp[10..n].to_vec());
            }
        }
        r
    }

    fn end_ticket(&mut self, i: usize) {
        let (_, t, _) = self.tickets.remove(i);
        self.rm.wait_end(t, self.now);
        self.rm.take_wakeup();
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let op = inp.u8();
        let slot = usize::from(inp.u8()) % SPACES;
        trace!("op {} space {slot} at {} ns", op % 25, self.now);
        match op % 25 {
            // Client commands from the menu (weighted: most operations are commands).
            k @ 0..=13 => {
                let known = known_handles(&self.rm, &self.spaces[slot]);
                let cmd = menu_command(inp, k, &known, &self.blobs);
                let _ = self.exec(slot, &cmd, None);
            }
            // StartAuthSession that queues when the TPM is out of session slots.
            14 => {
                let policy = inp.bool();
                let cmd = start_session(policy);
                if let Err(RmError::SessionsExhausted) = self.exec(slot, &cmd, None) {
                    if self.tickets.len() < MAX_TICKETS && inp.u8() < 0xE0 {
                        if let Ok(t) =
                            self.rm
                                .wait_begin(&self.spaces[slot], self.now, self.exhausted_rc)
                        {
                            self.tickets.push((slot, t, policy));
                        }
                    }
                }
            }
            // wait_step, and the retry it allows.
            15 => {
                if self.tickets.is_empty() {
                    return;
                }
                let i = usize::from(inp.u8()) % self.tickets.len();
                let r = self
                    .rm
                    .wait_step(&self.tickets[i].1, &mut self.tpm, self.now);
                match r {
                    Ok(WaitStep::Retry) => {
                        let (slot, _, policy) = self.tickets[i];
                        let r = self.exec(slot, &start_session(policy), Some(i));
                        if r != Err(RmError::SessionsExhausted) || inp.u8() >= 0xC0 {
                            self.end_ticket(i);
                        }
                    }
                    Ok(WaitStep::Sleep { until_ns }) => {
                        assert!(
                            until_ns > self.now || until_ns == u64::MAX,
                            "sleep until the past"
                        );
                        if inp.bool() {
                            self.now = until_ns.min(self.now + 10_000_000_000);
                        }
                    }
                    Err(_) => {
                        if inp.bool() {
                            self.end_ticket(i);
                        }
                    }
                }
                self.rm.take_wakeup();
            }
            16 => {
                if !self.tickets.is_empty() {
                    let i = usize::from(inp.u8()) % self.tickets.len();
                    self.end_ticket(i);
                }
            }
            17 => {
                if !self.tickets.is_empty() {
                    let i = usize::from(inp.u8()) % self.tickets.len();
                    let _ = self
                        .rm
                        .evict_for(&self.tickets[i].1, &mut self.tpm, self.now);
                    self.rm.take_wakeup();
                }
            }
            // Close a space and open a new one in its place. Its waiters end first (as the
            // glue does), unless the input says to leave them stale.
            18 => {
                let b = inp.u8();
                let stale = b >= 0xF0;
                // Reopened by its usual uid, or by root.
                let uid = if b & 1 == 1 { 0 } else { UIDS[slot] };
                if !stale {
                    while let Some(i) = self.tickets.iter().position(|t| t.0 == slot) {
                        self.end_ticket(i);
                    }
                }
                trace!("close space {slot} (id {})", self.spaces[slot].id());
                self.rm
                    .close_space(&mut self.spaces[slot], &mut self.tpm, self.now);
                self.rm.take_wakeup();
                self.spaces[slot] = self.rm.new_space(uid).unwrap();
                if stale {
                    // Stale tickets: wait_step must not spin, wait_end must be harmless.
                    while let Some(i) = self.tickets.iter().position(|t| t.0 == slot) {
                        let r = self
                            .rm
                            .wait_step(&self.tickets[i].1, &mut self.tpm, self.now);
                        if let Ok(WaitStep::Sleep { until_ns }) = r {
                            assert!(until_ns > self.now);
                        } else {
                            panic!("stale ticket answered {r:?}");
                        }
                        self.end_ticket(i);
                    }
                }
            }
            // Time passes.
            19 => {
                self.now += match inp.u8() % 6 {
                    0 => 1_000,
                    1 => 1_000_000,
                    2 => 100_000_000,
                    3 => 1_000_000_000,
                    4 => 2_500_000_000,
                    _ => u64::from(inp.u32()),
                };
            }
            // A fault on a coming command.
            20 => {
                let cc = inp.choose(FAULT_CCS);
                let skip = inp.u8() % 3;
                let fault = match inp.u8() % 8 {
                    0..=3 => Fault::Rc(pick_rc(inp)),
                    4 => Fault::Transport(-5),
                    5 => Fault::TransportAfter(-62),
                    6 => Fault::NotSent(-12),
                    _ => Fault::Garbage,
                };
                self.tpm.fail(cc, skip, fault);
            }
            // The transport goes down / comes back.
            21 => self.tpm.fake.down = inp.bool(),
            // Sessions behind the RM's back: one more (saved or loaded), or one fewer.
            22 => {
                if inp.bool() {
                    self.tpm.add_external(inp.bool());
                } else {
                    let i = usize::from(inp.u8());
                    self.tpm.drop_external(&self.rm, i);
                }
            }
            // A whole StartAuthSession through the wait protocol (`Rm::step`, the loop of
            // the glue), sleeping by moving the clock, for at most a few steps.
            23 => {
                let cmd = start_session(inp.bool());
                let steps = 1 + inp.u8() % 8;
                let mut req = Request::new();
                for _ in 0..steps {
                    let step = self.rm.step(
                        &mut req,
                        &mut self.spaces[slot],
                        &mut self.tpm,
                        self.now,
                        &cmd,
                        &mut self.rsp,
                    );
                    self.rm.take_wakeup();
                    match step {
                        Step::Done(r) => {
                            if let Ok(n) = r {
                                check_response(&self.rsp, n);
                            }
                            break;
                        }
                        Step::Sleep { until_ns } => {
                            assert!(until_ns > self.now, "sleep until the past");
                            self.now = until_ns.min(self.now + 10_000_000_000);
                        }
                    }
                }
                self.rm.end_request(req, self.now);
                self.rm.take_wakeup();
            }
            // Suspend and resume: everything resident is saved first, so a TPM Resume
            // (TPM2_Shutdown(STATE), power cycle, TPM2_Startup(STATE)) loses nothing of ours.
            // Or contexts lost behind the RM's back: a resident object or session flushed
            // (through /dev/tpm0), or a TPM Resume without the suspend path.
            24 => match inp.u8() {
                0..=0x3F => {
                    self.rm.suspend(&mut self.tpm);
                    self.rm.take_wakeup();
                    if !self.tpm.misled && !tpmrs_fuzz::rm_has_pending(&self.rm) {
                        assert!(self.rm.resident_objects().is_empty());
                        assert_eq!(self.rm.stats().resident_sessions, 0);
                    }
                    if inp.bool() {
                        self.tpm.resume_behind_rm(&self.rm);
                    }
                    self.rm.resume();
                }
                0x40..=0x5F => {
                    let k = inp.u8();
                    self.tpm.lose(&self.rm, k);
                }
                _ => {
                    self.rm.take_wakeup();
                }
            },
            // The glue's wake-up poll.
            _ => {
                self.rm.take_wakeup();
            }
        }
    }
}

fn start_session(policy: bool) -> Vec<u8> {
    let kind = if policy {
        marshal::SE_POLICY
    } else {
        marshal::SE_HMAC
    };
    marshal::start_auth_session(kind, &[5; 16])
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (c0, c1, c2) = (inp.u8(), inp.u8(), inp.u8());
    let config = Config {
        max_objects: 1 + usize::from(c0 & 3),
        max_sessions: 1 + usize::from((c0 >> 2) & 3),
        max_abandoned: usize::from((c0 >> 4) & 3),
        session_timeout_ns: [2_000_000_000, 1_000_000, 1][usize::from(c0 >> 6) % 3],
        retry_interval_ns: [100_000_000, 1_000][usize::from(c1 & 1)],
        session_headroom: usize::from((c2 >> 3) & 3),
        resident: c1 & 0x40 != 0,
        reserve_objects: usize::from(c1 >> 7),
        reserve_sessions: usize::from(c1 >> 7),
        // Every bit of the three is taken: a parity of them, nearly independent of each.
        fair_share_by_uid: (c0 ^ c1 ^ c2) & 1 == 0,
    };
    let mut fake = FakeTpm::new();
    fake.max_loaded_objects = 2 + usize::from(c2 >> 7);
    fake.max_sessions = 2 + usize::from((c1 >> 1) & 7);
    fake.max_loaded_sessions = 1 + usize::from((c1 >> 4) & 3);
    fake.gap_max = match c2 & 7 {
        0..=3 => None,
        g => Some(u64::from(g)),
    };
    fake.page = 1 + usize::from((c2 >> 5) & 3);
    let mut rm = Rm::new(config).unwrap();
    let mut tpm = FuzzTpm::new(fake);
    rm.init(&mut tpm).unwrap();
    let spaces = UIDS.map(|uid| rm.new_space(uid).unwrap());
    let mut sm = Sm {
        rm,
        tpm,
        now: 1_000,
        rsp: vec![0; TPM_BUFSIZE],
        spaces,
        tickets: Vec::new(),
        blobs: Vec::new(),
        exhausted_rc: None,
    };

    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        sm.step(&mut inp);
        trace!(
            "  registry {:x?} residents {:x?} fake loaded sessions {} objects {}",
            sm.rm.sessions().entries().iter().map(|e| (e.handle, e.owner, e.state.is_loaded(), e.resident)).collect::<Vec<_>>(),
            sm.rm.resident_objects().iter().map(|o| (o.space, o.phandle)).collect::<Vec<_>>(),
            sm.tpm.fake.loaded_sessions(),
            sm.tpm.fake.loaded_objects()
        );
        sm.tpm.sync_externals(&sm.rm);
        sm.check();
    }

    // The end: a healthy TPM, every waiter ended, every space closed, then one more close
    // (of a fresh space) so that flushes queued by the last close are retried.
    trace!("end: faults cleared, closing every space");
    sm.tpm.clear_faults();
    while !sm.tickets.is_empty() {
        sm.end_ticket(0);
    }
    let ids = sm.ids();
    for i in 0..SPACES {
        sm.rm.close_space(&mut sm.spaces[i], &mut sm.tpm, sm.now);
        check_rm(&sm.rm, &ids[i + 1..]);
    }
    let mut extra = sm.rm.new_space(0).unwrap();
    sm.rm.close_space(&mut extra, &mut sm.tpm, sm.now);
    sm.tpm.sync_externals(&sm.rm);
    check_all_closed(&sm.rm, &sm.tpm);
});
