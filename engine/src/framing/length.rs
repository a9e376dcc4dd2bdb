//! [`LengthPrefixed`]: a big-endian length, then that many bytes.

use super::chunks::Chunks;
use super::{FrameError, Framer, MessageKind};
use bytes::Bytes;

/// The size of a [`LengthPrefixed`] length prefix; the length is big-endian (network order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefixWidth {
    /// One byte: payloads of up to 255 bytes.
    U8,
    /// Two bytes: payloads of up to 65,535 bytes.
    U16,
    /// Four bytes: payloads of up to 4 GiB - 1.
    U32,
}

impl PrefixWidth {
    /// The prefix's size in bytes: 1, 2 or 4.
    pub const fn bytes(self) -> usize {
        match self {
            PrefixWidth::U8 => 1,
            PrefixWidth::U16 => 2,
            PrefixWidth::U32 => 4,
        }
    }
}

/// Length-prefixed frames: each message is a [`PrefixWidth`] big-endian payload length followed
/// by that many payload bytes, and is yielded prefix included. A zero length is a valid,
/// prefix-only message.
///
/// A declared length above `max_len` is [`FrameError::TooLong`] as soon as the prefix is
/// buffered, before any payload arrives, and the framer is desynced.
#[derive(Debug)]
pub struct LengthPrefixed {
    width: PrefixWidth,
    max_len: u64,
    buf: Chunks,
    /// The error returned from every `pop` once the framing broke.
    desynced: Option<FrameError>,
}

impl LengthPrefixed {
    /// A framer for payloads of at most `max_len` bytes (the prefix not counted).
    pub fn new(width: PrefixWidth, max_len: u64) -> Self {
        LengthPrefixed {
            width,
            max_len,
            buf: Chunks::default(),
            desynced: None,
        }
    }
}

impl Framer for LengthPrefixed {
    fn push(&mut self, data: Bytes) {
        self.buf.push(data);
    }

    fn pop(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.desynced {
            return Err(e.clone());
        }
        let mut prefix = [0u8; 4];
        let prefix = &mut prefix[..self.width.bytes()];
        if !self.buf.copy_prefix(prefix) {
            return Ok(None);
        }
        let declared = prefix.iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
        if declared > self.max_len {
            let e = FrameError::TooLong {
                kind: MessageKind::Frame,
                limit: self.max_len,
                seen: declared,
            };
            self.desynced = Some(e.clone());
            return Err(e);
        }
        // At most 4 + (2^32 - 1): no overflow.
        let total = prefix.len() as u64 + declared;
        if (self.buf.len() as u64) < total {
            return Ok(None);
        }
        // `total` is at most `buf.len()`, a usize.
        Ok(Some(self.buf.take(total as usize)))
    }

    fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    fn take_rest(&mut self) -> Bytes {
        self.buf.take_all()
    }
}
