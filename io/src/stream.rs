//! A connected socket, TCP or unix, and how its errors translate into engine [`Failure`]s.

use crate::addr::Target;
use fanout_engine::Failure;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;

/// A client or backend socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect. TCP sockets get `TCP_NODELAY`: the proxy forwards what it
    /// reads at once and must not add Nagle's delay to small responses.
    pub(crate) fn connect(target: &Target) -> io::Result<Stream> {
        match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect(*addr)?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Target::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }

    /// Whether a connect started with [`Stream::connect`] has finished: `Ok(true)` connected,
    /// `Ok(false)` still in progress, `Err` failed.
    pub(crate) fn connect_result(&self) -> io::Result<bool> {
        // A peer address means connected: one syscall in the common case. Only without one is
        // the pending error worth asking for.
        let peer = match self {
            Stream::Tcp(s) => s.peer_addr().map(drop),
            Stream::Unix(s) => s.peer_addr().map(drop),
        };
        let not_connected = match peer {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        let pending = match self {
            Stream::Tcp(s) => s.take_error()?,
            Stream::Unix(s) => s.take_error()?,
        };
        match pending {
            Some(e) => Err(e),
            None if not_connected.kind() == io::ErrorKind::NotConnected => Ok(false),
            None => Err(not_connected),
        }
    }

    /// Reads into uninitialised memory; returns how many bytes were written there.
    pub(crate) fn recv(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).recv(buf),
            Stream::Unix(s) => socket2::SockRef::from(s).recv(buf),
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// Why a connect failed, as the engine classifies it.
pub(crate) fn connect_failure(e: &io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Failure::Refused,
        Some(libc::ETIMEDOUT) => Failure::TimedOut,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENOENT) => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// Why an established socket failed on a read or a write.
pub(crate) fn io_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::TimedOut => Failure::TimedOut,
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => Failure::Unreachable,
            _ => Failure::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_engine_failures() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(connect_failure(&os(libc::ECONNREFUSED)), Failure::Refused);
        assert_eq!(connect_failure(&os(libc::ETIMEDOUT)), Failure::TimedOut);
        assert_eq!(
            connect_failure(&os(libc::EHOSTUNREACH)),
            Failure::Unreachable
        );
        assert_eq!(connect_failure(&os(libc::ENOENT)), Failure::Unreachable);
        assert_eq!(connect_failure(&os(libc::EACCES)), Failure::Other);
        assert_eq!(io_failure(&os(libc::ECONNRESET)), Failure::Reset);
        assert_eq!(io_failure(&os(libc::EPIPE)), Failure::Reset);
        assert_eq!(io_failure(&os(libc::EIO)), Failure::Other);
    }
}
