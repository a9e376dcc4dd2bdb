//! Moving a relay's bytes kernel-side: `splice(2)` from one TCP socket into a pipe and from the
//! pipe into the other socket, so bulk transfers never copy through user space.
//!
//! The engine decides whether bytes may skip it ([`fanout_engine::Engine::splice_route`]); this
//! module only carries them. A [`Pipe`] belongs to the socket whose bytes it carries (the
//! source). Bytes enter it with [`Pipe::fill`] and leave with [`Pipe::drain`]; while it holds
//! bytes the destination has not taken, the source is not read (the pipe is the route's whole
//! buffer: backpressure without the engine's water marks) and the destination's own queue waits
//! behind it, so nothing is reordered.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// When the relay moves bytes with `splice(2)` instead of reading them into memory (`--splice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpliceMode {
    /// Once a socket shows a bulk transfer (one read of at least [`AUTO_AFTER`] bytes): small
    /// request/response traffic stays on the cheaper `recv`/`send` path, where a pipe adds
    /// work and saves no copy worth having.
    #[default]
    Auto,
    /// Every TCP socket the engine lets skip it, from its first byte.
    Always,
    /// Never: every byte through user space.
    Never,
}

/// `--splice auto` switches a socket to splicing after one read of at least this many bytes.
pub(crate) const AUTO_AFTER: usize = 32 * 1024;

/// What one `fill` asks the kernel to move at most; also the pipe size asked for: Linux's
/// default `pipe-max-size`. Measured with iperf3 through the relay: 9 splices per MiB with
/// 256 KiB pipes, 3 with 1 MiB. The pages are the sockets' own (moved, not copied), held only
/// while the destination has not taken them.
pub(crate) const PIPE_BYTES: usize = 1024 * 1024;

/// A pipe carrying one route's bytes, with a count of what it holds.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

/// How a `fill` went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Moved this many bytes into the pipe.
    Bytes(usize),
    /// The source sent EOF.
    Eof,
    /// Nothing to read now, or the pipe is full.
    WouldBlock,
}

impl Pipe {
    /// A non-blocking pipe, grown to [`PIPE_BYTES`] where the kernel allows (it keeps its default
    /// of 64 KiB otherwise).
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Best effort: a larger pipe means fewer splices per MiB; the default works too.
        // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Bytes in the pipe that the destination has not taken yet.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Moves what `from` has to read (up to [`PIPE_BYTES`]) into the pipe.
    pub(crate) fn fill(&mut self, from: RawFd) -> io::Result<Filled> {
        match splice(from, self.write.as_raw_fd(), PIPE_BYTES) {
            Ok(0) => Ok(Filled::Eof),
            Ok(n) => {
                self.held += n;
                Ok(Filled::Bytes(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Moves what the pipe holds into `to`; returns how much went (0 when `to` would block).
    pub(crate) fn drain(&mut self, to: RawFd) -> io::Result<usize> {
        let mut moved = 0;
        while self.held > 0 {
            match splice(self.read.as_raw_fd(), to, self.held) {
                Ok(0) => break,
                Ok(n) => {
                    self.held -= n;
                    moved += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: null offsets (both ends are a socket or a pipe); no memory of ours is touched.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of TCP sockets on loopback.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_go_from_one_socket_to_another_in_order_and_eof_shows() {
        let (mut writer, source) = pair();
        let (dest, mut reader) = pair();
        source.set_nonblocking(true).unwrap();
        dest.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).unwrap();
        drop(writer);
        let mut pipe = Pipe::new().unwrap();
        let mut got = Vec::new();
        let mut eof = false;
        while !eof || pipe.held() > 0 {
            if !eof && pipe.held() == 0 {
                eof = pipe.fill(source.as_raw_fd()).unwrap() == Filled::Eof;
            }
            pipe.drain(dest.as_raw_fd()).unwrap();
            let mut buf = vec![0; 65536];
            reader.set_nonblocking(true).unwrap();
            if let Ok(n) = reader.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        drop(dest);
        reader.set_nonblocking(false).unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_source_with_nothing_to_read_would_block() {
        let (_writer, source) = pair();
        source.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        assert_eq!(pipe.fill(source.as_raw_fd()).unwrap(), Filled::WouldBlock);
        assert_eq!(pipe.held(), 0);
    }

    #[test]
    fn a_destination_that_takes_nothing_leaves_the_bytes_in_the_pipe() {
        let (mut writer, source) = pair();
        let (dest, _reader) = pair(); // never read: its buffers fill
        source.set_nonblocking(true).unwrap();
        dest.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 65536];
        let mut pipe = Pipe::new().unwrap();
        let mut moved = 0;
        loop {
            writer.write_all(&chunk).unwrap();
            let _ = pipe.fill(source.as_raw_fd()).unwrap();
            moved += pipe.drain(dest.as_raw_fd()).unwrap();
            if pipe.held() > 0 {
                assert_eq!(pipe.drain(dest.as_raw_fd()).unwrap(), 0, "still blocked");
                break;
            }
            assert!(moved < 64 << 20, "a loopback socket never filled");
        }
    }
}
