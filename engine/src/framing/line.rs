//! [`LineFramer`]: messages that end with `\n`.

use super::chunks::Chunks;
use super::{FrameError, Framer, MessageKind};
use bytes::Bytes;

/// Lines: each message is the bytes up to and including the next `\n`, so a `\r\n` line comes
/// whole and an empty line is the one byte `\n` (or `\r\n`).
///
/// A line may be at most `max_line` bytes, its terminator included. As soon as more than
/// `max_line` bytes are buffered with no `\n` among the first `max_line` of them, [`pop`]
/// returns [`FrameError::TooLong`] and the framer is desynced.
///
/// [`pop`]: Framer::pop
#[derive(Debug)]
pub struct LineFramer {
    max_line: u64,
    buf: Chunks,
    /// How many bytes at the start of `buf` are known to hold no `\n`, so each byte is searched
    /// once however many pops wait for the end of a line.
    searched: usize,
    /// The error returned from every `pop` once the framing broke.
    desynced: Option<FrameError>,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes, `\n` included (`0` accepts no line at all).
    pub fn new(max_line: u64) -> Self {
        LineFramer {
            max_line,
            buf: Chunks::default(),
            searched: 0,
            desynced: None,
        }
    }
}

impl Framer for LineFramer {
    fn push(&mut self, data: Bytes) {
        self.buf.push(data);
    }

    fn pop(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.desynced {
            return Err(e.clone());
        }
        let limit = usize::try_from(self.max_line).unwrap_or(usize::MAX);
        if let Some(end) = self.buf.find(b'\n', self.searched, limit) {
            self.searched = 0;
            return Ok(Some(self.buf.take(end + 1)));
        }
        self.searched = self.buf.len().min(limit);
        if self.buf.len() as u64 > self.max_line {
            let e = FrameError::TooLong {
                kind: MessageKind::Line,
                limit: self.max_line,
                seen: self.max_line.saturating_add(1),
            };
            self.desynced = Some(e.clone());
            return Err(e);
        }
        Ok(None)
    }

    fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    fn take_rest(&mut self) -> Bytes {
        self.searched = 0;
        self.buf.take_all()
    }
}
