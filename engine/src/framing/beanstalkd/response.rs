//! [`ResponseFramer`]: the server's side of a beanstalkd connection.

use crate::framing::chunks::Chunks;
use bytes::Bytes;
use std::fmt;

/// The longest answer line the server writes is shorter than its 224-byte line buffer.
const MAX_LINE: usize = super::LINE_BUFFER;

/// What an answer says, for the answers a proxy may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// `INSERTED <id>`.
    Inserted(u64),
    /// `BURIED <id>` (a put the server could not queue); a bare `BURIED` is [`ResponseKind::Word`].
    BuriedId(u64),
    /// `RESERVED <id> <n>` and its body.
    Reserved { id: u64 },
    /// `FOUND <id> <n>` and its body.
    Found { id: u64 },
    /// `OK <n>` and its YAML body.
    Ok,
    /// `USING <tube>`.
    Using(String),
    /// Any other one-line answer (`DELETED`, `NOT_FOUND`, `BAD_FORMAT`, ...): its first word.
    Word(String),
}

/// One whole answer: its line and, for `RESERVED`, `FOUND` and `OK`, the body and its `\r\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub kind: ResponseKind,
    pub line: Bytes,
    pub body: Bytes,
}

/// Why the server's stream could not be framed. Sticky, like [`crate::framing::FrameError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// No `\r\n` within the longest line the server writes.
    LongLine,
    /// A body length that is not a number, or over the framer's limit.
    BadLength { line: String },
    /// A body not followed by `\r\n`.
    BodyWithoutCrlf,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::LongLine => write!(
                f,
                "an answer line of more than {MAX_LINE} bytes without \\r\\n"
            ),
            ResponseError::BadLength { line } => {
                write!(f, "an answer announcing a body it cannot have: {line:?}")
            }
            ResponseError::BodyWithoutCrlf => write!(f, "an answer body not followed by \\r\\n"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// The server's answers, one whole [`Response`] at a time, in the order of the requests they
/// answer. Bodies are held whole, up to `max_body` bytes (more is an error).
#[derive(Debug)]
pub struct ResponseFramer {
    buf: Chunks,
    max_body: u64,
    desynced: Option<ResponseError>,
}

impl ResponseFramer {
    /// A framer that accepts bodies of at most `max_body` bytes: the server's maximum job size
    /// for jobs, more for `stats` and tube lists.
    pub fn new(max_body: u64) -> Self {
        ResponseFramer {
            buf: Chunks::default(),
            max_body,
            desynced: None,
        }
    }

    pub fn push(&mut self, data: Bytes) {
        self.buf.push(data);
    }

    pub fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Every byte pushed and not yet yielded.
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.take_all()
    }

    /// The next whole answer; `Ok(None)` when more bytes are needed. After an error, every call
    /// returns it.
    pub fn pop(&mut self) -> Result<Option<Response>, ResponseError> {
        if let Some(e) = &self.desynced {
            return Err(e.clone());
        }
        let r = self.next();
        if let Err(e) = &r {
            self.desynced = Some(e.clone());
        }
        r
    }

    fn next(&mut self) -> Result<Option<Response>, ResponseError> {
        let Some(nl) = self.buf.find(b'\n', 0, MAX_LINE) else {
            return match self.buf.len() >= MAX_LINE {
                true => Err(ResponseError::LongLine),
                false => Ok(None),
            };
        };
        let mut text = vec![0u8; nl + 1];
        self.buf.copy_prefix(&mut text);
        let Some(text) = text.strip_suffix(b"\r\n") else {
            return Err(ResponseError::LongLine);
        };
        let words: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
        let number = |w: Option<&&[u8]>| {
            w.and_then(|w| std::str::from_utf8(w).ok())
                .and_then(|w| w.parse::<u64>().ok())
        };
        let bad = || ResponseError::BadLength {
            line: String::from_utf8_lossy(text).into_owned(),
        };
        let (kind, body) = match words[0] {
            b"RESERVED" | b"FOUND" => {
                let (id, n) = match (number(words.get(1)), number(words.get(2)), words.len()) {
                    (Some(id), Some(n), 3) => (id, n),
                    _ => return Err(bad()),
                };
                let kind = match words[0] {
                    b"RESERVED" => ResponseKind::Reserved { id },
                    _ => ResponseKind::Found { id },
                };
                (kind, Some(n))
            }
            b"OK" => match (number(words.get(1)), words.len()) {
                (Some(n), 2) => (ResponseKind::Ok, Some(n)),
                _ => return Err(bad()),
            },
            b"INSERTED" if words.len() == 2 => match number(words.get(1)) {
                Some(id) => (ResponseKind::Inserted(id), None),
                None => (word(words[0]), None),
            },
            b"BURIED" if words.len() == 2 => match number(words.get(1)) {
                Some(id) => (ResponseKind::BuriedId(id), None),
                None => (word(words[0]), None),
            },
            b"USING" if words.len() == 2 => (
                ResponseKind::Using(String::from_utf8_lossy(words[1]).into_owned()),
                None,
            ),
            w => (word(w), None),
        };
        let line_len = nl + 1;
        let Some(n) = body else {
            return Ok(Some(Response {
                kind,
                line: self.buf.take(line_len),
                body: Bytes::new(),
            }));
        };
        if n > self.max_body {
            return Err(bad());
        }
        let body_len = n as usize + 2;
        if self.buf.len() < line_len + body_len {
            return Ok(None);
        }
        let end = [
            self.buf.byte_at(line_len + body_len - 2),
            self.buf.byte_at(line_len + body_len - 1),
        ];
        if end != [Some(b'\r'), Some(b'\n')] {
            return Err(ResponseError::BodyWithoutCrlf);
        }
        Ok(Some(Response {
            kind,
            line: self.buf.take(line_len),
            body: self.buf.take(body_len),
        }))
    }
}

fn word(w: &[u8]) -> ResponseKind {
    ResponseKind::Word(String::from_utf8_lossy(w).into_owned())
}
