//! End-to-end tests: the real `fanout` binary on loopback with real peers.
//!
//! Each module pins one group of behaviour from `CONTRACT.md`; `support` is the harness. Every
//! test starts its own fanout on `127.0.0.1:0` and learns the port from its `listening on` line,
//! so tests run in parallel without sharing anything.

mod support;

mod backpressure;
mod cli;
mod failures;
mod half_close;
mod leaks;
mod quickstart;
mod report;
mod secondary_isolation;
mod signals;
mod streaming;
