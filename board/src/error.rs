//! One error type for every board trait, with a [`Error::kind`] that callers
//! match on (the message and the OS error are for logs, not for logic).

use std::fmt;
use std::io;

/// What went wrong, independent of the device that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device node, sysfs file or profile does not exist.
    NotFound,
    /// The process may not open or drive the device.
    PermissionDenied,
    /// The device or this build cannot do what was asked (e.g. no timeout
    /// setting, GPIO character devices compiled out).
    Unsupported,
    /// Another process holds the device (e.g. the watchdog daemon owns
    /// /dev/watchdog).
    Busy,
    /// The board profile is malformed or names something impossible.
    InvalidProfile,
    /// The operation needs a started device (e.g. keepalive before start).
    NotStarted,
    /// Any other I/O failure.
    Io,
}

/// A board error: a [`kind`](Error::kind), what was being done, and the OS
/// error when there was one.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<io::Error>,
}

impl Error {
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// Wraps an OS error, classifying it by its `io::ErrorKind` / errno.
    pub fn io(context: impl Into<String>, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => match err.raw_os_error() {
                Some(code) if code == nix::libc::EBUSY => ErrorKind::Busy,
                Some(code)
                    if code == nix::libc::ENOTTY
                        || code == nix::libc::EOPNOTSUPP
                        || code == nix::libc::EINVAL =>
                {
                    ErrorKind::Unsupported
                }
                _ => ErrorKind::Io,
            },
        };
        Self {
            kind,
            context: context.into(),
            source: Some(err),
        }
    }

    pub fn errno(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::io(context, io::Error::from_raw_os_error(errno as i32))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(err) => write!(f, "{}: {err}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Board errors are also embedded-hal digital errors, so pins can use them.
impl embedded_hal::digital::Error for Error {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

pub type Result<T> = std::result::Result<T, Error>;
