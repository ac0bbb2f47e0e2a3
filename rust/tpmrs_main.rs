// SPDX-License-Identifier: GPL-2.0
//! tpmrs: a TPM 2.0 resource manager.
//!
//! `/dev/tpmrs0` is a /dev/tpmrmX-style node: each open file holds a space with its own
//! virtual object handles and sessions, and every command is intercepted, mapped, and
//! accounted. The protocol logic lives in `proto/` (plain Rust, also built and tested on the
//! host); this crate is the kernel glue around it:
//!
//! - [`chip`]: the TPM chip, its ops lock, the transport (through `tpmrs_shim.c`);
//! - [`device`]: the state every open file shares, and the debugfs files;
//! - [`fops`]: the misc device and its file operations;
//! - [`client`]: what one open file owns and the tpmrm0 write/read/poll protocol;
//! - [`memcg`]: memory a client causes, charged to its opener's memory cgroup;
//! - [`pm`]: the PM notifier (resident contexts are saved before a suspend);
//! - [`trace`]: the trace events (`tpmrs:*`, defined in `tpmrs_trace.h`).

use kernel::{debugfs, prelude::*, sync::Arc};

mod chip;
mod client;
mod device;
mod fops;
mod memcg;
mod pm;
// The core is a library shared with the host crate `tpmrs-proto`: its `pub` is the API its
// host tests and fuzzers use, unreachable from this crate's root by design.
#[path = "proto/src/lib.rs"]
#[allow(unreachable_pub)]
mod proto;
mod trace;

module! {
    type: TpmrsModule,
    name: "tpmrs",
    authors: ["tpmrs developers"],
    description: "TPM 2.0 resource manager with global session accounting (/dev/tpmrs0)",
    license: "GPL",
    params: {
        max_objects: u32 {
            default: 64,
            description: "Transient objects one open file may hold (1-1024, default 64)",
        },
        max_sessions: u32 {
            default: 64,
            description: "Sessions one open file may hold (1-64, default 64)",
        },
        max_abandoned: u32 {
            default: 8,
            description: "Sessions a client saved and left behind at close, kept for another \
                          open file of the same uid to ContextLoad (0-32, default 8; 0 \
                          disables)",
        },
        chip: i32 {
            default: -1,
            description: "The TPM to serve: N for /dev/tpmN (the chip tpmN), -1 for the \
                          default chip, the lowest-numbered TPM 2.0 (default -1)",
        },
        session_timeout_ms: u32 {
            default: 2000,
            description: "SESSION_TIMEOUT: how long a session lives before it may be evicted \
                          for a waiting client (100-600000 ms, default 2000)",
        },
        session_headroom: u32 {
            default: 2,
            description: "Session slots tpmrs leaves free for the kernel, /dev/tpm0 and \
                          /dev/tpmrm0: it holds at most TPM_PT_ACTIVE_SESSIONS_MAX minus this \
                          (0-32, default 2)",
        },
        resident: bool {
            default: false,
            description: "Resident contexts: keep objects and sessions loaded in the TPM \
                          between commands while it has loaded slots to spare beyond the \
                          reserves, evicted only when needed (default 0; make install-tcti \
                          sets 1)",
        },
        reserve_objects: u32 {
            default: 1,
            description: "With resident=1, loaded object slots kept free between commands \
                          for the kernel, /dev/tpm0 and /dev/tpmrm0 (0-64, default 1)",
        },
        reserve_sessions: u32 {
            default: 1,
            description: "With resident=1, loaded session slots kept free between commands \
                          for the kernel, /dev/tpm0 and /dev/tpmrm0 (0-64, default 1)",
        },
        fair_share_by_uid: bool {
            default: true,
            description: "Fair share between users first: session slots and TPM turns go \
                          round the openers' uids, then round each uid's open files \
                          (default 1; 0: every open file gets an equal share)",
        },
    },
}

/// The module's state. Fields are dropped in declaration order, which is the teardown order.
struct TpmrsModule {
    /// The PM notifier. Dropped first: unregistering it waits for a running call.
    _pm: pm::PmNotifier,
    /// `/sys/kernel/debug/tpmrs/stats`. Dropped second: removing it waits for its readers.
    _stats: Pin<KBox<debugfs::File<Arc<device::Shared>>>>,
    /// `/sys/kernel/debug/tpmrs/clients`. Dropped third, likewise.
    _clients: Pin<KBox<debugfs::File<Arc<device::Shared>>>>,
    /// `/sys/kernel/debug/tpmrs/`. Dropped fourth, once the files in it are gone.
    _debugfs: debugfs::Dir,
    /// `/dev/tpmrs0`. Dropped fifth: no new file can be opened after it (open files keep
    /// the module, and so this struct, alive until they are closed).
    _dev: Pin<KBox<fops::Registration>>,
    /// Dropped last: draining it runs (or drops) every queued O_NONBLOCK command.
    _wq: chip::WorkQueue,
}

impl kernel::Module for TpmrsModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let config = proto::Config {
            max_objects: module_parameters::max_objects.value().clamp(1, 1024) as usize,
            max_sessions: module_parameters::max_sessions.value().clamp(1, 64) as usize,
            max_abandoned: module_parameters::max_abandoned.value().clamp(0, 32) as usize,
            session_timeout_ns: u64::from(
                module_parameters::session_timeout_ms
                    .value()
                    .clamp(100, 600_000),
            ) * 1_000_000,
            session_headroom: module_parameters::session_headroom.value().clamp(0, 32) as usize,
            resident: module_parameters::resident.value(),
            reserve_objects: module_parameters::reserve_objects.value().clamp(0, 64) as usize,
            reserve_sessions: module_parameters::reserve_sessions.value().clamp(0, 64) as usize,
            fair_share_by_uid: module_parameters::fair_share_by_uid.value(),
            ..Default::default()
        };
        let num = module_parameters::chip.value();
        let chip = chip::Chip::get(num).inspect_err(|_| {
            if num < 0 {
                pr_err!("no TPM 2.0 chip\n");
            } else {
                pr_err!("no TPM 2.0 chip tpm{num} (module parameter chip={num})\n");
            }
        })?;
        let mut rm = proto::Rm::new(config).map_err(|e| Error::from_errno(e.to_errno()))?;
        {
            let mut tpm = chip.lock()?;
            rm.init(&mut tpm).map_err(|e| {
                pr_err!(
                    "reading the TPM's command table failed ({})\n",
                    e.to_errno()
                );
                Error::from_errno(e.to_errno())
            })?;
        }
        let wq = chip::WorkQueue::new()?;
        pr_info!("/dev/tpmrs0 on {}\n", chip.name());
        if config.resident {
            let ((objects, sessions), (keep_objects, keep_sessions)) = rm.loaded_slots();
            pr_info!(
                "resident contexts: up to {keep_objects} of {objects} loaded object slots and \
                 {keep_sessions} of {sessions} loaded session slots between commands\n"
            );
        }
        // SAFETY: Work is only enqueued by the files of `/dev/tpmrs0` and by the work items
        // themselves. The module drops `_wq` (destroying, after draining, the queue) only after
        // `_dev`, when no file is open (each holds a reference on the module) and no new one
        // can be; the drain runs the queued items to their end.
        let queue = unsafe { wq.queue() };
        let shared = device::Shared::new(chip, rm, queue)?;
        let dir = debugfs::Dir::new(c"tpmrs");
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", shared.clone(), &device::show_stats),
            GFP_KERNEL,
        )?;
        let clients = KBox::pin_init(
            dir.read_callback_file(c"clients", shared.clone(), &device::show_clients),
            GFP_KERNEL,
        )?;
        let pm = pm::PmNotifier::register(shared.clone())?;
        let dev = fops::Registration::register(shared)?;
        Ok(Self {
            _pm: pm,
            _stats: stats,
            _clients: clients,
            _debugfs: dir,
            _dev: dev,
            _wq: wq,
        })
    }
}
