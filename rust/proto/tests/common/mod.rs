// SPDX-License-Identifier: GPL-2.0
//! Shared helpers of the integration tests: command marshaling, response parsing, a fake TPM
//! with fault injection, and a real swtpm reached over TCP.
#![allow(dead_code)]

pub mod fake;
pub mod invariants;
pub mod marshal;
pub mod rc;
pub mod sim;
pub mod swtpm;
pub mod workload;

use tpmrs_proto::{Config, Outcome, Request, Rm, RmError, Space, Step, Ticket, Tpm, TPM_BUFSIZE};

/// The uid that opens the spaces of [`Harness::space`] (a user, not root).
pub const UID: u32 = 1000;

/// A resource manager, a TPM and helpers to run client commands.
pub struct Harness<T: Tpm> {
    pub rm: Rm,
    pub tpm: T,
    pub now: u64,
    /// The TPM's answer behind the last `Outcome::Exhausted` (for `Rm::wait_begin`).
    pub exhausted_rc: Option<u32>,
    /// Spaces made by `space` and not closed by `close`: the invariants are checked against
    /// them after every command.
    pub open: Vec<u64>,
}

impl<T: Tpm> Harness<T> {
    pub fn new(tpm: T, config: Config) -> Self {
        let mut rm = Rm::new(config).expect("Rm::new");
        let mut tpm = tpm;
        rm.init(&mut tpm).expect("Rm::init");
        Harness {
            rm,
            tpm,
            now: 1_000,
            exhausted_rc: None,
            open: Vec::new(),
        }
    }

    /// A space opened by [`UID`].
    pub fn space(&mut self) -> Space {
        self.space_as(UID)
    }

    /// A space opened by `uid`.
    pub fn space_as(&mut self, uid: u32) -> Space {
        let s = self.rm.new_space(uid).expect("new_space");
        self.open.push(s.id());
        s
    }

    /// The invariants of `invariants::check_rm`, and a well-framed response.
    fn check(&self, r: &Result<Vec<u8>, RmError>) {
        if let Ok(rsp) = r {
            invariants::check_response(rsp, rsp.len());
        }
        invariants::check_rm(&self.rm, &self.open);
    }

    /// Runs one client command; returns the response bytes or the error
    /// (`RmError::SessionsExhausted` for `Outcome::Exhausted`).
    pub fn exec(&mut self, space: &mut Space, cmd: &[u8]) -> Result<Vec<u8>, RmError> {
        self.exec_as(space, None, cmd)
    }

    /// Runs one client command as the waiter `ticket` (if any).
    pub fn exec_as(
        &mut self,
        space: &mut Space,
        ticket: Option<&Ticket>,
        cmd: &[u8],
    ) -> Result<Vec<u8>, RmError> {
        let mut rsp = vec![0u8; TPM_BUFSIZE];
        self.now += 1_000_000;
        let outcome = match self
            .rm
            .execute(space, &mut self.tpm, self.now, ticket, cmd, &mut rsp)
        {
            Ok(o) => o,
            Err(e) => {
                self.check(&Err(e));
                return Err(e);
            }
        };
        if let Outcome::Exhausted { rc } = outcome {
            self.exhausted_rc = rc;
        }
        let r = outcome.response().map(|n| {
            rsp.truncate(n);
            rsp
        });
        self.check(&r);
        r
    }

    /// Runs one client command to its end through the wait protocol (`Rm::step`), sleeping
    /// by moving the clock; returns its result and how long it waited (ns).
    pub fn run(&mut self, space: &mut Space, cmd: &[u8]) -> (Result<Vec<u8>, RmError>, u64) {
        let mut rsp = vec![0u8; TPM_BUFSIZE];
        let mut req = Request::new();
        self.now += 1_000_000;
        let start = self.now;
        let r = loop {
            let step = self
                .rm
                .step(&mut req, space, &mut self.tpm, self.now, cmd, &mut rsp);
            self.rm.take_wakeup();
            match step {
                Step::Done(r) => break r,
                Step::Sleep { until_ns } => {
                    assert!(until_ns > self.now, "a sleep must move time");
                    self.now = until_ns;
                }
            }
        };
        let waited = if req.ticket().is_some() {
            self.now - start
        } else {
            0
        };
        self.rm.end_request(req, self.now);
        self.rm.take_wakeup();
        let r = r.map(|n| {
            rsp.truncate(n);
            rsp
        });
        self.check(&r);
        (r, waited)
    }

    /// Runs one client command that must get a response; returns it.
    pub fn ok(&mut self, space: &mut Space, cmd: &[u8]) -> Vec<u8> {
        self.exec(space, cmd).expect("execute returned an errno")
    }

    /// Like `ok`, and the response code must be 0.
    pub fn success(&mut self, space: &mut Space, cmd: &[u8]) -> Vec<u8> {
        let r = self.ok(space, cmd);
        assert_eq!(
            marshal::rc(&r),
            0,
            "rc {:#x} for cc {:#x}",
            marshal::rc(&r),
            marshal::cc_of(cmd)
        );
        r
    }

    pub fn tpm_commands(&self) -> u64 {
        self.rm.stats().tpm_commands
    }

    pub fn close(&mut self, space: &mut Space) {
        self.rm.close_space(space, &mut self.tpm, self.now);
        self.open.retain(|id| *id != space.id());
        invariants::check_rm(&self.rm, &self.open);
    }
}

/// A small deterministic generator (xorshift) for the simulations: `rnd(n)` is in `0..n`,
/// the same sequence for the same `seed`.
pub fn seeded_rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}
