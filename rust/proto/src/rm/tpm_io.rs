// SPDX-License-Identifier: GPL-2.0
//! The resource manager's own TPM traffic: one place that transmits and counts, the buffers
//! of our ContextLoad / ContextSave / FlushContext commands, and their answers as [`Reply`].

use super::super::codec::get_u32;
use super::super::constants::*;
use super::super::context::{
    build_context_load, build_context_save, build_flush_context, context_load_handle,
    context_save_blob,
};
use super::super::error::RmError;
use super::super::platform::Vec;
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
/// [`RmError::Transport`] if the transport failed, [`RmError::BadResponse`] if the response
/// is not framed as one.
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
            return Err(RmError::Transport(e.0));
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

    /// The blob of the last successful [`Io::context_save`], copied.
    pub(crate) fn saved_blob(&self) -> Result<Vec<u8>, RmError> {
        let b = context_save_blob(self.last()).map_err(|_| RmError::BadResponse)?;
        let mut v = Vec::try_with_capacity(b.len())?;
        v.try_extend_from_slice(b)?;
        Ok(v)
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

    /// Flushes `handle`; if the flush is not over (the transport failed, or the TPM did not
    /// execute it), queues it in `pending`. Returns the transport error, if any.
    pub(crate) fn flush_or_queue(
        &mut self,
        tpm: &mut dyn Tpm,
        pending: &mut Vec<u32>,
        handle: u32,
    ) -> Result<(), RmError> {
        let r = self.flush(tpm, handle);
        if !flush_done(&r) {
            // Still there (transport down, or e.g. TPM_RC_RETRY): try again later. If even
            // the queue cannot grow, the handle leaks: nothing else can be done.
            let _ = pending.try_push(handle);
        }
        r.map(|_| ())
    }
}

/// Whether a FlushContext of ours is over: done, or answered with an error that says the
/// handle is gone. Not over: the transport failed, or the TPM did not execute it.
pub(crate) fn flush_done(r: &Result<Reply<()>, RmError>) -> bool {
    match r {
        Ok(Reply::Done(())) => true,
        Ok(Reply::Rc(rc)) => !is_not_executed_rc(*rc),
        Err(_) => false,
    }
}
