//! Turmoil TCP streams split into a read half and a write half that can wait for each other's
//! conditions, with one fix: [`WriteHalf::shutdown`] waits until the peer's receive queue has room.
//!
//! Why: turmoil 0.7.2 limits data segments by credits, but sends a FIN without one; a FIN that
//! arrives while the receiver's queue is full is parked in the reorder buffer and, since nothing
//! follows a FIN, never delivered — the peer waits for an EOF forever. Real TCP delivers it. Waiting
//! for a credit (one free slot) before the FIN restores that. Every simulated socket (the proxy's
//! and the hosts') goes through this module.
//!
//! Both halves share the stream through an `Rc<RefCell<_>>` borrowed only inside a synchronous
//! poll, never across an `await`; turmoil keeps separate wakers for reading and writing.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use turmoil::net::TcpStream;

pub struct ReadHalf(Rc<RefCell<TcpStream>>);
pub struct WriteHalf(Rc<RefCell<TcpStream>>);

pub fn split(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let shared = Rc::new(RefCell::new(stream));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

impl ReadHalf {
    /// Reads some bytes; `Ok(0)` is EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut stream = self.0.borrow_mut();
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Fills `buf` or fails with `UnexpectedEof`.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(())
    }
}

impl WriteHalf {
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, data))
                    .await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Sends a FIN once the peer can take it (see the module doc).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let stream = self.0.borrow();
            let writable = pin!(stream.writable());
            writable.poll(cx)
        })
        .await?;
        std::future::poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)).await
    }
}
