// SPDX-License-Identifier: GPL-2.0
//! The resource manager's own TPM traffic: one place that transmits and counts, the buffers
//! of our ContextLoad / ContextSave / FlushContext commands, and their answers as [`Reply`].

use super::super::capability::{build_handle_query, first_listed_handle};
use super::super::codec::get_u32;
use super::super::constants::*;
use super::super::context::{
    build_context_load, build_context_save, build_flush_context, build_hmac_session,
    context_load_handle, context_save_blob,
};
use super::super::error::RmError;
use super::super::platform::{Charged, Vec};
use super::super::response::ResponseHeader;
use super::super::stats::{bump, Stats};
use super::super::tpm::Tpm;

/// The TPM's answer to one of our own commands. (A transport failure or a malformed
/// response is an [`RmError`] instead.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply<T> {
    /// TPM_RC_SUCCESS, with what the command returned.
    Done(T),
    /// Any other response code.
    Rc(u32),
}

/// Sends `cmd`, receives into `rsp`, checks the response framing. The one place where TPM
/// commands are counted.
///
/// # Errors
/// [`RmError::Transport`] if the transport failed ([`RmError::NotSent`] if the command
/// certainly did not reach the TPM), [`RmError::BadResponse`] if the response is not framed
/// as one.
pub(crate) fn transmit(
    stats: &mut Stats,
    tpm: &mut dyn Tpm,
    cmd: &[u8],
    rsp: &mut [u8],
) -> Result<usize, RmError> {
    bump(&mut stats.tpm_commands);
    let n = match tpm.transmit(cmd, rsp) {
        Ok(n) => n,
        Err(e) => {
            bump(&mut stats.transport_errors);
            return Err(if e.sent {
                RmError::Transport(e.errno)
            } else {
                RmError::NotSent(e.errno)
            });
        }
    };
    let r = rsp.get(..n).ok_or(RmError::BadResponse)?;
    ResponseHeader::parse(r).map_err(|_| RmError::BadResponse)?;
    Ok(n)
}

/// The response code of a framed response in `rsp`.
pub(crate) fn response_code(rsp: &[u8]) -> u32 {
    get_u32(rsp, 6).unwrap_or(u32::MAX)
}

/// The buffers and counters of the resource manager's own TPM traffic.
pub(crate) struct Io {
    pub(crate) cmd: Vec<u8>,
    rsp: Vec<u8>,
    rsp_len: usize,
    pub(crate) stats: Stats,
}

impl Io {
    /// Allocates both 4 KiB buffers.
    ///
    /// # Errors
    /// [`RmError::OutOfMemory`].
    pub(crate) fn new() -> Result<Self, RmError> {
        let mut cmd = Vec::try_with_capacity(TPM_BUFSIZE)?;
        let mut rsp = Vec::try_with_capacity(TPM_BUFSIZE)?;
        for _ in 0..TPM_BUFSIZE {
            cmd.try_push(0)?;
            rsp.try_push(0)?;
        }
        Ok(Io {
            cmd,
            rsp,
            rsp_len: 0,
            stats: Stats::default(),
        })
    }

    /// Sends the first `len` bytes of the command buffer; returns the response code.
    pub(crate) fn run(&mut self, tpm: &mut dyn Tpm, len: usize) -> Result<u32, RmError> {
        let cmd = self.cmd.get(..len).ok_or(RmError::OutOfMemory)?;
        self.rsp_len = transmit(&mut self.stats, tpm, cmd, &mut self.rsp)?;
        Ok(response_code(&self.rsp))
    }

    /// The last response.
    pub(crate) fn last(&self) -> &[u8] {
        self.rsp.get(..self.rsp_len).unwrap_or(&[])
    }

    /// Copies the last response into `out`; returns its length.
    pub(crate) fn copy_last(&self, out: &mut [u8]) -> Result<usize, RmError> {
        let r = self.last();
        out.get_mut(..r.len())
            .ok_or(RmError::BufferTooSmall)?
            .copy_from_slice(r);
        Ok(r.len())
    }

    /// TPM2_ContextLoad of `blob`: the handle it was loaded under.
    pub(crate) fn context_load(
        &mut self,
        tpm: &mut dyn Tpm,
        blob: &[u8],
    ) -> Result<Reply<u32>, RmError> {
        let n = build_context_load(&mut self.cmd, blob).map_err(|_| RmError::InvalidCommand)?;
        bump(&mut self.stats.context_loads);
        let rc = self.run(tpm, n)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(Reply::Rc(rc));
        }
        context_load_handle(self.last())
            .map(Reply::Done)
            .map_err(|_| RmError::BadResponse)
    }

    /// TPM2_ContextSave of `handle`; on success [`Io::saved_blob`] has the blob.
    pub(crate) fn context_save(
        &mut self,
        tpm: &mut dyn Tpm,
        handle: u32,
    ) -> Result<Reply<()>, RmError> {
        let n = build_context_save(&mut self.cmd, handle).map_err(|_| RmError::OutOfMemory)?;
        bump(&mut self.stats.context_saves);
        let rc = self.run(tpm, n)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(Reply::Rc(rc));
        }
        context_save_blob(self.last()).map_err(|_| RmError::BadResponse)?;
        Ok(Reply::Done(()))
    }

    /// TPM2_ContextSave of `handle`, tried again while the TPM does not run it (a warning
    /// that says "not executed", or a transport failure before the command reached the
    /// TPM), up to [`MAX_SAVE_TRIES`] tries in all; TPM_RC_CONTEXT_GAP is not tried again
    /// (a repair must come first). On [`Saved::Done`], [`Io::last_blob`] has the blob.
    ///
    /// # Errors
    /// [`RmError::Transport`] if the transport failed after the command may have reached
    /// the TPM, [`RmError::BadResponse`], [`RmError::OutOfMemory`].
    pub(crate) fn save(&mut self, tpm: &mut dyn Tpm, handle: u32) -> Result<Saved, RmError> {
        for _ in 0..MAX_SAVE_TRIES {
            match self.context_save(tpm, handle) {
                Ok(Reply::Done(())) => return Ok(Saved::Done),
                Ok(Reply::Rc(TPM_RC_CONTEXT_GAP)) => return Ok(Saved::Gap),
                Ok(Reply::Rc(rc)) if is_not_executed_rc(rc) => {}
                Ok(Reply::Rc(rc)) => return Ok(Saved::Rc(rc)),
                Err(RmError::NotSent(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Saved::NotRun)
    }

    /// The blob of the last successful [`Io::context_save`].
    ///
    /// # Errors
    /// [`RmError::BadResponse`] if the last response holds none.
    pub(crate) fn last_blob(&self) -> Result<&[u8], RmError> {
        context_save_blob(self.last()).map_err(|_| RmError::BadResponse)
    }

    /// The blob of the last successful [`Io::context_save`], copied.
    /// Charged to the client (the blob is an object's or a session's of its space).
    pub(crate) fn saved_blob(&self) -> Result<Charged<u8>, RmError> {
        let b = self.last_blob()?;
        let mut v = Charged::try_with_capacity(b.len())?;
        v.try_extend_from_slice(b)?;
        Ok(v)
    }

    /// tpmrs' own TPM2_StartAuthSession ([`build_hmac_session`]): the handle of the new
    /// session.
    ///
    /// # Errors
    /// [`RmError::Transport`] (a session may have been started, under a number nobody
    /// knows), [`RmError::NotSent`], [`RmError::BadResponse`].
    pub(crate) fn start_hmac_session(&mut self, tpm: &mut dyn Tpm) -> Result<Reply<u32>, RmError> {
        // Any nonce will do: the session is never used.
        let n = build_hmac_session(&mut self.cmd, &[0; 16]).map_err(|_| RmError::OutOfMemory)?;
        let rc = self.run(tpm, n)?;
        if rc != TPM_RC_SUCCESS {
            return Ok(Reply::Rc(rc));
        }
        match get_u32(self.last(), TPM_HEADER_SIZE) {
            Some(h) if is_session_handle(h) => Ok(Reply::Done(h)),
            _ => Err(RmError::BadResponse),
        }
    }

    /// TPM2_FlushContext of `handle`.
    pub(crate) fn flush(&mut self, tpm: &mut dyn Tpm, handle: u32) -> Result<Reply<()>, RmError> {
        let n = build_flush_context(&mut self.cmd, handle).map_err(|_| RmError::OutOfMemory)?;
        bump(&mut self.stats.flushes);
        let rc = self.run(tpm, n)?;
        Ok(if rc == TPM_RC_SUCCESS {
            Reply::Done(())
        } else {
            Reply::Rc(rc)
        })
    }

    /// Flushes `handle` and says how it went. A transport failure after the command may
    /// have reached the TPM leaves it unknown whether the TPM ran the flush: see
    /// [`Io::settle_flush`]. One before it reached the TPM is like a warning that says "not
    /// executed" ([`Flushed::NotExecuted`], no error).
    pub(crate) fn flush_settled(
        &mut self,
        tpm: &mut dyn Tpm,
        handle: u32,
    ) -> (Flushed, Result<(), RmError>) {
        match self.flush(tpm, handle) {
            Ok(Reply::Rc(rc)) if is_not_executed_rc(rc) => (Flushed::NotExecuted, Ok(())),
            Err(RmError::NotSent(_)) => (Flushed::NotExecuted, Ok(())),
            // Done, or an error that says the handle is gone.
            Ok(_) => (Flushed::Done, Ok(())),
            Err(e) => (self.settle_flush(tpm, handle), Err(e)),
        }
    }

    /// A FlushContext of `handle` (ours or a client's) failed on the transport after it may
    /// have reached the TPM. The caller still holds the chip, so nobody else has used the
    /// TPM since: the TPM is asked at once whether the handle is there, and if it is, it is
    /// flushed again. Only if the TPM cannot be asked does the flush stay
    /// [`Flushed::Unknown`].
    pub(crate) fn settle_flush(&mut self, tpm: &mut dyn Tpm, handle: u32) -> Flushed {
        match self.handle_present(tpm, handle) {
            Ok(false) => Flushed::Done,
            Ok(true) => match self.flush(tpm, handle) {
                Ok(Reply::Rc(rc)) if is_not_executed_rc(rc) => Flushed::NotExecuted,
                Err(RmError::NotSent(_)) => Flushed::NotExecuted,
                Ok(_) => Flushed::Done,
                Err(_) => Flushed::Unknown,
            },
            Err(_) => Flushed::Unknown,
        }
    }

    /// Flushes `handle`; if the flush is not over, queues it in `queue` (see
    /// [`FlushQueue`]). Returns the transport error, if any.
    pub(crate) fn flush_or_queue(
        &mut self,
        tpm: &mut dyn Tpm,
        queue: &mut FlushQueue,
        handle: u32,
    ) -> Result<(), RmError> {
        let (verdict, r) = self.flush_settled(tpm, handle);
        queue.add(verdict, handle);
        r
    }

    /// Whether the TPM holds `handle` (a session in either form, loaded or saved), by
    /// TPM2_GetCapability(TPM_CAP_HANDLES).
    ///
    /// # Errors
    /// [`RmError::Transport`], or [`RmError::BadResponse`] if the TPM did not answer a list.
    pub(crate) fn handle_present(
        &mut self,
        tpm: &mut dyn Tpm,
        handle: u32,
    ) -> Result<bool, RmError> {
        let session = is_session_handle(handle);
        let index = handle & 0x00FF_FFFF;
        let queries = if session {
            [
                u32::from(TPM_HT_LOADED_SESSION) << HR_SHIFT | index,
                u32::from(TPM_HT_SAVED_SESSION) << HR_SHIFT | index,
            ]
        } else {
            [handle, handle]
        };
        for (i, q) in queries.into_iter().enumerate() {
            if i > 0 && !session {
                break;
            }
            let n = build_handle_query(&mut self.cmd, q).map_err(|_| RmError::OutOfMemory)?;
            if self.run(tpm, n)? != TPM_RC_SUCCESS {
                return Err(RmError::BadResponse);
            }
            let first = first_listed_handle(self.last()).map_err(|_| RmError::BadResponse)?;
            let found = first.is_some_and(|f| {
                if session {
                    is_session_handle(f) && same_session(f, handle)
                } else {
                    f == handle
                }
            });
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Most tries of one ContextSave of ours that the TPM does not run (see [`Io::save`]).
const MAX_SAVE_TRIES: usize = 3;

/// How a ContextSave of ours went ([`Io::save`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saved {
    /// Saved: [`Io::last_blob`] has the context.
    Done,
    /// Not run on any try (a warning that says so, or the command never reached the TPM):
    /// what it named is as it was, still loaded.
    NotRun,
    /// TPM_RC_CONTEXT_GAP: the oldest saved context must be renewed first.
    Gap,
    /// Any other response code.
    Rc(u32),
}

/// How a FlushContext of ours went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Done, or the handle is gone.
    Done,
    /// The TPM answered a warning that says it did not run it: the handle is still ours.
    NotExecuted,
    /// The transport failed and the TPM could not be asked: the handle may be gone, and
    /// then may be given to someone else.
    Unknown,
}

/// FlushContexts of ours not known to be done.
pub(crate) struct FlushQueue {
    /// Refused by the TPM ("not executed"): still ours, flushed again.
    pub(crate) certain: Vec<u32>,
    /// The transport failed and the TPM could not be asked: never flushed again.
    pub(crate) unverified: Vec<u32>,
}

impl FlushQueue {
    /// An empty queue.
    pub(crate) const fn new() -> Self {
        FlushQueue {
            certain: Vec::new(),
            unverified: Vec::new(),
        }
    }

    /// Queues `handle` by how its flush went. If the queue cannot grow the handle leaks:
    /// nothing else can be done.
    pub(crate) fn add(&mut self, verdict: Flushed, handle: u32) {
        let _ = match verdict {
            Flushed::Done => Ok(()),
            Flushed::NotExecuted => self.certain.try_push(handle),
            Flushed::Unknown => self.unverified.try_push(handle),
        };
    }

    /// Queued flushes of either kind.
    pub(crate) fn len(&self) -> usize {
        self.certain.len().saturating_add(self.unverified.len())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.certain.is_empty() && self.unverified.is_empty()
    }

    /// Every queued handle, of either kind.
    pub(crate) fn handles(&self) -> impl Iterator<Item = u32> + '_ {
        self.certain.iter().chain(self.unverified.iter()).copied()
    }
}
