//! Asking event loops to drain: SIGTERM/SIGINT, or a [`Stopper`].
//!
//! Each loop owns the reading end of a socket pair registered in its `Poll`; anything written to
//! the other end means "drain". Signal handlers (signal-hook) write a byte there, and so does
//! [`Stopper::stop`].

use mio::net::UnixStream;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

/// Creates a drain trigger: the end a loop polls, and the end that triggers it.
pub(crate) fn trigger() -> io::Result<(UnixStream, Arc<StdUnixStream>)> {
    let (rx, tx) = StdUnixStream::pair()?;
    rx.set_nonblocking(true)?;
    tx.set_nonblocking(true)?;
    Ok((UnixStream::from_std(rx), Arc::new(tx)))
}

/// Makes every event loop of a proxy drain, as SIGTERM does.
#[derive(Debug, Clone)]
pub struct Stopper {
    pub(crate) triggers: Vec<Arc<StdUnixStream>>,
}

impl Stopper {
    pub fn stop(&self) {
        for t in &self.triggers {
            // A full socket buffer already holds a pending request; nothing is lost.
            let _ = (&**t).write(b"x");
        }
    }
}

/// SIGTERM and SIGINT handlers that trigger a drain; removed on drop.
#[derive(Debug)]
pub struct SignalGuard {
    ids: Vec<SigId>,
}

impl SignalGuard {
    /// Installs the handlers for every trigger of `stopper`.
    pub fn install(stopper: &Stopper) -> io::Result<Self> {
        let mut ids = Vec::new();
        for t in &stopper.triggers {
            for signal in [SIGTERM, SIGINT] {
                // signal-hook owns (and closes) the descriptor it is given: give it a duplicate.
                let fd = t.try_clone()?.into_raw_fd();
                ids.push(signal_hook::low_level::pipe::register_raw(signal, fd)?);
            }
        }
        Ok(SignalGuard { ids })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
