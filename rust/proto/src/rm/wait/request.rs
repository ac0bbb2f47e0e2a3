// SPDX-License-Identifier: GPL-2.0
//! One client command's state in the wait protocol ([`Request`]).

use super::super::super::event::WaitEnd;
use super::super::super::session::scheduler::Ticket;
#[cfg(doc)]
use super::super::Rm;
#[cfg(doc)]
use super::Step;

/// One client command on its way through the wait protocol: its place in the queue, once
/// it has one. Ended with [`Rm::end_request`].
#[derive(Debug, Default)]
pub struct Request {
    pub(super) ticket: Option<Ticket>,
    /// The scheduler said Retry: run the command at the next step.
    pub(super) run: bool,
    /// When this command began to wait (its ticket was taken) and its space, for its trace
    /// events.
    pub(super) wait_began_ns: u64,
    pub(super) space: u64,
    /// How the command ended, once [`Rm::step`] said [`Step::Done`].
    pub(super) end: Option<WaitEnd>,
}

impl Request {
    /// A command that has not run yet.
    pub fn new() -> Self {
        Request {
            ticket: None,
            run: true,
            wait_began_ns: 0,
            space: 0,
            end: None,
        }
    }

    /// Its place in the wait queue, if it waits.
    #[cfg(not(tpmrs_kernel))]
    pub fn ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref()
    }

    /// Whether it holds a place in the wait queue for a session slot: its next turn at the
    /// TPM is one the queue asked for (`Turns::enter`'s `queued`).
    pub fn queued(&self) -> bool {
        self.ticket.is_some()
    }
}
