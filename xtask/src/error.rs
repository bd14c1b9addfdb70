//! The xtask's one error type: a single line that names the fix, and an exit status.

use std::fmt;

/// A failed step. Its `Display` is the one line printed before exiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The xtask could not do what was asked (missing tool, bad input, build failure).
    Failed,
    /// The kernel did not power the machine off in time.
    Timeout,
    /// A child command (for example `cargo test`) failed; its status is forwarded.
    Forwarded(i32),
}

/// Result with the xtask's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure explained in one line; say what went wrong and how to fix it.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Failed,
            message: message.into(),
        }
    }

    /// QEMU was stopped because the kernel did not power off within `seconds`.
    pub fn timeout(seconds: u64) -> Self {
        Self {
            kind: Kind::Timeout,
            message: format!("the kernel did not power off within {seconds} s"),
        }
    }

    /// A child command ended with `status`, which becomes the xtask's own exit status.
    pub fn forwarded(status: i32, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Forwarded(status),
            message: message.into(),
        }
    }

    /// The exit status for this failure: 124 for a timeout (as `timeout(1)` uses), the
    /// child's status when forwarded, else 1.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Failed => 1,
            Kind::Timeout => 124,
            Kind::Forwarded(status) => status,
        }
    }

    /// Whether this error is a QEMU timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// The message without the `xtask: …:` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.kind {
            Kind::Timeout => "timeout",
            Kind::Failed | Kind::Forwarded(_) => "error",
        };
        write!(f, "xtask: {label}: {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Attach a one-line context to an I/O error: `<context>: <io error>`.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::new(format!("{}: {error}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_kind() {
        let error = Error::timeout(60);
        assert_eq!(
            error.to_string(),
            "xtask: timeout: the kernel did not power off within 60 s"
        );
        assert_eq!(error.exit_code(), 124);
        assert!(error.is_timeout());
        assert_eq!(Error::new("x").exit_code(), 1);
        assert_eq!(Error::forwarded(101, "y").exit_code(), 101);
        assert_eq!(Error::new("no OVMF").to_string(), "xtask: error: no OVMF");
    }
}
