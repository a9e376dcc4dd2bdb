//! An HTTP router on fanout (em-proxy's `http_proxy.rb`, made safe): the first request's `Host`
//! picks the backend from a configured table, and the connection stays with it. A host not in
//! the table gets `502 Bad Gateway` written by fanout itself: never an open proxy, no backend is
//! ever named by a client.
//!
//! ```text
//! cargo run --release -p fanout-io --example http_router -- --listen 127.0.0.1:9000 \
//!     --to 127.0.0.1:8081 --to 127.0.0.1:8082 \
//!     --route app.example=0 --route api.example=1
//! curl -H 'Host: api.example' http://127.0.0.1:9000/      # served by 127.0.0.1:8082
//! curl -H 'Host: other.example' http://127.0.0.1:9000/    # 502 from fanout
//! ```
//!
//! `--route HOST=N` sends `HOST` (any port, any letter case) to the N-th `--to` (from 0). The
//! head is read whole, at most `--max-frame` bytes (a longer one gets `431`), and parsed with
//! httparse (one that does not parse gets `400`). Every later request on the connection goes to
//! the same backend, byte for byte.

#[path = "common/http.rs"]
#[allow(dead_code)] // shared by the HTTP examples; each uses part of it
mod http;

use bytes::Bytes;
use fanout_engine::{Conn, Interceptor, Open, UpstreamId};
use fanout_io::error::Error;
use fanout_io::host::{self, Program};
use http::{Piece, RequestReader};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Routes HTTP connections by the Host of their first request.
#[derive(Debug, clap::Args)]
struct Flags {
    /// HOST=N: requests for HOST go to the N-th --to (counting from 0). Repeat for more.
    #[arg(long, value_name = "HOST=N", required = true)]
    route: Vec<String>,
}

struct Router {
    routes: BTreeMap<String, UpstreamId>,
}

/// Per connection: reading the first head, or routed.
enum Route {
    Reading(RequestReader),
    Routed,
}

fn reply(status: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// The host part of a `Host` header: no port, lower case.
fn host_of(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
    match text.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => text.split(':').next().unwrap_or("").to_string(),
    }
}

impl Interceptor for Router {
    type State = Route;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Route {
        Route::Reading(RequestReader::new(conn.config().max_frame))
    }

    fn on_data(&mut self, st: &mut Route, conn: &mut Conn<'_>, data: Bytes) {
        let Route::Reading(reader) = st else {
            return conn.forward(data);
        };
        let mut pieces = reader.push(data).into_iter();
        let Some(first) = pieces.next() else {
            return; // the head is not complete yet
        };
        let id = conn.id().0;
        let head = match first {
            Piece::Head(head) => head,
            Piece::GaveUp(why) => {
                eprintln!("[{id}] {why}: refused");
                let status = if why.contains("more than") {
                    "431 Request Header Fields Too Large"
                } else {
                    "400 Bad Request"
                };
                conn.answer(reply(status, "bad request\n"));
                conn.close_client();
                *st = Route::Routed;
                return;
            }
            Piece::Bytes(_) => unreachable!("a reader starts with a head"),
        };
        let host = head.header("host").map(host_of).unwrap_or_default();
        let Some(&upstream) = self.routes.get(&host) else {
            eprintln!(
                "[{id}] {} {} for unknown host {host:?}: 502",
                head.method, head.path
            );
            conn.answer(reply("502 Bad Gateway", "unknown host\n"));
            conn.close_client();
            *st = Route::Routed;
            return;
        };
        eprintln!(
            "[{id}] {} {} for {host} -> upstream {}",
            head.method, head.path, upstream.0
        );
        // Replies go straight to the client; requests are forwarded as they come.
        if conn.open(upstream, Open::primary().relay_server()).is_err() {
            return;
        }
        conn.forward(head.raw);
        for piece in pieces {
            match piece {
                Piece::Head(h) => conn.forward(h.raw),
                Piece::Bytes(b) => conn.forward(b),
                Piece::GaveUp(_) => {} // its bytes follow as plain bytes
            }
        }
        let rest = reader.take_rest();
        conn.forward(rest);
        *st = Route::Routed;
    }
}

fn parse_routes(routes: &[String]) -> Result<BTreeMap<String, UpstreamId>, Error> {
    let mut table = BTreeMap::new();
    for r in routes {
        let (host, n) = r
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--route {r}: expected HOST=N")))?;
        let n: u16 = n.parse().map_err(|_| {
            Error::Usage(format!(
                "--route {r}: N must be the index of a --to (0, 1, ...)"
            ))
        })?;
        table.insert(host.trim().to_ascii_lowercase(), UpstreamId(n));
    }
    Ok(table)
}

fn main() -> ExitCode {
    host::main("http_router", |flags: Flags| {
        let routes = parse_routes(&flags.route)?;
        Ok(Program::new(move || Router {
            routes: routes.clone(),
        }))
    })
}
