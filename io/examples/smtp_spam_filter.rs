//! em-proxy's `smtp_spam_filter.rb` on fanout: an SMTP proxy that holds each message, asks an
//! **effect** for a spam verdict, and then forwards the message to the server or refuses it
//! itself (`550 5.7.1`), so a spam message never reaches the server.
//!
//! ```text
//! cargo run --release -p fanout-io --example smtp_spam_filter -- --listen 127.0.0.1:2524 \
//!     --to 127.0.0.1:2525 --spam-word viagra --spam-word lottery
//! ```
//!
//! How it works, and why it is built this way:
//! - The client's `DATA` is answered by the proxy (`354`) and not forwarded: the server must not
//!   enter its message state for a message that may be refused. The message's lines are put on
//!   hold in the engine (bounded by `--max-held`; a larger message is refused with `552` rather
//!   than buffered without bound).
//! - At the line `.` the proxy asks for an effect (`spam-verdict`, the message as payload). The
//!   verdict is computed by the executor on fanout's worker pool, never on the event loop (here:
//!   does the message contain a `--spam-word`; `--verdict-delay` makes it slow, as a remote
//!   service would be). Its result is an engine input, so a capture replays without it.
//! - Ham: the proxy sends `DATA` to the server, swallows the server's `354`, sends the held
//!   message, and the server's reply to it reaches the client. Spam: `550 5.7.1`. No verdict
//!   (the executor failed, or took longer than `--effect-timeout`): `451 4.7.1`, a temporary
//!   failure the client retries later: the message is neither lost nor let through unchecked.
//! - Replies keep SMTP's order for pipelining clients (the proxy's own replies wait for the
//!   server's earlier ones), and nothing the client sends after the message overtakes the
//!   verdict (the engine holds output behind a pending effect).

#[path = "common/smtp.rs"]
#[allow(dead_code)] // shared by the SMTP examples; each uses part of it
mod smtp;

use bytes::{Bytes, BytesMut};
use fanout_engine::framing::Framer;
use fanout_engine::{
    BackendId, Conn, EffectError, EffectId, EffectRequest, EffectResult, End, Finish, Interceptor,
    Open, UpstreamId,
};
use fanout_io::host::{self, Executor, Program};
use smtp::Dialogue;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Holds each message until an effect says whether it is spam.
#[derive(Debug, clap::Args)]
struct Flags {
    /// A word that makes a message spam (case-insensitive). Repeat.
    #[arg(long, value_name = "WORD")]
    spam_word: Vec<String>,
    /// How long each verdict takes (a stand-in for a remote spam service).
    #[arg(long, value_name = "DUR", value_parser = fanout_io::units::parse_duration, default_value = "0s")]
    verdict_delay: Duration,
}

/// The effect executor: runs on the worker pool.
struct Verdicts {
    words: Vec<Vec<u8>>,
    delay: Duration,
}

impl Executor for Verdicts {
    fn execute(&self, request: &EffectRequest) -> EffectResult {
        if request.kind != "spam-verdict" {
            let why = format!("unknown effect {}", request.kind);
            return Err(EffectError::Failed(why.into()));
        }
        std::thread::sleep(self.delay);
        let message = request.payload.to_ascii_lowercase();
        let spam = self
            .words
            .iter()
            .any(|w| !w.is_empty() && message.windows(w.len()).any(|win| win == &w[..]));
        Ok(Bytes::from_static(if spam { b"spam" } else { b"ham" }))
    }
}

struct SpamFilter;

/// Where the client's lines go.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Commands,
    /// Holding the message for a verdict.
    Message,
    /// The message was too big: dropping its lines until `.`.
    Skipping,
}

struct Session {
    dialogue: Dialogue,
    mode: Mode,
}

impl SpamFilter {
    fn client_line(&self, s: &mut Session, conn: &mut Conn<'_>, line: Bytes) {
        match s.mode {
            Mode::Commands if s.dialogue.in_body => s.dialogue.body_line(conn, line),
            Mode::Commands if smtp::verb(&line) == "DATA" => {
                s.dialogue
                    .answer(conn, "354 Start mail input; end with <CRLF>.<CRLF>\r\n");
                s.mode = Mode::Message;
            }
            Mode::Commands => s.dialogue.forward(conn, line),
            Mode::Message if smtp::is_end_of_message(&line) => {
                conn.hold(line);
                let mut message = BytesMut::new();
                for chunk in conn.take_held() {
                    message.extend_from_slice(&chunk);
                }
                let message = message.freeze();
                // The message stays on hold (bounded) until the verdict.
                conn.hold(message.clone());
                let _ = conn.effect(EffectRequest::new("spam-verdict", message));
                s.mode = Mode::Commands;
            }
            Mode::Message => {
                if conn.held() + line.len() as u64 > conn.config().max_held / 2 {
                    // Refuse rather than hold without bound (half the limit: the message is
                    // copied once into the effect's request).
                    drop(conn.take_held());
                    s.mode = Mode::Skipping;
                } else {
                    conn.hold(line);
                }
            }
            Mode::Skipping if smtp::is_end_of_message(&line) => {
                s.dialogue
                    .answer(conn, "552 5.3.4 Message too big for the spam filter\r\n");
                s.mode = Mode::Commands;
            }
            Mode::Skipping => {}
        }
    }
}

impl Interceptor for SpamFilter {
    type State = Session;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Session {
        let _ = conn.open(UpstreamId(0), Open::primary());
        Session {
            dialogue: Dialogue::new(conn.config().max_frame),
            mode: Mode::Commands,
        }
    }

    fn on_data(&mut self, s: &mut Session, conn: &mut Conn<'_>, data: Bytes) {
        s.dialogue.client.push(data);
        loop {
            match s.dialogue.client.pop() {
                Ok(Some(line)) => self.client_line(s, conn, line),
                Ok(None) => return,
                Err(e) => {
                    eprintln!("[{}] {e}: closing", conn.id().0);
                    s.dialogue.answer(conn, "500 5.5.2 Line too long\r\n");
                    conn.close_client();
                    return;
                }
            }
        }
    }

    fn on_effect(&mut self, s: &mut Session, conn: &mut Conn<'_>, _id: EffectId, r: EffectResult) {
        let message = conn.take_held();
        match r {
            Ok(v) if &v[..] == b"ham" => s.dialogue.send_data(conn, message),
            Ok(_) => {
                eprintln!("[{}] message refused as spam", conn.id().0);
                s.dialogue
                    .answer(conn, "550 5.7.1 Message rejected as spam\r\n");
            }
            Err(e) => {
                eprintln!("[{}] no spam verdict ({e}): temporary failure", conn.id().0);
                s.dialogue.answer(
                    conn,
                    "451 4.7.1 Spam check unavailable, try again later\r\n",
                );
            }
        }
    }

    fn on_response(&mut self, s: &mut Session, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        s.dialogue.server_bytes(conn, data);
    }

    fn on_finish(
        &mut self,
        s: &mut Session,
        conn: &mut Conn<'_>,
        _b: BackendId,
        _e: End,
    ) -> Finish {
        conn.answer(s.dialogue.server.take_rest());
        Finish::Default
    }
}

fn main() -> ExitCode {
    host::main("smtp_spam_filter", |flags: Flags| {
        let words = flags
            .spam_word
            .iter()
            .map(|w| w.to_ascii_lowercase().into_bytes())
            .collect();
        let delay = flags.verdict_delay;
        Ok(Program::new(|| SpamFilter)
            .with_executor(move || Ok(Arc::new(Verdicts { words, delay }) as Arc<dyn Executor>)))
    })
}
