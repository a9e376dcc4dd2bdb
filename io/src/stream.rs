//! A connected socket, TCP or unix, and how its errors translate into engine [`Failure`]s.

use crate::addr::Target;
use fanout_engine::Failure;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Shutdown, SocketAddr};

/// A client or backend socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect. TCP sockets get `TCP_NODELAY`: the proxy forwards what it
    /// reads at once and must not add Nagle's delay to small responses. With `bind_source` a TCP
    /// socket is bound to that address (any port) before it connects; unix sockets ignore it.
    pub(crate) fn connect(target: &Target, bind_source: Option<IpAddr>) -> io::Result<Stream> {
        match (target, bind_source) {
            (Target::Tcp(addr), None) => {
                let s = TcpStream::connect(*addr)?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            (Target::Tcp(addr), Some(source)) => connect_from(source, *addr).map(Stream::Tcp),
            (Target::Unix(path), _) => UnixStream::connect(path).map(Stream::Unix),
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

    /// The descriptor of a TCP socket (what `splice(2)` moves bytes between); `None` for unix
    /// sockets, which the relay never splices.
    pub(crate) fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Tcp(s) => Some(s.as_raw_fd()),
            Stream::Unix(_) => None,
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

/// A non-blocking TCP connect from `source` (the kernel picks the port) to `to`.
fn connect_from(source: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    no_port_at_bind(&socket);
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Linux: `IP_BIND_ADDRESS_NO_PORT`, so binding to port 0 does not reserve an ephemeral port
/// until the connect picks one for the whole 4-tuple. Without it every source-bound connection
/// holds a port of its own, and the source runs out of ports at ~28k backend connections, whatever
/// the backends. Best effort: an older kernel simply reserves the port at bind.
fn no_port_at_bind(socket: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor, and a pointer to an int with its exact length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!("IP_BIND_ADDRESS_NO_PORT: {}", io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Why a connect failed, as the engine classifies it.
pub(crate) fn connect_failure(e: &io::Error) -> Failure {
    if is_out_of_resources(e) {
        return Failure::NoDescriptors;
    }
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Failure::Refused,
        Some(libc::ETIMEDOUT) => Failure::TimedOut,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENOENT) => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// The process or the system ran out of descriptors or socket memory: nothing to do with the
/// peer, and the next socket would fail the same way until some are freed.
pub(crate) fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
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
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(connect_failure(&os(errno)), Failure::NoDescriptors);
        }
        assert_eq!(io_failure(&os(libc::ECONNRESET)), Failure::Reset);
        assert_eq!(io_failure(&os(libc::EPIPE)), Failure::Reset);
        assert_eq!(io_failure(&os(libc::EIO)), Failure::Other);
    }

    #[test]
    fn a_source_bound_connect_comes_from_that_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let s = Stream::connect(&Target::Tcp(to), Some(source)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        let Stream::Tcp(tcp) = s else {
            panic!("a TCP target gave a unix socket")
        };
        assert!(tcp.nodelay().unwrap(), "TCP_NODELAY was lost");
    }
}
