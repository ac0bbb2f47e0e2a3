// SPDX-License-Identifier: GPL-2.0
//! What debugfs shows of the shared state: each open file's counters (`ClientStats`, one line
//! of `/sys/kernel/debug/tpmrs/clients`) and the resource manager's (`stats`). The lock order
//! is the parent's (`device.rs`): `ClientStats::info` and `Shared::stats` are innermost.

use super::Shared;
use crate::proto::SessionState;
use core::sync::atomic::AtomicBool;
use kernel::{
    alloc::KVec,
    new_condvar, new_spinlock,
    prelude::*,
    sync::{Arc, CondVar, SpinLock},
};

/// Who opened a file and what tpmrs did for it: the glue's part of its line in
/// `/sys/kernel/debug/tpmrs/clients` (see [`show_clients`]).
#[derive(Clone, Copy)]
pub(crate) struct ClientInfo {
    /// Process (thread group) id of the opener.
    pub(crate) pid: i32,
    /// Command name of the opener, NUL-padded.
    pub(crate) comm: [u8; 16],
    /// The id of the file's space in the resource manager (0: none yet).
    pub(crate) space_id: u64,
    /// Transient objects the space holds, as of its last command.
    pub(crate) objects: u64,
    /// Commands that waited for a session slot.
    pub(crate) waits: u64,
    /// The longest of those waits (ns).
    pub(crate) longest_wait_ns: u64,
    /// TPM commands sent for this file's commands.
    pub(crate) tpm_commands: u64,
}

/// What of one open file the others see: its counters, and where its command sleeps.
/// Shared by the file and the list in [`Shared`].
#[pin_data]
pub(crate) struct ClientStats {
    /// Innermost lock (see the lock order above): held only to copy the counters.
    #[pin]
    pub(crate) info: SpinLock<ClientInfo>,
    /// The file's waiting command sleeps here (with `rm` released) until its turn at the TPM
    /// comes or a session slot is freed or reserved for its space: woken alone, never
    /// with every waiter ([`Shared::execute`]).
    #[pin]
    pub(crate) wake: CondVar,
    /// The file's space lost a session to an eviction and its client has not used it
    /// since: its next command may be answered without a turn at the TPM
    /// ([`Rm::answer_at_once`](crate::proto::Rm::answer_at_once)). Set and cleared under
    /// `rm`; read without it, so that other commands never take `rm` before their turn (a
    /// stale `false` only sends a command through the TPM queue, as any).
    pub(super) owed: AtomicBool,
}

impl ClientStats {
    /// Counters for a new file.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(info: ClientInfo) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                info <- new_spinlock!(info, "tpmrs::ClientStats::info"),
                wake <- new_condvar!("tpmrs::ClientStats::wake"),
                owed: AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )
    }
}

/// The contents of `/sys/kernel/debug/tpmrs/clients`: one line per open file, with the pid
/// and command name of the process that opened it, its space id, the objects and sessions it
/// holds (sessions loaded in the TPM, saved by tpmrs, saved by the client), its waits for a
/// session slot (count, longest in ms), the sessions evicted from it, and the TPM commands
/// sent for it.
pub(crate) fn show_clients(
    shared: &Arc<Shared>,
    f: &mut kernel::fmt::Formatter<'_>,
) -> kernel::fmt::Result {
    // A copy of the list, so that `clients` is not held while waiting for `rm`.
    let clients = {
        let list = shared.clients.lock();
        let mut copy =
            KVec::with_capacity(list.len(), GFP_KERNEL).map_err(|_| kernel::fmt::Error)?;
        for c in list.iter() {
            copy.push(c.clone(), GFP_KERNEL)
                .map_err(|_| kernel::fmt::Error)?;
        }
        copy
    };
    let rm = shared.rm.lock();
    for c in clients.iter() {
        let info = *c.info.lock();
        let (mut loaded, mut saved_rm, mut saved_client) = (0u32, 0u32, 0u32);
        for e in rm.sessions().entries() {
            if e.owner != Some(info.space_id) {
                continue;
            }
            match e.state {
                SessionState::Loaded => loaded += 1,
                SessionState::SavedByRm(_) => saved_rm += 1,
                SessionState::SavedByClient(_) => saved_client += 1,
                SessionState::FlushPending => {}
            }
        }
        let comm_len = info
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(info.comm.len());
        let comm = info
            .comm
            .get(..comm_len)
            .and_then(|c| core::str::from_utf8(c).ok())
            .unwrap_or("?");
        writeln!(
            f,
            "pid={} comm={} space={} objects={} sessions_loaded={} sessions_saved_by_tpmrs={} \
             sessions_saved_by_client={} waits={} longest_wait_ms={} evicted={} tpm_commands={}",
            info.pid,
            comm,
            info.space_id,
            info.objects,
            loaded,
            saved_rm,
            saved_client,
            info.waits,
            info.longest_wait_ns / 1_000_000,
            rm.evictions_of(info.space_id),
            info.tpm_commands,
        )?;
    }
    Ok(())
}

/// The contents of `/sys/kernel/debug/tpmrs/stats`: the resource manager's counters
/// ([`crate::proto::Stats::rows`]), one `name value` pair per line.
pub(crate) fn show_stats(
    shared: &Arc<Shared>,
    f: &mut kernel::fmt::Formatter<'_>,
) -> kernel::fmt::Result {
    // The copy, not `rm`: reading never waits behind a TPM command.
    let mut s = *shared.stats.lock();
    s.open_spaces = shared.spaces.open_count();
    s.closing_spaces = shared.spaces.closing_count();
    for (name, value) in s.rows() {
        writeln!(f, "{name} {value}")?;
    }
    Ok(())
}
