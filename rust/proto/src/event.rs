// SPDX-License-Identifier: GPL-2.0
//! What happened inside the resource manager during one of its calls, for the kernel glue's
//! trace events (`tpmrs:*` in tracefs): evictions, context-gap repairs, and the begin and end
//! of each wait for a session slot.
//!
//! The core has no kernel types, so it cannot fire tracepoints itself. It records [`Event`]
//! values in a bounded [`EventLog`] instead, and the glue drains the log after every call of
//! [`super::Rm`] (with the resource manager still locked) and turns each event into a trace
//! call. The host tests read the same log.

use super::platform::Vec;

/// Most events kept between two drains. One call records at most one event per session it
/// evicts or repairs (the TPM's session slots, typically 64) plus a wait's begin and end, so
/// this is only reached by a TPM with far more slots; the excess is counted in
/// [`EventLog::lost`], never allocated.
pub const EVENT_LOG_CAPACITY: usize = 256;

/// How a wait for a session slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The command was answered: a response (from the TPM, or the resource manager's, e.g.
    /// the TPM's own TPM_RC_SESSION_HANDLES after giving up) is in the response buffer.
    Answered,
    /// The command failed with this errno (negative), e.g. a transport error.
    Failed(i32),
    /// The command stopped before an answer: a signal, or its file was closed.
    Interrupted,
}

/// Why a session was flushed by force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// For a waiter.
    Waiter,
    /// To repair a context gap: its blob could not be renewed, or its own save after its
    /// owner's command met a gap that could not be repaired.
    ContextGap,
    /// Its context could not be saved after its owner's command (a ContextSave error other
    /// than a warning that says "not executed", or no memory for its blob).
    Unsaved,
    /// The TPM loaded it for a space that may not have it (a ContextLoad refused after the
    /// fact): its owner's blob was used up.
    RefusedLoad,
}

/// One thing the glue traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A session was flushed by force.
    Evict {
        /// The session's TPM handle.
        handle: u32,
        /// The space it was taken from; 0 for an abandoned session (owned by nobody).
        victim: u64,
        /// The space of the waiter it was evicted for; 0 when it was not evicted for a
        /// waiter (or for a waiter without a space).
        waiter: u64,
        /// Why.
        reason: EvictReason,
    },
    /// One context-gap repair (TPM_RC_CONTEXT_GAP): the oldest saved session was renewed
    /// (loaded and saved again) or, when that was impossible, evicted (an [`Event::Evict`]
    /// with [`EvictReason::ContextGap`] comes first).
    GapRepair {
        /// The oldest saved session's TPM handle.
        handle: u32,
        /// Its owner's space; 0 for an abandoned session.
        owner: u64,
        /// Renewed: it is still saved, with a new sequence number.
        renewed: bool,
    },
    /// A command of `space` began to wait for a session slot.
    WaitBegin {
        /// The waiting space.
        space: u64,
    },
    /// That wait ended.
    WaitEnd {
        /// The waiting space.
        space: u64,
        /// How long this command waited (ns; from its [`Event::WaitBegin`]).
        waited_ns: u64,
        /// How it ended.
        end: WaitEnd,
    },
}

/// The events of the calls since the last drain, oldest first.
pub struct EventLog {
    events: Vec<Event>,
    lost: u64,
}

impl EventLog {
    /// An empty log with room for [`EVENT_LOG_CAPACITY`] events, allocated now so that
    /// recording never allocates.
    ///
    /// # Errors
    /// [`super::platform::OutOfMemory`].
    pub fn new() -> Result<Self, super::platform::OutOfMemory> {
        Ok(EventLog {
            events: Vec::try_with_capacity(EVENT_LOG_CAPACITY)?,
            lost: 0,
        })
    }

    /// Records `e`; counts it as lost if the log is full.
    pub(crate) fn record(&mut self, e: Event) {
        if self.events.len() >= EVENT_LOG_CAPACITY || self.events.try_push(e).is_err() {
            self.lost = self.lost.wrapping_add(1);
        }
    }

    /// The events recorded since the last [`EventLog::clear`], oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Events not recorded because the log was full, since the resource manager was created.
    #[cfg(not(tpmrs_kernel))]
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Empties the log (keeps its memory).
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_and_clears() {
        let mut log = EventLog::new().unwrap();
        log.record(Event::WaitBegin { space: 3 });
        log.record(Event::WaitEnd {
            space: 3,
            waited_ns: 5,
            end: WaitEnd::Answered,
        });
        assert_eq!(
            log.events(),
            &[
                Event::WaitBegin { space: 3 },
                Event::WaitEnd {
                    space: 3,
                    waited_ns: 5,
                    end: WaitEnd::Answered
                }
            ]
        );
        log.clear();
        assert!(log.events().is_empty());
        assert_eq!(log.lost(), 0);
    }

    #[test]
    fn full_log_counts_the_rest_as_lost() {
        let mut log = EventLog::new().unwrap();
        for i in 0..EVENT_LOG_CAPACITY as u64 + 3 {
            log.record(Event::WaitBegin { space: i });
        }
        assert_eq!(log.events().len(), EVENT_LOG_CAPACITY);
        assert_eq!(log.lost(), 3);
        assert_eq!(log.events()[0], Event::WaitBegin { space: 0 });
        log.clear();
        log.record(Event::WaitBegin { space: 9 });
        assert_eq!(log.events(), &[Event::WaitBegin { space: 9 }]);
    }
}
