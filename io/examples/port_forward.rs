//! em-proxy's `port_forward.rb` on fanout: every client is relayed to the first `--to`, and every
//! hook logs what it sees (on stderr) before passing the bytes on unchanged.
//!
//! ```text
//! cargo run --release -p fanout-io --example port_forward -- --listen 127.0.0.1:9000 --to 127.0.0.1:8080
//! cargo run --release -p fanout-io --example port_forward -- replay --engine traffic.fcap
//! ```
//!
//! It takes every flag `fanout relay` does (`--threads`, `--capture`, `--bind-source`, ...), prints
//! `listening on ADDR`, and drains on SIGTERM. `--quiet` forwards without logging (the smallest
//! program on the host: the same as `Passthrough`).

use bytes::Bytes;
use fanout_engine::{BackendId, Conn, End, Finish, Interceptor, Open, SessionReport, UpstreamId};
use fanout_io::host::{self, Program};
use std::process::ExitCode;

/// A port forwarder that logs every hook.
#[derive(Debug, clap::Args)]
struct Flags {
    /// Log nothing; just forward.
    #[arg(long)]
    quiet: bool,
}

struct Logging {
    quiet: bool,
}

/// At most this much of each chunk is shown.
const PREVIEW: usize = 64;

fn preview(data: &[u8]) -> String {
    let shown = &data[..data.len().min(PREVIEW)];
    let text: String = shown.escape_ascii().to_string();
    if data.len() > PREVIEW {
        format!("{text}...")
    } else {
        text
    }
}

impl Logging {
    fn log(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

impl Interceptor for Logging {
    type State = ();

    fn on_connect(&mut self, conn: &mut Conn<'_>) {
        self.log(format_args!(
            "[{}] on_connect {}",
            conn.id().0,
            conn.client_addr()
        ));
        let _ = conn.open(UpstreamId(0), Open::primary());
    }

    fn on_backend_connected(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId) {
        self.log(format_args!("[{}] on_connect backend {}", conn.id().0, b.0));
    }

    fn on_connect_failed(
        &mut self,
        _: &mut (),
        conn: &mut Conn<'_>,
        b: BackendId,
        reason: fanout_engine::Failure,
    ) {
        self.log(format_args!(
            "[{}] connect to backend {} failed: {reason:?}",
            conn.id().0,
            b.0
        ));
    }

    fn on_data(&mut self, _: &mut (), conn: &mut Conn<'_>, data: Bytes) {
        self.log(format_args!(
            "[{}] on_data {} bytes \"{}\"",
            conn.id().0,
            data.len(),
            preview(&data)
        ));
        conn.forward(data);
    }

    fn on_response(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId, data: Bytes) {
        self.log(format_args!(
            "[{}] on_response backend {} {} bytes \"{}\"",
            conn.id().0,
            b.0,
            data.len(),
            preview(&data)
        ));
        conn.answer(data);
    }

    fn on_finish(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId, end: End) -> Finish {
        self.log(format_args!(
            "[{}] on_finish backend {} {end:?}",
            conn.id().0,
            b.0
        ));
        Finish::Default
    }

    fn on_end(&mut self, _: (), report: &SessionReport) {
        self.log(format_args!("[{}] session over", report.conn.0));
    }
}

fn main() -> ExitCode {
    host::main("port_forward", |flags: Flags| {
        let quiet = flags.quiet;
        Ok(Program::new(move || Logging { quiet }))
    })
}
