//! A socket's queue of bytes the engine asked to write, written with vectored writes.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Buffers per `writev`. Linux accepts 1024; a few dozen already fill a socket buffer.
const MAX_SLICES: usize = 64;

/// The `Bytes` handed over by `Command::Write`, oldest first. The engine bounds how much it
/// hands over (its water marks), so the queue needs no limit of its own.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    bufs: VecDeque<Bytes>,
    len: u64,
}

/// How a call to [`WriteQueue::write_to`] ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Everything queued was written.
    Empty,
    /// The socket took no more (`WouldBlock`): wait for it to become writable.
    Blocked,
    /// The socket failed.
    Failed(io::Error),
}

impl WriteQueue {
    pub(crate) fn push(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        self.bufs.push_back(data);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Bytes queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes until the queue is empty or the writer stops taking bytes. Returns the bytes
    /// written (also when it then failed) and why it stopped.
    pub(crate) fn write_to(&mut self, w: &mut impl Write) -> (u64, Stop) {
        let mut written = 0;
        while !self.bufs.is_empty() {
            let result = if self.bufs.len() == 1 {
                // One buffer: `send` costs less in the kernel than `writev`.
                w.write(&self.bufs[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.bufs.len().min(MAX_SLICES);
                for (slot, buf) in slices.iter_mut().zip(self.bufs.iter()) {
                    *slot = IoSlice::new(buf);
                }
                w.write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return (written, Stop::Failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.consume(n);
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (written, Stop::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (written, Stop::Failed(e)),
            }
        }
        (written, Stop::Empty)
    }

    /// Drops the first `n` bytes.
    fn consume(&mut self, mut n: usize) {
        self.len -= n as u64;
        while n > 0 {
            let front = self.bufs.front_mut().expect("consumed more than queued");
            if front.len() <= n {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes per call, then says WouldBlock once `limit` is reached.
    struct Sink {
        got: Vec<u8>,
        room: usize,
        limit: usize,
        fail: Option<io::ErrorKind>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if let Some(kind) = self.fail {
                return Err(kind.into());
            }
            let space = self.limit - self.got.len();
            if space == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut take = self.room.min(space);
            let before = self.got.len();
            for b in bufs {
                let n = take.min(b.len());
                self.got.extend_from_slice(&b[..n]);
                take -= n;
            }
            Ok(self.got.len() - before)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(room: usize, limit: usize) -> Sink {
        Sink {
            got: Vec::new(),
            room,
            limit,
            fail: None,
        }
    }

    #[test]
    fn writes_everything_in_order_across_partial_writes() {
        let mut q = WriteQueue::default();
        for chunk in [&b"hello "[..], b"vectored ", b"world"] {
            q.push(Bytes::copy_from_slice(chunk));
        }
        let mut w = sink(4, usize::MAX);
        let (n, stop) = q.write_to(&mut w);
        assert!(matches!(stop, Stop::Empty));
        assert_eq!(n, 20);
        assert_eq!(w.got, b"hello vectored world");
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn stops_on_would_block_and_resumes_where_it_stopped() {
        let mut q = WriteQueue::default();
        q.push(Bytes::from_static(b"0123456789"));
        q.push(Bytes::from_static(b"abcdef"));
        let mut w = sink(100, 12);
        let (n, stop) = q.write_to(&mut w);
        assert!(matches!(stop, Stop::Blocked));
        assert_eq!(n, 12);
        assert_eq!(q.len(), 4);
        w.limit = 100;
        let (n, stop) = q.write_to(&mut w);
        assert!(matches!(stop, Stop::Empty));
        assert_eq!(n, 4);
        assert_eq!(w.got, b"0123456789abcdef");
    }

    #[test]
    fn more_buffers_than_one_writev_takes() {
        let mut q = WriteQueue::default();
        for i in 0..200u8 {
            q.push(Bytes::from(vec![i]));
        }
        let mut w = sink(usize::MAX, usize::MAX);
        let (n, stop) = q.write_to(&mut w);
        assert!(matches!(stop, Stop::Empty));
        assert_eq!(n, 200);
        assert_eq!(w.got, (0..200u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_writer_reports_the_error() {
        let mut q = WriteQueue::default();
        q.push(Bytes::from_static(b"x"));
        let mut w = sink(1, 10);
        w.fail = Some(io::ErrorKind::BrokenPipe);
        let (n, stop) = q.write_to(&mut w);
        assert_eq!(n, 0);
        assert!(matches!(stop, Stop::Failed(e) if e.kind() == io::ErrorKind::BrokenPipe));
    }
}
