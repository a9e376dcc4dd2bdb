//! What both SMTP examples share: the dialogue's order. Every client command is either
//! forwarded (the server owes one reply) or answered by the proxy itself; answers must reach the
//! client in command order even when the client pipelines, so a local answer waits until the
//! server has replied to every command before it.

use bytes::Bytes;
use fanout_engine::framing::{Framer, LineFramer};
use fanout_engine::Conn;
use std::collections::VecDeque;

/// One reply the client is owed, in order.
#[derive(Debug)]
pub enum Owed {
    /// The server's reply to a forwarded command: passed on as it arrives.
    Server,
    /// The server's reply to a `DATA` the proxy sent on the client's behalf: a `354` is
    /// swallowed (the client already heard the proxy's own) and `then` is sent to the server;
    /// any other reply is the client's answer to its message.
    DataAccepted { then: Vec<Bytes> },
    /// The proxy's own answer.
    Local(Bytes),
}

/// The order of replies, and the line framers of both directions.
#[derive(Debug)]
pub struct Dialogue {
    pub client: LineFramer,
    pub server: LineFramer,
    owed: VecDeque<Owed>,
    /// Inside a reply of several lines (`250-...`).
    mid_reply: bool,
    /// The server said `354` to a `DATA` the client sent: client lines are the message until
    /// the line `.`.
    pub in_body: bool,
}

impl Dialogue {
    /// The server owes its greeting first.
    pub fn new(max_line: u64) -> Self {
        Dialogue {
            client: LineFramer::new(max_line),
            server: LineFramer::new(max_line),
            owed: VecDeque::from([Owed::Server]),
            mid_reply: false,
            in_body: false,
        }
    }

    /// The client command `line` goes to the server; its reply is owed next.
    pub fn forward(&mut self, conn: &mut Conn<'_>, line: Bytes) {
        conn.forward(line);
        self.owed.push_back(Owed::Server);
    }

    /// A client line of the message (after the server's `354`): forwarded; the line `.` ends
    /// the message and its reply is owed.
    pub fn body_line(&mut self, conn: &mut Conn<'_>, line: Bytes) {
        let end = is_end_of_message(&line);
        conn.forward(line);
        if end {
            self.in_body = false;
            self.owed.push_back(Owed::Server);
        }
    }

    /// Owe the client `reply` from the proxy itself, in order.
    pub fn answer(&mut self, conn: &mut Conn<'_>, reply: &'static str) {
        self.owed
            .push_back(Owed::Local(Bytes::from_static(reply.as_bytes())));
        self.flush_local(conn);
    }

    /// Send `DATA` to the server, then `body` once it answers `354`.
    pub fn send_data(&mut self, conn: &mut Conn<'_>, body: Vec<Bytes>) {
        conn.forward(Bytes::from_static(b"DATA\r\n"));
        self.owed.push_back(Owed::DataAccepted { then: body });
    }

    /// Lines read from the server: each reply goes to whom it is owed.
    pub fn server_bytes(&mut self, conn: &mut Conn<'_>, data: Bytes) {
        self.server.push(data);
        loop {
            let line = match self.server.pop() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(_) => {
                    // A reply line longer than any SMTP allows: pass the rest through untouched.
                    conn.answer(self.server.take_rest());
                    break;
                }
            };
            let last = !(line.len() > 3 && line[3] == b'-');
            match self.owed.front_mut() {
                Some(Owed::DataAccepted { then }) if line.starts_with(b"354") => {
                    if last {
                        for chunk in std::mem::take(then) {
                            conn.forward(chunk);
                        }
                        self.owed.pop_front();
                        self.owed.push_front(Owed::Server); // the reply to the message
                    }
                }
                // Server, a refused DATA, or a reply nobody asked for (passed on, as a relay would).
                front => {
                    if matches!(front, Some(Owed::Server)) && line.starts_with(b"354") {
                        self.in_body = true;
                    }
                    conn.answer(line)
                }
            }
            if last {
                if matches!(
                    self.owed.front(),
                    Some(Owed::Server | Owed::DataAccepted { .. })
                ) {
                    self.owed.pop_front();
                }
                self.flush_local(conn);
            }
            self.mid_reply = !last;
        }
    }

    /// Sends every local answer that is now first in line.
    fn flush_local(&mut self, conn: &mut Conn<'_>) {
        if self.mid_reply {
            return;
        }
        while let Some(Owed::Local(_)) = self.owed.front() {
            if let Some(Owed::Local(reply)) = self.owed.pop_front() {
                conn.answer(reply);
            }
        }
    }
}

/// The command word of a client line, upper-cased (`RCPT`, `DATA`, ...).
pub fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n' || b == b':')
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// The address in `RCPT TO:<addr>` / `MAIL FROM:<addr>`, lower-cased.
pub fn address(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let open = text.find('<')?;
    let close = text[open..].find('>')? + open;
    Some(text[open + 1..close].trim().to_ascii_lowercase())
}

/// The line `.` that ends a message.
pub fn is_end_of_message(line: &[u8]) -> bool {
    line == b".\r\n" || line == b".\n"
}
