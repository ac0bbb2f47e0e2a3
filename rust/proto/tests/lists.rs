// SPDX-License-Identifier: GPL-2.0
//! GetCapability(TPM_CAP_HANDLES) of sessions, filtered per space and paged by a client
//! (issue 20, item 7): a list filtered down to nothing is asked again in the type the client
//! asked for, and the client never gets the TPM's unfiltered answer. Against the fake TPM
//! and against swtpm (which must be installed: these tests fail, never skip, without it).

mod common;

use common::fake::FakeTpm;
use common::marshal::*;
use common::swtpm::SwTpm;
use common::Harness;
use tpmrs_proto::{Config, Space, Tpm};

const SAVED: u32 = 0x0300_0000;
const LOADED: u32 = 0x0200_0000;
const INDEX: u32 = 0x00FF_FFFF;

fn new_session<T: Tpm>(h: &mut Harness<T>, s: &mut Space, kind: u8) -> u32 {
    rhandle(&h.success(s, &start_auth_session(kind, &[1; 16])))
}

/// Pages `GetCapability(TPM_CAP_HANDLES, first, 1)` one handle at a time, each page from
/// the index after the last handle listed in the type asked for (the TPM lists saved
/// sessions in the HMAC form, 0x02...: `last + 1` would ask for the loaded ones). Returns
/// the indices listed. Every page but the last lists a handle: count 0 with moreData set
/// would leave the client nowhere to go on from.
fn page_one_at_a_time<T: Tpm>(h: &mut Harness<T>, s: &mut Space, first: u32) -> Vec<u32> {
    let mut property = first;
    let mut listed = vec![];
    for _ in 0..100 {
        let (more, l) = handles_of(&h.success(s, &get_capability(CAP_HANDLES, property, 1)));
        assert!(l.len() <= 1, "one asked for, {l:x?} listed");
        if more == 1 {
            assert_eq!(l.len(), 1, "count 0 with moreData set");
        }
        let Some(last) = l.last() else {
            return listed;
        };
        listed.push(last & INDEX);
        if more == 0 {
            return listed;
        }
        property = (first & !INDEX) | ((last & INDEX) + 1);
    }
    panic!("paging did not end: {listed:x?}");
}

/// Four files each hold one saved session; the last pages the saved list one handle at a
/// time and finds its own. Before the fix the list asked again from `last + 1`, 0x02...:
/// the loaded list, empty, so the file got count 0 and moreData clear.
#[test]
fn a_paged_saved_session_list_stays_saved_fake() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    let mut spaces: Vec<Space> = (0..4).map(|_| h.space()).collect();
    let sessions: Vec<u32> = spaces
        .iter_mut()
        .map(|s| new_session(&mut h, s, SE_POLICY))
        .collect();
    let mine = sessions[3];
    assert_eq!(
        page_one_at_a_time(&mut h, &mut spaces[3], SAVED),
        vec![mine & INDEX]
    );
    for s in &mut spaces {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// A file with two sessions among others' pages them one at a time: both come, and nobody
/// else's.
#[test]
fn a_paged_list_gives_every_own_session_and_no_other() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    let (mut a, mut b, mut c) = (h.space(), h.space(), h.space());
    new_session(&mut h, &mut a, SE_POLICY);
    let first = new_session(&mut h, &mut c, SE_HMAC);
    new_session(&mut h, &mut b, SE_POLICY);
    let second = new_session(&mut h, &mut c, SE_POLICY);
    new_session(&mut h, &mut a, SE_HMAC);
    assert_eq!(
        page_one_at_a_time(&mut h, &mut c, SAVED),
        vec![first & INDEX, second & INDEX]
    );
    // The whole list at once, as `tpm2 getcap handles-saved-session` asks.
    let (more, l) = handles_of(&h.success(&mut c, &get_capability(CAP_HANDLES, SAVED, 254)));
    assert_eq!(more, 0);
    assert_eq!(
        l.iter().map(|x| x & INDEX).collect::<Vec<_>>(),
        vec![first & INDEX, second & INDEX]
    );
    for s in [&mut a, &mut b, &mut c] {
        h.close(s);
    }
    h.tpm.assert_empty();
}

/// A count of 0 asked for: nothing listed, and moreData says whether the file has any
/// (the TPM's moreData counts everyone's).
#[test]
fn a_count_of_zero_says_whether_there_are_any_of_the_files_own() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    let (mut a, mut b) = (h.space(), h.space());
    new_session(&mut h, &mut a, SE_POLICY);
    for (s, more) in [(&mut a, 1), (&mut b, 0)] {
        let r = h.success(s, &get_capability(CAP_HANDLES, SAVED, 0));
        assert_eq!(handles_of(&r), (more, vec![]));
    }
    h.close(&mut a);
    h.close(&mut b);
    h.tpm.assert_empty();
}

/// A TPM that lists one handle per answer and many sessions of others ahead of the file's
/// own: after the last round the file gets an empty list with moreData clear, never the
/// TPM's unfiltered answer. Before the fix, the 16th round's raw answer came back: another
/// user's session handle.
#[test]
fn after_the_last_round_the_list_is_still_filtered() {
    let mut h = Harness::new(FakeTpm::new(), Config::default());
    h.tpm.max_loaded_sessions = 64;
    h.tpm.handle_page = 1;
    let theirs: Vec<u32> = (0..24).map(|_| h.tpm.external_loaded_session()).collect();
    let mut a = h.space();
    for first in [LOADED, SAVED] {
        let before = h.tpm.count(CC_GET_CAPABILITY);
        let (more, l) = handles_of(&h.success(&mut a, &get_capability(CAP_HANDLES, first, 1)));
        assert!(
            l.iter().all(|x| !theirs.contains(x)),
            "{first:#x}: another user's handle listed: {l:x?}"
        );
        assert_eq!((more, l), (0, vec![]), "{first:#x}");
        assert!(h.tpm.count(CC_GET_CAPABILITY) - before <= 16, "bounded");
    }
    h.close(&mut a);
    for t in theirs {
        h.tpm.drop_session(t);
    }
    h.tpm.assert_empty();
}

/// The same four files on swtpm, which lists saved sessions as 0x02..., as the reference
/// implementation does.
#[test]
fn a_paged_saved_session_list_stays_saved_swtpm() {
    let mut h = Harness::new(SwTpm::start(), Config::default());
    let mut spaces: Vec<Space> = (0..4).map(|_| h.space()).collect();
    let sessions: Vec<u32> = spaces
        .iter_mut()
        .map(|s| new_session(&mut h, s, SE_POLICY))
        .collect();
    assert!(
        h.tpm
            .raw_handles(SAVED)
            .iter()
            .all(|x| x & !INDEX == LOADED),
        "swtpm lists saved sessions in the HMAC form"
    );
    let mine = sessions[3];
    assert_eq!(
        page_one_at_a_time(&mut h, &mut spaces[3], SAVED),
        vec![mine & INDEX]
    );
    let mine = sessions[1];
    assert_eq!(
        page_one_at_a_time(&mut h, &mut spaces[1], SAVED),
        vec![mine & INDEX]
    );
    for s in &mut spaces {
        h.close(s);
    }
    h.tpm.assert_empty();
}
