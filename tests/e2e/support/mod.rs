//! The harness: the `fanout` process (and example programs), backends as threads of this test process, clients, a
//! verifiable byte stream, and the duplex report.
//!
//! Every socket this harness opens has read and write timeouts, and every wait has a deadline, so
//! a broken proxy fails a test with a message instead of hanging the suite.

pub mod backend;
pub mod beanstalkd;
pub mod client;
pub mod example;
pub mod pattern;
pub mod proxy;
pub mod report;
pub mod smtp;

use std::time::{Duration, Instant};

/// How long anything that should happen "at once" may take before a test calls it broken. A
/// liveness bound for a loaded CI machine, not a speed claim.
pub const LIVENESS: Duration = Duration::from_secs(10);

/// Polls `cond` every 10 ms until it holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `read` that a stop/continue cannot cut short. On Linux a blocking socket read with a timeout
/// (`SO_RCVTIMEO`, which every harness socket has) fails with `EINTR` when the process is stopped
/// and continued, even with no signal handler installed (signal(7)): a debugger, a cgroup freezer
/// or a loaded CI host does that. `read_exact` retries it; a bare `read` returns it, and a test
/// would take it for the proxy closing, answering or staying silent.
pub trait ReadRetrying: std::io::Read {
    fn read_retrying(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

impl<R: std::io::Read + ?Sized> ReadRetrying for R {}
