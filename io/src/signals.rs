//! Signals as long-running daemons take them, and [`Stopper`], which asks what SIGTERM asks.
//!
//! - **SIGTERM, SIGINT**: the first drains every event loop (no new clients; open sessions may
//!   finish within `--drain-timeout`). A second one during the drain ends it at once: the
//!   engines close what is still open (reported as at the drain deadline) and the process exits
//!   with status 128 + the signal's number ([`Error::DrainCutShort`]).
//! - **SIGHUP**: reopens the `--report` file (for logrotate) and touches no session. Logs go to
//!   stderr, so there is no log file to reopen; configuration is not reloaded.
//!
//! Each loop owns the reading end of a socket pair registered in its `Poll`; every byte written
//! to the other end is one drain request. The SIGTERM/SIGINT handlers (signal-hook) write a byte
//! there directly and note which signal it was; [`Stopper::stop`] writes one too.
//! SIGHUP's work (opening a file) is not safe in a signal handler, so a thread of its own does it.

use crate::error::Error;
use crate::report::ReportSink;
use mio::net::UnixStream;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use signal_hook::SigId;
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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
    /// The signal behind the latest drain request; 0 for [`Stopper::stop`].
    pub(crate) signal: Arc<AtomicUsize>,
}

impl Stopper {
    pub(crate) fn new(triggers: Vec<Arc<StdUnixStream>>) -> Self {
        Stopper {
            triggers,
            signal: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The first call drains every loop; a second one during the drain ends it at once, and
    /// [`Proxy::run`](crate::Proxy::run) then returns [`Error::DrainCutShort`] (as if SIGTERM).
    pub fn stop(&self) {
        self.signal.store(0, Ordering::SeqCst);
        for t in &self.triggers {
            // A full socket buffer already holds pending requests; a loop that has ended has
            // nothing left to drain.
            let _ = (&**t).write(b"x");
        }
    }

    /// What ending a drain early means to the caller: the signal of the latest request.
    pub(crate) fn cut_short(&self) -> Error {
        match self.signal.load(Ordering::SeqCst) {
            0 => Error::DrainCutShort { signal: SIGTERM },
            n => Error::DrainCutShort {
                signal: i32::try_from(n).unwrap_or(SIGTERM),
            },
        }
    }
}

/// The handlers of SIGTERM, SIGINT and SIGHUP; removed on drop.
#[derive(Debug)]
pub struct SignalGuard {
    ids: Vec<SigId>,
    hangup: Handle,
    hangup_thread: Option<JoinHandle<()>>,
}

impl SignalGuard {
    /// Installs the handlers: SIGTERM and SIGINT ask every trigger of `stopper` for a drain,
    /// SIGHUP reopens `reports`' file.
    pub fn install(stopper: &Stopper, reports: ReportSink) -> io::Result<Self> {
        let mut ids = Vec::new();
        for signal in [SIGTERM, SIGINT] {
            // Notes which signal asked; read once the loops have ended, to pick the exit status.
            let which = usize::try_from(signal).expect("signal numbers are positive");
            ids.push(signal_hook::flag::register_usize(
                signal,
                Arc::clone(&stopper.signal),
                which,
            )?);
            for t in &stopper.triggers {
                // signal-hook owns (and closes) the descriptor it is given: give it a duplicate.
                let fd = t.try_clone()?.into_raw_fd();
                ids.push(signal_hook::low_level::pipe::register_raw(signal, fd)?);
            }
        }
        let mut hangups = Signals::new([SIGHUP])?;
        let hangup = hangups.handle();
        let hangup_thread = std::thread::Builder::new()
            .name("fanout-sighup".into())
            .spawn(move || {
                for _ in hangups.forever() {
                    reopen(&reports);
                }
            })?;
        Ok(SignalGuard {
            ids,
            hangup,
            hangup_thread: Some(hangup_thread),
        })
    }
}

/// SIGHUP: the report file is opened again; sessions go on untouched.
fn reopen(reports: &ReportSink) {
    match reports.reopen() {
        Ok(Some(path)) => tracing::info!("SIGHUP: reopened the report file {}", path.display()),
        Ok(None) => tracing::info!("SIGHUP: no report file to reopen"),
        Err(e) => tracing::warn!(
            "SIGHUP: cannot reopen the report file ({e}); still writing to the old one"
        ),
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        self.hangup.close();
        if let Some(t) = self.hangup_thread.take() {
            let _ = t.join();
        }
    }
}
