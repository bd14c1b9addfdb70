//! The system-call ABI shared by the Keel kernel and user space: numbers, error codes,
//! rights and message layout, and nothing else (DESIGN.md §6).
//!
//! Every value here is part of a stable binary interface: discriminants are explicit and
//! never reused. Today only the error codes exist; the calls arrive with issue 8.
#![no_std]
#![forbid(unsafe_code)]

/// Every failure the kernel can return to user space, with its stable numeric code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Error {
    /// An argument has a value the call does not accept.
    InvalidArgument = 1,
    /// A pointer or range names memory the caller may not access.
    BadAddress = 2,
    /// The caller's quota or the kernel's memory is exhausted.
    OutOfMemory = 3,
    /// The peer of an IPC operation has died.
    PeerDied = 4,
}

impl Error {
    /// The error for a numeric code, if the code is one the kernel returns.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::InvalidArgument,
            2 => Self::BadAddress,
            3 => Self::OutOfMemory,
            4 => Self::PeerDied,
            _ => return None,
        })
    }

    pub const fn code(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_not_an_error() {
        for error in [Error::InvalidArgument, Error::BadAddress, Error::OutOfMemory, Error::PeerDied] {
            assert_eq!(Error::from_code(error.code()), Some(error));
        }
        assert_eq!(Error::from_code(0), None);
    }
}
