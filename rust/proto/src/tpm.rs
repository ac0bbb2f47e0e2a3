// SPDX-License-Identifier: GPL-2.0
//! The transport to the TPM.

/// The transport failed; the value is a negative errno (e.g. -19 `ENODEV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportError(pub i32);

/// Something that executes TPM commands.
pub trait Tpm {
    /// Sends one complete command; the response goes to `rsp` (len >= TPM_BUFSIZE).
    /// Returns the response length.
    ///
    /// A TPM error code is NOT an Err: it is in the response.
    ///
    /// # Errors
    /// [`TransportError`] if the command could not be delivered or the response not read.
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError>;
}
