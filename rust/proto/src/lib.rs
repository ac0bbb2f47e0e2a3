// SPDX-License-Identifier: GPL-2.0
//! tpmrs protocol core: a TPM 2.0 resource manager (like Linux's /dev/tpmrm0) in plain Rust,
//! with no kernel types. The same files build the host crate `tpmrs-proto` (tests) and, with
//! `--cfg tpmrs_kernel`, a module of the tpmrs kernel module.
//!
//! Rules of this code: no `std`/`alloc` types (collections come from `platform`), no panics
//! on any input, no `unsafe`, sibling modules named through `super::` (never `crate::`).

#![cfg_attr(not(tpmrs_kernel), no_std)]
#![forbid(unsafe_code)]

#[cfg(not(tpmrs_kernel))]
extern crate alloc;
#[cfg(all(test, not(tpmrs_kernel)))]
#[macro_use]
extern crate std;

#[cfg(tpmrs_kernel)]
#[path = "platform_kernel.rs"]
mod platform;
#[cfg(not(tpmrs_kernel))]
#[path = "platform_std.rs"]
mod platform;

pub mod capability;
pub mod cc_table;
pub mod codec;
pub mod command;
pub mod constants;
pub mod context;
pub mod error;
pub mod event;
pub mod response;
pub mod rm;
pub mod session;
pub mod space;
pub mod stats;
pub mod tpm;
pub mod turns;

pub use constants::TPM_BUFSIZE;
pub use error::RmError;
pub use event::{Event, EvictReason, WaitEnd};
pub use rm::{Config, Request, Rm, Step};
pub use session::registry::SessionState;
pub use space::{Space, SpaceIds};
pub use stats::Stats;
pub use tpm::{Tpm, TransportError};
pub use turns::{Turn, Turns};

// What the host tests and fuzzers look at besides (the kernel glue does not).
#[cfg(not(tpmrs_kernel))]
pub use cc_table::{CcAttrs, CcTable};
#[cfg(not(tpmrs_kernel))]
pub use platform::{Charged, OutOfMemory, Vec};
#[cfg(not(tpmrs_kernel))]
pub use rm::Outcome;
#[cfg(not(tpmrs_kernel))]
pub use session::registry::{SessionEntry, SessionRegistry};
#[cfg(not(tpmrs_kernel))]
pub use session::scheduler::{Ticket, WaitStep};
#[cfg(not(tpmrs_kernel))]
pub use session::{registry as sessions, scheduler};
