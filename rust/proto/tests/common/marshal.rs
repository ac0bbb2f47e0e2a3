// SPDX-License-Identifier: GPL-2.0
//! Small TPM 2.0 marshaling helpers for building test commands and reading responses.

use sha2::{Digest, Sha256};

pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;
pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_NULL: u32 = 0x4000_0007;
pub const RS_PW: u32 = 0x4000_0009;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_NULL: u16 = 0x0010;

pub const CC_CREATE_PRIMARY: u32 = 0x131;
pub const CC_CREATE: u32 = 0x153;
pub const CC_LOAD: u32 = 0x157;
pub const CC_SIGN: u32 = 0x15D;
pub const CC_SEQUENCE_UPDATE: u32 = 0x15C;
pub const CC_SEQUENCE_COMPLETE: u32 = 0x13E;
pub const CC_HASH_SEQUENCE_START: u32 = 0x186;
pub const CC_CONTEXT_LOAD: u32 = 0x161;
pub const CC_CONTEXT_SAVE: u32 = 0x162;
pub const CC_FLUSH_CONTEXT: u32 = 0x165;
pub const CC_START_AUTH_SESSION: u32 = 0x176;
pub const CC_GET_CAPABILITY: u32 = 0x17A;
pub const CC_GET_RANDOM: u32 = 0x17B;
pub const CC_POLICY_PASSWORD: u32 = 0x18C;
pub const CC_POLICY_GET_DIGEST: u32 = 0x189;

pub const CAP_HANDLES: u32 = 1;
pub const SE_HMAC: u8 = 0;
pub const SE_POLICY: u8 = 1;

/// The key password used by the test keys.
pub const KEY_AUTH: &[u8] = b"pw";

/// A command (or any TPM structure) being built.
#[derive(Default, Clone)]
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn new() -> Self {
        Buf(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn b2(self, v: &[u8]) -> Self {
        self.u16(v.len() as u16).bytes(v)
    }
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// One TPMS_AUTH_COMMAND.
#[derive(Clone)]
pub struct Auth {
    pub handle: u32,
    pub nonce: Vec<u8>,
    pub attrs: u8,
    pub hmac: Vec<u8>,
}

impl Auth {
    /// A password session with `auth`.
    pub fn pw(auth: &[u8]) -> Self {
        Auth {
            handle: RS_PW,
            nonce: vec![],
            attrs: 0,
            hmac: auth.to_vec(),
        }
    }
    /// A policy session satisfied by PolicyPassword: the password in clear.
    pub fn policy(handle: u32, continue_session: bool, auth: &[u8]) -> Self {
        Auth {
            handle,
            nonce: vec![],
            attrs: u8::from(continue_session),
            hmac: auth.to_vec(),
        }
    }
}

/// A complete command.
pub fn command(cc: u32, handles: &[u32], auths: &[Auth], params: &[u8]) -> Vec<u8> {
    let tag = if auths.is_empty() {
        ST_NO_SESSIONS
    } else {
        ST_SESSIONS
    };
    let mut b = Buf::new().u16(tag).u32(0).u32(cc);
    for h in handles {
        b = b.u32(*h);
    }
    if !auths.is_empty() {
        let mut a = Buf::new();
        for s in auths {
            a = a.u32(s.handle).b2(&s.nonce).u8(s.attrs).b2(&s.hmac);
        }
        let a = a.done();
        b = b.u32(a.len() as u32).bytes(&a);
    }
    let mut v = b.bytes(params).done();
    let n = v.len() as u32;
    v[2..6].copy_from_slice(&n.to_be_bytes());
    v
}

pub fn rc(rsp: &[u8]) -> u32 {
    u32::from_be_bytes(rsp[6..10].try_into().unwrap())
}

pub fn cc_of(cmd: &[u8]) -> u32 {
    u32::from_be_bytes(cmd[6..10].try_into().unwrap())
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The response handle (first word after the header).
pub fn rhandle(rsp: &[u8]) -> u32 {
    u32_at(rsp, 10)
}

/// A response reader.
pub struct Rd<'a>(pub &'a [u8], pub usize);

impl Rd<'_> {
    pub fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    /// The next `n` bytes; past the end, zeros (and the position then exceeds the length,
    /// which the fake TPM checks: it must survive whatever the RM forwards).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let v = match self.0.get(self.1..self.1.saturating_add(n)) {
            Some(s) => s.to_vec(),
            None => vec![0; n.min(4096)],
        };
        self.1 = self.1.saturating_add(n);
        v
    }
    /// Whether a read went past the end.
    pub fn overrun(&self) -> bool {
        self.1 > self.0.len()
    }
    pub fn b2(&mut self) -> Vec<u8> {
        let n = self.u16() as usize;
        self.bytes(n)
    }
}

pub fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// TPM_CC_PolicyAuthValue: TPM2_PolicyPassword extends the policy with this code too.
pub const CC_POLICY_AUTH_VALUE: u32 = 0x16B;

/// policyDigest after TPM2_PolicyPassword (the same as after TPM2_PolicyAuthValue).
pub fn policy_password_digest() -> Vec<u8> {
    sha256(&[&[0u8; 32], &CC_POLICY_AUTH_VALUE.to_be_bytes()])
}

// objectAttributes
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const USER_WITH_AUTH: u32 = 1 << 6;
const NO_DA: u32 = 1 << 10;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;

/// TPMT_PUBLIC of an ECC P-256 ECDSA signing key (noDA), with `policy` as authPolicy.
pub fn ecc_signing_public(policy: &[u8]) -> Vec<u8> {
    Buf::new()
        .u16(0x0023) // TPM_ALG_ECC
        .u16(ALG_SHA256)
        .u32(FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | NO_DA | SIGN)
        .b2(policy)
        .u16(ALG_NULL) // symmetric
        .u16(0x0018) // TPM_ALG_ECDSA
        .u16(ALG_SHA256)
        .u16(0x0003) // TPM_ECC_NIST_P256
        .u16(ALG_NULL) // kdf
        .b2(&[])
        .b2(&[])
        .done()
}

/// TPMT_PUBLIC of an ECC P-256 storage key (restricted decrypt, AES-128-CFB).
pub fn ecc_storage_public() -> Vec<u8> {
    Buf::new()
        .u16(0x0023)
        .u16(ALG_SHA256)
        .u32(
            FIXED_TPM
                | FIXED_PARENT
                | SENSITIVE_DATA_ORIGIN
                | USER_WITH_AUTH
                | NO_DA
                | RESTRICTED
                | DECRYPT,
        )
        .b2(&[])
        .u16(0x0006) // AES
        .u16(128)
        .u16(0x0043) // CFB
        .u16(ALG_NULL)
        .u16(0x0003)
        .u16(ALG_NULL)
        .b2(&[])
        .b2(&[])
        .done()
}

/// TPMT_PUBLIC of an RSA-2048 RSASSA signing key (noDA).
pub fn rsa_signing_public() -> Vec<u8> {
    Buf::new()
        .u16(0x0001) // TPM_ALG_RSA
        .u16(ALG_SHA256)
        .u32(FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | NO_DA | SIGN)
        .b2(&[])
        .u16(ALG_NULL)
        .u16(0x0014) // RSASSA
        .u16(ALG_SHA256)
        .u16(2048)
        .u32(0)
        .b2(&[])
        .done()
}

fn sensitive_create(auth: &[u8]) -> Vec<u8> {
    let inner = Buf::new().b2(auth).b2(&[]).done();
    Buf::new().b2(&inner).done()
}

/// TPM2_CreatePrimary under the owner hierarchy with `public`; key auth KEY_AUTH.
pub fn create_primary(public: &[u8]) -> Vec<u8> {
    let params = Buf::new()
        .bytes(&sensitive_create(KEY_AUTH))
        .b2(public)
        .b2(&[]) // outsideInfo
        .u32(0) // creationPCR
        .done();
    command(CC_CREATE_PRIMARY, &[RH_OWNER], &[Auth::pw(&[])], &params)
}

/// TPM2_Create under `parent` (auth KEY_AUTH) of an object with `public`; key auth KEY_AUTH.
pub fn create(parent: u32, public: &[u8]) -> Vec<u8> {
    let params = Buf::new()
        .bytes(&sensitive_create(KEY_AUTH))
        .b2(public)
        .b2(&[])
        .u32(0)
        .done();
    command(CC_CREATE, &[parent], &[Auth::pw(KEY_AUTH)], &params)
}

/// (outPrivate, outPublic) of a TPM2_Create response.
pub fn create_outputs(rsp: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rd(rsp, 14);
    let private = r.b2();
    let public = r.b2();
    (private, public)
}

/// TPM2_Load under `parent`.
pub fn load(parent: u32, private: &[u8], public: &[u8]) -> Vec<u8> {
    let params = Buf::new().b2(private).b2(public).done();
    command(CC_LOAD, &[parent], &[Auth::pw(KEY_AUTH)], &params)
}

/// The name in a TPM2_CreatePrimary response.
pub fn create_primary_name(rsp: &[u8]) -> Vec<u8> {
    // objectHandle, then parameterSize (a TPM_ST_SESSIONS response).
    let mut r = Rd(rsp, 18);
    r.b2(); // outPublic
    r.b2(); // creationData
    r.b2(); // creationHash
    r.u16(); // ticket tag
    r.u32(); // hierarchy
    r.b2(); // digest
    r.b2()
}

/// TPM2_StartAuthSession, unbound and unsalted.
pub fn start_auth_session(kind: u8, nonce: &[u8]) -> Vec<u8> {
    let params = Buf::new()
        .b2(nonce)
        .b2(&[])
        .u8(kind)
        .u16(ALG_NULL)
        .u16(ALG_SHA256)
        .done();
    command(CC_START_AUTH_SESSION, &[RH_NULL, RH_NULL], &[], &params)
}

/// nonceTPM of a StartAuthSession response.
pub fn start_auth_session_nonce(rsp: &[u8]) -> Vec<u8> {
    Rd(rsp, 14).b2()
}

pub fn policy_password(session: u32) -> Vec<u8> {
    command(CC_POLICY_PASSWORD, &[session], &[], &[])
}

/// Sign parameters: a SHA-256 digest, the key's scheme, a NULL ticket.
pub fn sign_params() -> Vec<u8> {
    Buf::new()
        .b2(&[0x5a; 32])
        .u16(ALG_NULL)
        .u16(0x8024) // TPM_ST_HASHCHECK
        .u32(RH_NULL)
        .b2(&[])
        .done()
}

pub fn sign(key: u32, auth: Auth) -> Vec<u8> {
    command(CC_SIGN, &[key], &[auth], &sign_params())
}

pub fn get_random(n: u16) -> Vec<u8> {
    command(CC_GET_RANDOM, &[], &[], &Buf::new().u16(n).done())
}

pub fn context_save(handle: u32) -> Vec<u8> {
    command(CC_CONTEXT_SAVE, &[handle], &[], &[])
}

/// The TPMS_CONTEXT of a ContextSave response.
pub fn context_save_blob(rsp: &[u8]) -> Vec<u8> {
    rsp[10..].to_vec()
}

pub fn context_load(blob: &[u8]) -> Vec<u8> {
    command(CC_CONTEXT_LOAD, &[], &[], blob)
}

pub fn flush_context(handle: u32) -> Vec<u8> {
    command(CC_FLUSH_CONTEXT, &[], &[], &Buf::new().u32(handle).done())
}

pub fn get_capability(cap: u32, property: u32, count: u32) -> Vec<u8> {
    command(
        CC_GET_CAPABILITY,
        &[],
        &[],
        &Buf::new().u32(cap).u32(property).u32(count).done(),
    )
}

/// (moreData, handles) of a TPM_CAP_HANDLES response.
pub fn handles_of(rsp: &[u8]) -> (u8, Vec<u32>) {
    assert_eq!(rc(rsp), 0);
    let mut r = Rd(rsp, 10);
    let more = r.u8();
    assert_eq!(r.u32(), CAP_HANDLES);
    let n = r.u32();
    let v = (0..n).map(|_| r.u32()).collect();
    assert_eq!(r.1, rsp.len());
    (more, v)
}

pub fn hash_sequence_start() -> Vec<u8> {
    command(
        CC_HASH_SEQUENCE_START,
        &[],
        &[],
        &Buf::new().b2(&[]).u16(ALG_SHA256).done(),
    )
}

pub fn sequence_update(seq: u32, data: &[u8]) -> Vec<u8> {
    command(
        CC_SEQUENCE_UPDATE,
        &[seq],
        &[Auth::pw(&[])],
        &Buf::new().b2(data).done(),
    )
}

pub fn sequence_complete(seq: u32, data: &[u8]) -> Vec<u8> {
    command(
        CC_SEQUENCE_COMPLETE,
        &[seq],
        &[Auth::pw(&[])],
        &Buf::new().b2(data).u32(RH_NULL).done(),
    )
}

/// The digest of a SequenceComplete response.
pub fn sequence_complete_digest(rsp: &[u8]) -> Vec<u8> {
    Rd(rsp, 14).b2()
}

/// nonceTPM in the first TPMS_AUTH_RESPONSE of a TPM_ST_SESSIONS response with
/// `handles` response handles.
pub fn auth_response_nonce(rsp: &[u8], handles: usize) -> Vec<u8> {
    let at = 10 + 4 * handles;
    let param_size = u32_at(rsp, at) as usize;
    Rd(rsp, at + 4 + param_size).b2()
}

/// cpHash of a command: H(commandCode || names || parameters).
pub fn cp_hash(cc: u32, names: &[&[u8]], params: &[u8]) -> Vec<u8> {
    let mut cp = Sha256::new();
    cp.update(cc.to_be_bytes());
    for n in names {
        cp.update(n);
    }
    cp.update(params);
    cp.finalize().to_vec()
}

/// An HMAC session authorization (unbound, unsalted: the HMAC key is the entity's
/// authValue) for a command with `cp_hash`.
pub fn hmac_auth(
    session: u32,
    nonce_caller: &[u8],
    nonce_tpm: &[u8],
    attrs: u8,
    auth_value: &[u8],
    cp_hash: &[u8],
) -> Auth {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(auth_value).unwrap();
    mac.update(cp_hash);
    mac.update(nonce_caller);
    mac.update(nonce_tpm);
    mac.update(&[attrs]);
    Auth {
        handle: session,
        nonce: nonce_caller.to_vec(),
        attrs,
        hmac: mac.finalize().into_bytes().to_vec(),
    }
}
