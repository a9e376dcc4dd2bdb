//! The smallest program on fanout's host: a port forwarder. Every client is relayed to the first
//! `--to` by the default interceptor, `Passthrough`, which forwards every byte unchanged.
//!
//! ```text
//! cargo run -p fanout-io --example port_forward -- --listen 127.0.0.1:9000 --to 127.0.0.1:8080
//! cargo run -p fanout-io --example port_forward -- replay --engine traffic.fcap
//! ```
//!
//! It takes every flag `fanout relay` does (`--threads`, `--capture`, `--bind-source`, ...), prints
//! `listening on ADDR`, and drains on SIGTERM. A program of your own replaces `Passthrough` with
//! its interceptor, `NoFlags` with its own `clap::Args` struct, and may add an effect executor
//! (`Program::with_executor`).

use fanout_engine::Passthrough;
use fanout_io::host::{self, NoFlags, Program};
use std::process::ExitCode;

fn main() -> ExitCode {
    host::main("port_forward", |_: NoFlags| {
        Ok(Program::new(|| Passthrough))
    })
}
