//! em-proxy's `line_interceptor.rb` on fanout: responses pass through with every `hello`
//! rewritten (by default to `good bye`), line by line, so a word split across two reads is still
//! found.
//!
//! ```text
//! cargo run --release -p fanout-io --example line_interceptor -- --listen 127.0.0.1:9000 --to 127.0.0.1:8080
//! cargo run --release -p fanout-io --example line_interceptor -- --listen 127.0.0.1:9000 --to 127.0.0.1:8080 \
//!     --find hello --replace "good bye"
//! ```
//!
//! Responses are framed into lines (`fanout_engine::framing::LineFramer`, at most
//! `--max-frame` bytes a line, default 64 KiB): a line is held until its newline arrives, then
//! rewritten and sent; what follows the last newline is sent when the backend closes. A line
//! longer than the limit ends the rewriting for that session: from there on the bytes pass
//! through unchanged (nothing is lost, nothing is buffered without bound). The rewrite is of
//! bytes: a protocol that states lengths (HTTP `Content-Length`) is not adjusted, as in em-proxy.

use bytes::Bytes;
use fanout_engine::framing::{Framer, LineFramer};
use fanout_engine::{BackendId, Conn, End, Finish, Interceptor, Open, UpstreamId};
use fanout_io::host::{self, Program};
use std::process::ExitCode;

/// Rewrites a word in every response.
#[derive(Debug, clap::Args)]
struct Flags {
    /// The bytes to find in responses.
    #[arg(long, default_value = "hello")]
    find: String,
    /// What to put in their place.
    #[arg(long, default_value = "good bye")]
    replace: String,
}

struct Rewrite {
    find: Vec<u8>,
    replace: Vec<u8>,
}

/// Per session: the response's line framer, until a line is too long.
struct Lines(Option<LineFramer>);

impl Rewrite {
    fn rewrite(&self, line: &[u8]) -> Bytes {
        if self.find.is_empty() {
            return Bytes::copy_from_slice(line);
        }
        let mut out = Vec::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            if line[i..].starts_with(&self.find) {
                out.extend_from_slice(&self.replace);
                i += self.find.len();
            } else {
                out.push(line[i]);
                i += 1;
            }
        }
        Bytes::from(out)
    }
}

impl Interceptor for Rewrite {
    type State = Lines;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Lines {
        // Requests go straight through; only responses are read.
        let _ = conn.open(UpstreamId(0), Open::primary().relay_client());
        Lines(Some(LineFramer::new(conn.config().max_frame)))
    }

    fn on_response(&mut self, st: &mut Lines, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        let Some(framer) = &mut st.0 else {
            return conn.answer(data);
        };
        framer.push(data);
        loop {
            match framer.pop() {
                Ok(Some(line)) => conn.answer(self.rewrite(&line)),
                Ok(None) => return,
                Err(e) => {
                    eprintln!("[{}] {e}: passing the rest through unchanged", conn.id().0);
                    conn.answer(framer.take_rest());
                    st.0 = None;
                    return;
                }
            }
        }
    }

    fn on_finish(&mut self, st: &mut Lines, conn: &mut Conn<'_>, _b: BackendId, _e: End) -> Finish {
        if let Some(framer) = &mut st.0 {
            let rest = framer.take_rest();
            conn.answer(self.rewrite(&rest));
        }
        Finish::Default
    }
}

fn main() -> ExitCode {
    host::main("line_interceptor", |flags: Flags| {
        let (find, replace) = (flags.find.into_bytes(), flags.replace.into_bytes());
        Ok(Program::new(move || Rewrite {
            find: find.clone(),
            replace: replace.clone(),
        }))
    })
}
