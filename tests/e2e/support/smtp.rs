//! A local SMTP sink (the server behind the SMTP examples): it speaks just enough SMTP for
//! Python's smtplib — greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT — and records every
//! command line and every message it accepted.

use super::backend::{Backend, Stop, BACKEND_TIMEOUT};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// What the sink saw, over all its connections.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every command line, without CRLF.
    pub commands: Vec<String>,
    /// Every message accepted (the lines between `354` and `.`).
    pub messages: Vec<String>,
}

/// A running sink.
pub struct Sink {
    pub backend: Backend,
    pub seen: Arc<Mutex<Seen>>,
}

impl Sink {
    pub fn spawn() -> Sink {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = Arc::clone(&seen);
        let backend = Backend::spawn(move |stream, stop| serve(stream, stop, &s));
        Sink { backend, seen }
    }

    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().commands.clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.seen.lock().unwrap().messages.clone()
    }
}

fn serve(stream: TcpStream, _stop: &Stop, seen: &Mutex<Seen>) {
    stream.set_read_timeout(Some(BACKEND_TIMEOUT)).ok();
    let mut out = stream.try_clone().expect("clone");
    let mut lines = BufReader::new(stream);
    let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
    if !say("220 sink.test ESMTP ready\r\n") {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if !matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        let cmd = line.trim_end().to_string();
        seen.lock().unwrap().commands.push(cmd.clone());
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" => say("250-sink.test\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n"),
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => say("250 OK\r\n"),
            "DATA" => {
                if !say("354 go ahead\r\n") {
                    return;
                }
                let mut message = String::new();
                loop {
                    line.clear();
                    if !matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                seen.lock().unwrap().messages.push(message);
                say("250 queued\r\n")
            }
            "QUIT" => {
                say("221 bye\r\n");
                return;
            }
            _ => say("502 command not implemented\r\n"),
        };
        if !ok {
            return;
        }
    }
}
