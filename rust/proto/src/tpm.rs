// SPDX-License-Identifier: GPL-2.0
//! The transport to the TPM.

/// The transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportError {
    /// A negative errno (e.g. -19 `ENODEV`).
    pub errno: i32,
    /// Whether the command may have reached the TPM. `false` only when it certainly did
    /// not (an allocation failed, or it was refused before it was handed to the driver):
    /// then nothing happened in the TPM, and the resource manager treats the failure of
    /// its own ContextSave, ContextLoad or FlushContext like a warning that says "not
    /// executed".
    pub sent: bool,
}

impl TransportError {
    /// A failure after which the command may have reached the TPM (and run there).
    pub const fn maybe_sent(errno: i32) -> Self {
        TransportError { errno, sent: true }
    }

    /// A failure before the command reached the TPM: it certainly did not run.
    pub const fn not_sent(errno: i32) -> Self {
        TransportError { errno, sent: false }
    }
}

/// Something that executes TPM commands.
pub trait Tpm {
    /// Sends one complete command; the response goes to `rsp` (len >= TPM_BUFSIZE).
    /// Returns the response length.
    ///
    /// A TPM error code is NOT an Err: it is in the response.
    ///
    /// # Errors
    /// [`TransportError`] if the command could not be delivered or the response not read;
    /// it says whether the command may have reached the TPM.
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError>;
}
