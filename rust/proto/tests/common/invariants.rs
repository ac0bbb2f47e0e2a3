// SPDX-License-Identifier: GPL-2.0
//! Invariants of the resource manager that hold after every call, shared by the host tests
//! (the `Harness` checks them after every command) and the fuzzers.

use tpmrs_proto::constants::is_session_handle;
use tpmrs_proto::response::ResponseHeader;
use tpmrs_proto::sessions::{same_session, SessionState};
use tpmrs_proto::Rm;

/// A response the resource manager hands to a client must be well framed.
pub fn check_response(rsp: &[u8], n: usize) {
    assert!(n <= rsp.len(), "response length {n} beyond the buffer");
    let r = &rsp[..n];
    if let Err(e) = ResponseHeader::parse(r) {
        panic!(
            "RM returned a malformed response ({e:?}): {:02x?}",
            &r[..n.min(32)]
        );
    }
}

/// Invariants of the resource manager's bookkeeping that hold after every call.
/// `open` lists the ids of the spaces not closed.
pub fn check_rm(rm: &Rm, open: &[u64]) {
    let s = rm.stats();
    let reg = rm.sessions();
    assert_eq!(s.sessions, reg.live_count() as u64, "stats.sessions gauge");
    assert_eq!(
        s.abandoned,
        reg.abandoned_count() as u64,
        "stats.abandoned gauge"
    );
    assert_eq!(
        s.waiting,
        rm.scheduler().len() as u64,
        "stats.waiting gauge"
    );
    assert!(
        reg.abandoned_count() <= rm.config().max_abandoned,
        "{} abandoned sessions, max {}",
        reg.abandoned_count(),
        rm.config().max_abandoned
    );
    // Residents (`Config::resident`): of open spaces, within the loaded slots less the
    // reserves once a command is over (or none left to evict), sessions with a spare.
    let (_, (objects, sessions)) = rm.loaded_slots();
    let residents = rm.resident_objects();
    assert_eq!(
        s.resident_objects,
        residents.len() as u64,
        "resident_objects gauge"
    );
    assert!(
        residents.len() <= objects,
        "{} resident objects, budget {objects}",
        residents.len()
    );
    for (i, o) in residents.iter().enumerate() {
        assert!(
            open.contains(&o.space),
            "resident object of closed space {}",
            o.space
        );
        for p in &residents[i + 1..] {
            assert_ne!(o.phandle, p.phandle, "two residents under one TPM handle");
            assert!(
                o.space != p.space || o.vhandle != p.vhandle,
                "resident twice"
            );
        }
    }
    assert!(
        reg.resident_count() == 0 || reg.loaded_count() <= sessions,
        "{} sessions loaded ({} resident), budget {sessions}",
        reg.loaded_count(),
        reg.resident_count()
    );
    assert_eq!(s.resident_sessions, reg.resident_count() as u64);
    let entries = reg.entries();
    for e in entries.iter().filter(|e| e.is_resident()) {
        assert!(
            e.owner.is_some(),
            "resident session {:#x} has no owner",
            e.handle
        );
        assert!(
            e.spare.is_some(),
            "resident session {:#x} has no spare",
            e.handle
        );
    }
    for (i, e) in entries.iter().enumerate() {
        assert!(
            is_session_handle(e.handle),
            "registry holds non-session handle {:#x}",
            e.handle
        );
        if let Some(o) = e.owner {
            assert!(
                open.contains(&o),
                "session {:#x} owned by closed space {o}",
                e.handle
            );
            assert!(
                e.is_live(),
                "flush-pending session {:#x} has an owner",
                e.handle
            );
        }
        for f in &entries[i + 1..] {
            assert!(
                !same_session(e.handle, f.handle),
                "two registry entries for one slot: {:#x} {:#x}",
                e.handle,
                f.handle
            );
        }
    }
}

/// Whether the RM may legitimately have TPM state in flight (queued flushes).
pub fn rm_has_pending(rm: &Rm) -> bool {
    !rm.pending_flushes().is_empty()
        || !rm.unverified_flushes().is_empty()
        || rm
            .sessions()
            .entries()
            .iter()
            .any(|e| matches!(e.state, SessionState::FlushPending))
}
