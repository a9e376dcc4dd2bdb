//! [`RequestFramer`]: the client's side of a beanstalkd connection, as the server reads it.

use super::parse::{self, Command, Put, PutLine};
use super::{DEFAULT_MAX_JOB_SIZE, LINE_BUFFER};
use crate::framing::chunks::Chunks;
use bytes::Bytes;

/// Why the server threw bytes away; it answers once, when the discard ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discarded {
    /// A line that did not end within the server's buffer: `BAD_FORMAT`.
    LongLine,
    /// A `put` body over the maximum job size: `JOB_TOO_BIG`.
    TooBig,
}

/// One piece of the client's stream, as the server takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A command line, `\r\n` included, that the server answers once (`quit`: not at all).
    /// A `put` line the server rejects is one too: what follows it is read as commands.
    Command { line: Bytes, command: Command },
    /// A well-formed `put` line and its body: `put.bytes` bytes and the two after them, which
    /// the server requires to be `\r\n` (else it answers `EXPECTED_CRLF` and drops the job).
    /// Answered once.
    Put { line: Bytes, put: Put, body: Bytes },
    /// A `put` line whose body is over the maximum job size: the server throws away the
    /// body and the two bytes after it ([`Request::Discard`] pieces), then answers `JOB_TOO_BIG`.
    PutTooBig { line: Bytes, bytes: u32 },
    /// Bytes the server reads and throws away. On the piece that ends the discard, `ends`
    /// says why, and the server answers once.
    Discard {
        bytes: Bytes,
        ends: Option<Discarded>,
    },
    /// Bytes after `quit`: the server closes the connection and never reads them.
    AfterQuit(Bytes),
}

impl Request {
    /// How many answers the server gives for this piece: 0 or 1.
    pub fn answers(&self) -> u32 {
        match self {
            Request::Command { command, .. } => u32::from(*command != Command::Quit),
            Request::Put { .. } => 1,
            Request::Discard { ends, .. } => u32::from(ends.is_some()),
            Request::PutTooBig { .. } | Request::AfterQuit(_) => 0,
        }
    }

    /// The piece's bytes, in stream order (a put: its line, then its body).
    pub fn parts(&self) -> [&Bytes; 2] {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Request::Put { line, body, .. } => [line, body],
            Request::Command { line, .. } | Request::PutTooBig { line, .. } => [line, &EMPTY],
            Request::Discard { bytes, .. } | Request::AfterQuit(bytes) => [bytes, &EMPTY],
        }
    }

    /// The piece's length in bytes.
    pub fn len(&self) -> u64 {
        self.parts().iter().map(|p| p.len() as u64).sum()
    }

    /// Whether the piece holds no bytes (never, for a piece a framer yields).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the server is in the client's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a command line.
    Command,
    /// Throwing away an over-long line, window by window, up to its end.
    EndOfLongLine,
    /// Reading the body of a well-formed put (its line is parsed again when the body is in).
    Body { put: Put, line_len: usize },
    /// Throwing away `left` more bytes of a body too big.
    TooBig { left: u64 },
    /// After `quit`.
    Closed,
}

/// How the server reads the window of at most [`LINE_BUFFER`] bytes at the front of its
/// command buffer.
enum Window {
    /// A line of this many bytes, `\r\n` included.
    Line(usize),
    /// No line can end in this window: once it is full the server throws it away.
    Full,
    /// Not decided until more bytes arrive.
    Open,
}

/// The client's side of a beanstalkd connection, split into the pieces the server makes of it
/// (see [`Request`]). Follows beanstalkd 1.12 exactly:
///
/// - **Line ends**: the server looks for the *first* `\r` among the first 223 bytes of its
///   224-byte command buffer; the line ends there if a `\n` follows. A `\r` followed by anything
///   else means no line end in that buffer at all, even if a `\r\n` comes later in it, and a
///   `\r\n` whose `\r` is the buffer's 224th byte does not count either.
/// - **Long lines**: a full buffer with no line end is thrown away, and so is each following
///   224-byte window until one holds a line end by the same rule; the server answers
///   `BAD_FORMAT` once, there, and reads on after it.
/// - **Commands**: a line with a NUL byte is `BAD_FORMAT`; otherwise the command words match as
///   prefixes (`quit` closes the connection). Pipelined commands are taken one after another.
/// - **put**: four numbers, each after optional spaces, digits only, at most `u32::MAX`. Any
///   failure is `BAD_FORMAT` with no body. A size over the maximum job size throws away
///   size + 2 bytes and answers `JOB_TOO_BIG` (checked before bytes trailing the size, which
///   are `BAD_FORMAT` with no body). Otherwise the next size + 2 bytes are the body.
///
/// It never holds more than one window, one put line and its body (at most the maximum job
/// size + 2), plus the last chunk pushed; thrown-away bytes are yielded as they arrive.
#[derive(Debug)]
pub struct RequestFramer {
    buf: Chunks,
    state: State,
    max_job_size: u32,
    /// The tube the connection `use`s, as the requests so far set it.
    used: String,
}

impl Default for RequestFramer {
    fn default() -> Self {
        RequestFramer::new(DEFAULT_MAX_JOB_SIZE)
    }
}

impl RequestFramer {
    /// A framer for a server whose maximum job size is `max_job_size` (`beanstalkd -z`).
    pub fn new(max_job_size: u32) -> Self {
        RequestFramer {
            buf: Chunks::default(),
            state: State::Command,
            max_job_size,
            used: "default".to_string(),
        }
    }

    /// Appends the next bytes the client sent.
    pub fn push(&mut self, data: Bytes) {
        self.buf.push(data);
    }

    /// The tube the connection uses after the pieces popped so far (`default` at first): what
    /// a `put` popped now goes to.
    pub fn used_tube(&self) -> &str {
        &self.used
    }

    /// Bytes pushed and not yet yielded.
    pub fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Every byte pushed and not yet yielded (at EOF: an unfinished piece).
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.take_all()
    }

    /// The next piece; `None` when the bytes buffered do not yet make one.
    pub fn pop(&mut self) -> Option<Request> {
        match self.state {
            State::Closed => (self.buf.len() > 0).then(|| Request::AfterQuit(self.buf.take_all())),
            State::TooBig { left } => {
                let n = (left as usize).min(self.buf.len());
                if n == 0 {
                    return None;
                }
                let left = left - n as u64;
                self.state = match left {
                    0 => State::Command,
                    _ => State::TooBig { left },
                };
                Some(Request::Discard {
                    bytes: self.buf.take(n),
                    ends: (left == 0).then_some(Discarded::TooBig),
                })
            }
            State::Body { put, line_len } => {
                let body = put.bytes as usize + 2;
                if self.buf.len() < line_len + body {
                    return None;
                }
                self.state = State::Command;
                Some(Request::Put {
                    line: self.buf.take(line_len),
                    put,
                    body: self.buf.take(body),
                })
            }
            State::EndOfLongLine => match self.window() {
                Window::Open => None,
                Window::Full => Some(Request::Discard {
                    bytes: self.buf.take(LINE_BUFFER),
                    ends: None,
                }),
                Window::Line(n) => {
                    self.state = State::Command;
                    Some(Request::Discard {
                        bytes: self.buf.take(n),
                        ends: Some(Discarded::LongLine),
                    })
                }
            },
            State::Command => match self.window() {
                Window::Open => None,
                Window::Full => {
                    self.state = State::EndOfLongLine;
                    Some(Request::Discard {
                        bytes: self.buf.take(LINE_BUFFER),
                        ends: None,
                    })
                }
                Window::Line(n) => self.line(n),
            },
        }
    }

    /// How the server reads the window at the front of the buffer.
    fn window(&self) -> Window {
        let size = self.buf.len().min(LINE_BUFFER);
        if size < 2 {
            return Window::Open;
        }
        match self.buf.find(b'\r', 0, size - 1) {
            Some(i) if self.buf.byte_at(i + 1) == Some(b'\n') => Window::Line(i + 2),
            _ if size == LINE_BUFFER => Window::Full,
            _ => Window::Open,
        }
    }

    /// A command line of `n` bytes is at the front of the buffer.
    fn line(&mut self, n: usize) -> Option<Request> {
        let mut text = vec![0u8; n - 2];
        self.buf.copy_prefix(&mut text);
        let command = if text.contains(&0) {
            Command::Other
        } else if text.starts_with(b"put ") {
            match parse::put_line(&text, self.max_job_size) {
                PutLine::Ok(put) => {
                    self.state = State::Body { put, line_len: n };
                    return self.pop();
                }
                PutLine::TooBig(bytes) => {
                    self.state = State::TooBig {
                        left: u64::from(bytes) + 2,
                    };
                    return Some(Request::PutTooBig {
                        line: self.buf.take(n),
                        bytes,
                    });
                }
                PutLine::Malformed | PutLine::Trailing => Command::Other,
            }
        } else {
            parse::command(&text)
        };
        match &command {
            Command::Use { tube } => self.used.clone_from(tube),
            Command::Quit => self.state = State::Closed,
            _ => {}
        }
        Some(Request::Command {
            line: self.buf.take(n),
            command,
        })
    }
}
