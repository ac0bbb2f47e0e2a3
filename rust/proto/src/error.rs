// SPDX-License-Identifier: GPL-2.0
//! The resource manager's own errors, and the errno each one becomes.
//!
//! A TPM error code is never an [`RmError`]: it travels to the client inside a response.
//! An [`RmError`] is what `write()`/`read()` on the device node report instead of a response.

use super::platform::OutOfMemory;

/// `EIO`.
pub const EIO: i32 = 5;
/// `E2BIG`.
pub const E2BIG: i32 = 7;
/// `EAGAIN`.
#[cfg(not(tpmrs_kernel))]
pub const EAGAIN: i32 = 11;
/// `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EINVAL`.
pub const EINVAL: i32 = 22;

/// Why a client command got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmError {
    /// The command is malformed (framing, handle or authorization area), or names a transient
    /// object that is not in the caller's space (`-EINVAL`, as /dev/tpmrm0).
    InvalidCommand,
    /// The command is larger than [`super::TPM_BUFSIZE`] (`-E2BIG`).
    TooBig,
    /// The response buffer given by the caller is smaller than [`super::TPM_BUFSIZE`]
    /// (`-EINVAL`).
    BufferTooSmall,
    /// An allocation failed (`-ENOMEM`).
    OutOfMemory,
    /// [`super::Rm::init`] has not succeeded yet (`-ENODEV`).
    NotInitialized,
    /// The TPM answered something that is not a well-formed response (`-EIO`).
    BadResponse,
    /// The transport failed with this (negative) errno; the command may have reached the
    /// TPM.
    Transport(i32),
    /// The transport failed with this (negative) errno before the command reached the TPM
    /// (an allocation failed, say): nothing happened there.
    NotSent(i32),
    /// No TPM session slot is free right now, or other commands wait for one ahead of this
    /// one; nothing was changed (`Outcome::response`, for callers that do not wait: the
    /// kernel glue always waits, see `Rm::step`); `-EAGAIN`.
    #[cfg(not(tpmrs_kernel))]
    SessionsExhausted,
}

impl RmError {
    /// Whether the transport failed (before or after the command reached the TPM).
    pub fn is_transport(self) -> bool {
        matches!(self, RmError::Transport(_) | RmError::NotSent(_))
    }

    /// The negative errno for this error.
    pub fn to_errno(self) -> i32 {
        match self {
            RmError::InvalidCommand | RmError::BufferTooSmall => -EINVAL,
            RmError::TooBig => -E2BIG,
            RmError::OutOfMemory => -ENOMEM,
            RmError::NotInitialized => -ENODEV,
            RmError::BadResponse => -EIO,
            #[cfg(not(tpmrs_kernel))]
            RmError::SessionsExhausted => -EAGAIN,
            // A transport that reports a non-negative code still fails the call.
            RmError::Transport(code) | RmError::NotSent(code) if code < 0 => code,
            RmError::Transport(_) | RmError::NotSent(_) => -EIO,
        }
    }
}

impl From<OutOfMemory> for RmError {
    fn from(_: OutOfMemory) -> Self {
        RmError::OutOfMemory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_negative() {
        assert_eq!(RmError::InvalidCommand.to_errno(), -22);
        assert_eq!(RmError::BufferTooSmall.to_errno(), -22);
        assert_eq!(RmError::TooBig.to_errno(), -7);
        assert_eq!(RmError::OutOfMemory.to_errno(), -12);
        assert_eq!(RmError::NotInitialized.to_errno(), -19);
        assert_eq!(RmError::BadResponse.to_errno(), -5);
        assert_eq!(RmError::SessionsExhausted.to_errno(), -11);
        assert_eq!(RmError::Transport(-19).to_errno(), -19);
        assert_eq!(RmError::Transport(0).to_errno(), -5);
        assert_eq!(RmError::Transport(62).to_errno(), -5);
        assert_eq!(RmError::NotSent(-12).to_errno(), -12);
        assert_eq!(RmError::NotSent(0).to_errno(), -5);
    }
}
