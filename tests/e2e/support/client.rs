//! Client-side socket helpers. Every stream has read and write timeouts.

use super::ReadRetrying;
use super::LIVENESS;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connects to `addr` with a connect timeout and sets read/write timeouts of [`LIVENESS`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIVENESS)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    with_timeouts(s, LIVENESS)
}

/// Sets both timeouts of `s` to `t`.
pub fn with_timeouts(s: TcpStream, t: Duration) -> TcpStream {
    s.set_read_timeout(Some(t)).unwrap();
    s.set_write_timeout(Some(t)).unwrap();
    s
}

/// Writes `request`, shuts down the write side, and reads the response to EOF.
pub fn request(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    s.shutdown(Shutdown::Write).expect("shutdown(Write)");
    read_to_eof(&mut s)
}

/// Reads until EOF; panics on an error (including a read timeout), naming how much arrived.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read_retrying(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {} bytes: {}", out.len(), describe(&e)),
        }
    }
}

/// Reads exactly `n` bytes; panics (naming how many arrived) if EOF, an error or a timeout comes
/// first.
pub fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read_retrying(&mut out[got..]) {
            Ok(0) => panic!("EOF after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {got} of {n} bytes: {}", describe(&e)),
        }
    }
    out
}

/// How a connection ended from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// read returned 0.
    Eof,
    /// read failed (usually a reset).
    Error(ErrorKind),
}

/// Reads (discarding data) until EOF or an error, which must come within `within`; returns which
/// it was and the bytes discarded. Panics if the connection is still open after `within`.
pub fn expect_closed(s: &mut TcpStream, within: Duration) -> (Ended, usize) {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    let mut discarded = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("connection still open {within:?} later ({discarded} bytes read meanwhile)");
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read_retrying(&mut buf) {
            Ok(0) => return (Ended::Eof, discarded),
            Ok(n) => discarded += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open {within:?} later ({discarded} bytes read meanwhile)")
            }
            Err(e) => return (Ended::Error(e.kind()), discarded),
        }
    }
}

/// Whether nothing at all arrives on `s` for `quiet` (no byte, no EOF, no error).
pub fn stays_silent(s: &mut TcpStream, quiet: Duration) -> bool {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut b = [0u8; 1];
    let silent = matches!(
        s.read_retrying(&mut b),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    s.set_read_timeout(Some(LIVENESS)).unwrap();
    silent
}

/// Writes one byte and reads one back through an echo path: the session is being served.
pub fn echoes(s: &mut TcpStream, byte: u8) {
    s.write_all(&[byte]).expect("write one byte");
    let got = read_exactly(s, 1);
    assert_eq!(got, [byte], "echo returned a different byte");
}

/// An I/O error as a test failure message; a read timeout says so plainly.
pub fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timed out (nothing arrived)".to_string(),
        _ => e.to_string(),
    }
}

/// Connects with a receive buffer of about `rcvbuf` bytes (set before the handshake, so the
/// window never grows past it): the proxy's writes to this client back up quickly.
pub fn connect_with_small_window(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.connect_timeout(&addr.into(), LIVENESS)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    with_timeouts(sock.into(), LIVENESS)
}
