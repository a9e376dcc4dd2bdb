//! em-proxy's `duplex.rb` / `selective_forward.rb` on fanout: every request goes to production
//! (the first `--to`) and to a test server (the second `--to`) with its `User-Agent` rewritten;
//! only production's answer reaches the client. When a session ends it prints what each
//! backend answered (bytes, time to last byte, whether test matched production).
//!
//! ```text
//! cargo run --release -p fanout-io --example selective_forward -- \
//!     --listen 127.0.0.1:9000 --to 127.0.0.1:8081 --to 127.0.0.1:8082
//! cargo run --release -p fanout-io --example selective_forward -- ... --only-primary   # selective: test gets nothing
//! ```
//!
//! Request heads are read whole (at most `--max-frame` bytes) and parsed with httparse, bodies
//! counted by `Content-Length`, so the rewrite touches heads only however the bytes were split;
//! a request it does not follow (chunked, upgrade) makes the rest of the connection plain bytes.
//! The test server is a secondary: it never slows production's path, and past its budget or
//! deadline it is cut loose (see the README's duplex section).

#[path = "common/http.rs"]
#[allow(dead_code)] // shared by the HTTP examples; each uses part of it
mod http;

use bytes::Bytes;
use fanout_engine::{Conn, Interceptor, Open, SessionReport, UpstreamId};
use fanout_io::host::{self, Program};
use http::{Piece, RequestReader};
use std::process::ExitCode;

/// Duplex with a rewritten User-Agent; only production is heard.
#[derive(Debug, clap::Args)]
struct Flags {
    /// The User-Agent both backends see.
    #[arg(long, default_value = "em-proxy/0.1")]
    user_agent: String,
    /// Send requests to production only (em-proxy's selective_forward): the test server is
    /// connected but gets nothing.
    #[arg(long)]
    only_primary: bool,
}

struct Selective {
    user_agent: Bytes,
    only_primary: bool,
}

impl Selective {
    fn send(&self, conn: &mut Conn<'_>, data: Bytes) {
        match (self.only_primary, conn.primary()) {
            (true, Some(prod)) => conn.send(prod, data),
            _ => conn.forward(data),
        }
    }
}

impl Interceptor for Selective {
    type State = RequestReader;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> RequestReader {
        let _ = conn.open(UpstreamId(0), Open::primary().relay_server());
        let _ = conn.open(UpstreamId(1), Open::secondary().relay_server());
        RequestReader::new(conn.config().max_frame)
    }

    fn on_data(&mut self, reader: &mut RequestReader, conn: &mut Conn<'_>, data: Bytes) {
        for piece in reader.push(data) {
            match piece {
                Piece::Head(head) => {
                    let head = head.with_header("User-Agent", &self.user_agent);
                    self.send(conn, head);
                }
                Piece::Bytes(b) => self.send(conn, b),
                Piece::GaveUp(why) => {
                    eprintln!("[{}] {why}: passing the rest through", conn.id().0)
                }
            }
        }
    }

    fn on_client_eof(&mut self, reader: &mut RequestReader, conn: &mut Conn<'_>) {
        let rest = reader.take_rest();
        if !rest.is_empty() {
            self.send(conn, rest);
        }
    }

    fn on_end(&mut self, _: RequestReader, r: &SessionReport) {
        let describe = |i: usize| match r.backends.get(i) {
            Some(b) => format!(
                "{} {}B in {:?} ({})",
                if i == 0 { "prod" } else { "test" },
                b.bytes_received,
                b.last_byte.unwrap_or_default(),
                b.outcome.as_str()
            ),
            None => "-".into(),
        };
        let matched = r
            .backends
            .get(1)
            .and_then(|b| b.matches_primary)
            .map_or("-".into(), |m| m.to_string());
        eprintln!(
            "[{}] on_finish {} | {} | test matches prod: {matched}",
            r.conn.0,
            describe(0),
            describe(1)
        );
    }
}

fn main() -> ExitCode {
    host::main("selective_forward", |flags: Flags| {
        let user_agent = Bytes::from(flags.user_agent.into_bytes());
        let only_primary = flags.only_primary;
        Ok(Program::new(move || Selective {
            user_agent: user_agent.clone(),
            only_primary,
        }))
    })
}
