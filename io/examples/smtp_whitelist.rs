//! em-proxy's `smtp_whitelist.rb` on fanout: an SMTP proxy that answers `550 No such user here`
//! itself to a `RCPT TO` whose address is not on the whitelist; everything else goes to the
//! real server.
//!
//! ```text
//! cargo run --release --example smtp_whitelist -- --listen 127.0.0.1:2524 --to 127.0.0.1:2525
//! cargo run --release --example smtp_whitelist -- --listen 127.0.0.1:2524 --to 127.0.0.1:2525 \
//!     --allow you@example.com --allow @example.org
//! python3 -c 'import smtplib; s = smtplib.SMTP("127.0.0.1", 2524); \
//!     print(s.sendmail("a@b.c", ["ilya@igvita.com"], "Subject: hi\r\n\r\nhello"))'
//! ```
//!
//! Client lines are framed (`LineFramer`, at most `--max-frame` bytes); a refused recipient's
//! command never reaches the server. Answers keep SMTP's order even for a pipelining client: the
//! proxy's own `550` waits until the server has replied to every command before it. Message
//! lines (after the server's `354`) pass through untouched.

#[path = "common/smtp.rs"]
#[allow(dead_code)] // shared by the SMTP examples; each uses part of it
mod smtp;

use bytes::Bytes;
use fanout_engine::framing::Framer;
use fanout_engine::{BackendId, Conn, End, Finish, Interceptor, Open, UpstreamId};
use fanout_io::host::{self, Program};
use smtp::Dialogue;
use std::process::ExitCode;

/// Refuses recipients not on the whitelist.
#[derive(Debug, clap::Args)]
struct Flags {
    /// An address allowed as a recipient (`user@host`), or a whole domain (`@host`). Repeat.
    /// Without it, em-proxy's example's one address.
    #[arg(long, value_name = "ADDRESS", default_value = "ilya@igvita.com")]
    allow: Vec<String>,
}

struct Whitelist {
    allow: Vec<String>,
}

impl Whitelist {
    fn allowed(&self, address: &str) -> bool {
        self.allow
            .iter()
            .any(|a| a == address || (a.starts_with('@') && address.ends_with(a.as_str())))
    }
}

impl Interceptor for Whitelist {
    type State = Dialogue;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Dialogue {
        let _ = conn.open(UpstreamId(0), Open::primary());
        Dialogue::new(conn.config().max_frame)
    }

    fn on_data(&mut self, d: &mut Dialogue, conn: &mut Conn<'_>, data: Bytes) {
        d.client.push(data);
        loop {
            let line = match d.client.pop() {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("[{}] {e}: closing", conn.id().0);
                    d.answer(conn, "500 5.5.2 Line too long\r\n");
                    conn.close_client();
                    return;
                }
            };
            if d.in_body {
                d.body_line(conn, line);
                continue;
            }
            if smtp::verb(&line) == "RCPT" {
                let to = smtp::address(&line).unwrap_or_default();
                if !self.allowed(&to) {
                    eprintln!("[{}] refused recipient <{to}>", conn.id().0);
                    d.answer(conn, "550 No such user here\r\n");
                    continue;
                }
            }
            d.forward(conn, line);
        }
    }

    fn on_client_eof(&mut self, d: &mut Dialogue, conn: &mut Conn<'_>) {
        conn.forward(d.client.take_rest());
    }

    fn on_response(&mut self, d: &mut Dialogue, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        d.server_bytes(conn, data);
    }

    fn on_finish(
        &mut self,
        d: &mut Dialogue,
        conn: &mut Conn<'_>,
        _b: BackendId,
        _e: End,
    ) -> Finish {
        conn.answer(d.server.take_rest());
        Finish::Default
    }
}

fn main() -> ExitCode {
    host::main("smtp_whitelist", |flags: Flags| {
        let allow: Vec<String> = flags.allow.iter().map(|a| a.to_ascii_lowercase()).collect();
        Ok(Program::new(move || Whitelist {
            allow: allow.clone(),
        }))
    })
}
