//! The harness: the `fanout` process (and example programs), backends as threads of this test process, clients, a
//! verifiable byte stream, and the duplex report.
//!
//! Every socket this harness opens has read and write timeouts, and every wait has a deadline, so
//! a broken proxy fails a test with a message instead of hanging the suite.

pub mod backend;
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
