//! The ways `fanout` ends other than a clean drain, and the exit status of each.

use std::fmt;
use std::io;

/// A failure that ends the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad flag, config file or address: exit status 2.
    Usage(String),
    /// Something failed while running (an address in use, a poll error): exit status 1.
    Runtime(String),
    /// A second SIGTERM or SIGINT (or [`Stopper::stop`](crate::Stopper::stop)) ended a drain
    /// before its sessions finished; they were closed. Exit status 128 + `signal` (143 for
    /// SIGTERM, 130 for SIGINT): what a shell reports for a process that signal ended, so a
    /// script tells a cut drain from a clean one (0).
    DrainCutShort { signal: i32 },
    /// A capture tool read a capture that ends inside a record (as a crash leaves it), used every
    /// complete record before the tear, and otherwise succeeded: exit status 3.
    Torn(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Runtime(_) => 1,
            Error::DrainCutShort { signal } => {
                u8::try_from(128 + (*signal).clamp(1, 127)).unwrap_or(u8::MAX)
            }
            Error::Torn(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) | Error::Torn(m) => f.write_str(m),
            Error::DrainCutShort { signal } => {
                let name = match *signal {
                    libc::SIGTERM => "SIGTERM".to_string(),
                    libc::SIGINT => "SIGINT".to_string(),
                    n => format!("signal {n}"),
                };
                write!(
                    f,
                    "the drain was cut short by a second {name}: open sessions were closed"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// A short lowercase description of an I/O error for messages such as
/// "cannot listen on 127.0.0.1:80: permission denied".
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "not found".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}
