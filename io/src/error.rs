//! The ways `fanout` fails, and the exit status of each.

use std::fmt;
use std::io;

/// A failure that ends the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad flag, config file or address: exit status 2.
    Usage(String),
    /// Something failed while running (an address in use, a poll error): exit status 1.
    Runtime(String),
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
            Error::Torn(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) | Error::Torn(m) => f.write_str(m),
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
