//! End-to-end tests: the real `fanout` binary on loopback with real peers.
//!
//! Each module pins one group of behaviour from `CONTRACT.md`; `support` is the harness. Every
//! test starts its own fanout on `127.0.0.1:0` and learns the port from its `listening on` line,
//! so tests run in parallel without sharing anything.
//!
//! Run: `cargo test -p fanout-io --test e2e` (the dev profile is quick enough; the whole suite
//! takes seconds). To run it against another build, e.g. a release binary, set `FANOUT_BIN`:
//! `FANOUT_BIN=$PWD/target/release/fanout cargo test -p fanout-io --test e2e` (an absolute path:
//! cargo runs the tests from `io/`). Tests of example programs (`host`) run
//! `cargo build --example NAME` once first, a no-op when the example is current
//! (`support/example.rs`); `FANOUT_EXAMPLES=DIR` runs prebuilt ones instead.
//!
//! Needs on PATH: `curl`, `python3` (quick start), `prlimit` from util-linux (descriptor
//! exhaustion), `beanstalkd` and Python's `greenstalk` (`pip install greenstalk`) for the
//! beanstalkd archiver. Every socket has timeouts and every wait a deadline: a broken proxy
//! fails a test with a message naming what did not happen, never hangs the suite.

mod support;

mod backpressure;
mod balance;
mod beanstalkd_archive;
mod beanstalkd_framing;
pub mod beanstalkd_store;
mod captures;
mod cli;
mod cross_driver;
mod examples;
mod failures;
mod half_close;
mod host;
mod leaks;
mod quickstart;
mod report;
mod secondary_isolation;
mod signals;
mod splice;
mod streaming;
