//! What the HTTP examples share: request heads read whole (bounded) and parsed with httparse,
//! bodies counted by `Content-Length`, so a rewrite touches heads only, however the bytes were
//! split. A request this does not follow (a chunked body, an upgrade, a head that does not
//! parse) turns the rest of the connection into plain bytes: passed on, never lost.

use bytes::{Bytes, BytesMut};

/// One request head, parsed.
#[derive(Debug)]
pub struct Head {
    /// The head's bytes, up to and including the blank line.
    pub raw: Bytes,
    pub method: String,
    pub path: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    /// The head again, with `name` set to `value` (replaced where present).
    pub fn with_header(&self, name: &str, value: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(self.raw.len() + value.len());
        let first_line_end = self.raw.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
        out.extend_from_slice(&self.raw[..first_line_end]);
        let mut set = false;
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            if n.eq_ignore_ascii_case(name) {
                out.extend_from_slice(value);
                set = true;
            } else {
                out.extend_from_slice(v);
            }
            out.extend_from_slice(b"\r\n");
        }
        if !set {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }
}

/// What the reader made of the bytes pushed so far.
#[derive(Debug)]
pub enum Piece {
    /// A whole request head.
    Head(Head),
    /// Body bytes (or, once the reader gave up following requests, any bytes).
    Bytes(Bytes),
    /// The head passed the limit or did not parse: the reader passes everything on from here.
    GaveUp(String),
}

/// Splits a client's byte stream into request heads and the bytes between them.
#[derive(Debug)]
pub struct RequestReader {
    buf: BytesMut,
    max_head: usize,
    /// Body bytes of the current request still to come.
    body_left: u64,
    raw: bool,
}

impl RequestReader {
    pub fn new(max_head: u64) -> Self {
        RequestReader {
            buf: BytesMut::new(),
            max_head: usize::try_from(max_head).unwrap_or(usize::MAX),
            body_left: 0,
            raw: false,
        }
    }

    /// Everything not yet handed out (for EOF).
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Feeds bytes; returns the pieces they completed, in order. Body bytes (and everything
    /// once the reader gave up) that arrive with nothing buffered pass on as slices of `data`,
    /// never copied; only heads are gathered into a buffer.
    pub fn push(&mut self, mut data: Bytes) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.buf.is_empty() {
            if self.raw {
                if !data.is_empty() {
                    out.push(Piece::Bytes(data));
                }
                return out;
            }
            if self.body_left > 0 && !data.is_empty() {
                let n = self.body_left.min(data.len() as u64) as usize;
                self.body_left -= n as u64;
                out.push(Piece::Bytes(data.split_to(n)));
            }
        }
        self.buf.extend_from_slice(&data);
        loop {
            if self.raw {
                if !self.buf.is_empty() {
                    out.push(Piece::Bytes(self.buf.split().freeze()));
                }
                return out;
            }
            if self.body_left > 0 {
                if self.buf.is_empty() {
                    return out;
                }
                let n = self.body_left.min(self.buf.len() as u64) as usize;
                self.body_left -= n as u64;
                out.push(Piece::Bytes(self.buf.split_to(n).freeze()));
                continue;
            }
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.buf.len() > self.max_head {
                    self.raw = true;
                    out.push(Piece::GaveUp(format!(
                        "a request head of more than {} bytes",
                        self.max_head
                    )));
                    continue;
                }
                return out;
            };
            let raw = self.buf.split_to(end + 4).freeze();
            match parse(raw.clone()) {
                Ok((head, body)) => {
                    match body {
                        Body::Length(n) => self.body_left = n,
                        Body::Unknown => self.raw = true,
                    }
                    out.push(Piece::Head(head));
                }
                Err(why) => {
                    self.raw = true;
                    out.push(Piece::GaveUp(why));
                    out.push(Piece::Bytes(raw));
                }
            }
        }
    }
}

enum Body {
    Length(u64),
    /// Chunked, an upgrade, or anything else this reader does not follow.
    Unknown,
}

fn parse(raw: Bytes) -> Result<(Head, Body), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("a partial request head".into()),
        Err(e) => return Err(format!("a request head that does not parse: {e}")),
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let head = Head {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers,
        raw,
    };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"));
    let upgrade = head.header("upgrade").is_some() || head.method == "CONNECT";
    let body = match head.header("content-length") {
        _ if chunked || upgrade => Body::Unknown,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            Some(n) => Body::Length(n),
            None => Body::Unknown,
        },
        None => Body::Length(0),
    };
    Ok((head, body))
}
