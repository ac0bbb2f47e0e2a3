// SPDX-License-Identifier: GPL-2.0
//! The traffic workloads of issue 21: clients that each hold one signing key and one HMAC
//! session and sign in turns, counted in TPM commands per client command.

use super::marshal::*;
use super::Harness;
use tpmrs_proto::{Space, Tpm};

/// A client with one ECC signing key (auth `KEY_AUTH`) and one HMAC session, signing.
pub struct Signer {
    pub space: Space,
    pub key: u32,
    pub session: u32,
    /// The key's Name and the session's last nonceTPM: a real TPM checks the HMAC.
    name: Vec<u8>,
    nonce_tpm: Vec<u8>,
    /// The TPM checks HMACs (swtpm): compute them; the fake TPM does not.
    real: bool,
    n: u8,
    /// Client commands sent so far.
    pub commands: u64,
}

impl Signer {
    /// Opens a space, creates the key and starts the session (two client commands).
    pub fn new<T: Tpm>(h: &mut Harness<T>, real: bool) -> Signer {
        let mut space = h.space();
        let r = h.success(
            &mut space,
            &create_primary(&ecc_signing_public(&policy_password_digest())),
        );
        let key = rhandle(&r);
        let name = if real {
            create_primary_name(&r)
        } else {
            vec![]
        };
        let r = h.success(&mut space, &start_auth_session(SE_HMAC, &[2; 16]));
        let session = rhandle(&r);
        let nonce_tpm = if real {
            start_auth_session_nonce(&r)
        } else {
            vec![]
        };
        Signer {
            space,
            key,
            session,
            name,
            nonce_tpm,
            real,
            n: 0,
            commands: 2,
        }
    }

    /// Starts a new HMAC session in place of the one it had (one client command).
    pub fn restart_session<T: Tpm>(&mut self, h: &mut Harness<T>) {
        let r = h.success(&mut self.space, &start_auth_session(SE_HMAC, &[4; 16]));
        self.session = rhandle(&r);
        if self.real {
            self.nonce_tpm = start_auth_session_nonce(&r);
        }
        self.commands += 1;
    }

    /// The Sign command with the session's authorization.
    pub fn sign_command(&mut self) -> Vec<u8> {
        self.n = self.n.wrapping_add(1);
        let params = sign_params();
        let auth = if self.real {
            hmac_auth(
                self.session,
                &[self.n; 16],
                &self.nonce_tpm,
                1,
                KEY_AUTH,
                &cp_hash(CC_SIGN, &[&self.name], &params),
            )
        } else {
            Auth::policy(self.session, true, KEY_AUTH)
        };
        command(CC_SIGN, &[self.key], &[auth], &params)
    }

    /// The response to the last `sign_command`: notes the session's new nonce.
    pub fn signed(&mut self, r: &[u8]) {
        if self.real && rc(r) == 0 {
            self.nonce_tpm = auth_response_nonce(r, 0);
        }
    }

    /// One signature, which must succeed.
    pub fn sign<T: Tpm>(&mut self, h: &mut Harness<T>) {
        let cmd = self.sign_command();
        let r = h.success(&mut self.space, &cmd);
        self.signed(&r);
        self.commands += 1;
    }

    /// Flushes the session and the key, then closes the space (two client commands).
    pub fn finish<T: Tpm>(mut self, h: &mut Harness<T>) -> u64 {
        h.success(&mut self.space, &flush_context(self.session));
        h.success(&mut self.space, &flush_context(self.key));
        h.close(&mut self.space);
        self.commands + 2
    }
}

/// `clients` clients each sign `signs` times, taking turns (one signature each per round);
/// returns (client commands, TPM commands) for the whole run, set-up and close included.
pub fn taking_turns<T: Tpm>(
    h: &mut Harness<T>,
    clients: usize,
    signs: usize,
    real: bool,
) -> (u64, u64) {
    let before = h.tpm_commands();
    let mut all: Vec<Signer> = (0..clients).map(|_| Signer::new(h, real)).collect();
    for _ in 0..signs {
        for c in all.iter_mut() {
            c.sign(h);
        }
    }
    let mut commands = 0;
    for c in all {
        commands += c.finish(h);
    }
    (commands, h.tpm_commands() - before)
}
