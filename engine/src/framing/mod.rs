//! Framers: a byte stream, split anywhere, turned back into whole protocol messages.
//!
//! An [`Interceptor`](crate::Interceptor) sees a connection's bytes as TCP delivered them: one
//! message may arrive in ten chunks, ten messages in one. A protocol-aware interceptor keeps one
//! [`Framer`] per direction of each connection and sees whole messages instead:
//!
//! 1. **Input** — [`Framer::push`] every chunk as it arrives, in stream order.
//! 2. **Output** — [`Framer::pop`] after every push until it returns `Ok(None)` (more bytes are
//!    needed) or `Err` (the stream broke the framing). Each message comes whole, delimiter or
//!    length prefix included, so forwarding every popped message reproduces the stream byte for
//!    byte.
//! 3. **End** — at EOF, [`Framer::take_rest`] hands back the bytes of an unfinished message; after
//!    an error it hands back every byte not yet yielded, so the interceptor can fall back to
//!    forwarding raw bytes (or close the session) without losing any.
//!
//! Guarantees, whatever the input:
//!
//! - **Split invariance**: the messages popped, and the error if any (after the same messages),
//!   depend only on the bytes pushed, never on where the chunks were cut.
//! - **Nothing lost**: the messages popped, followed by `take_rest()`, are exactly the bytes pushed.
//! - **Zero copy**: a message wholly inside one pushed chunk is a slice of that chunk (shared by
//!   reference count); only a message spanning chunks is copied, once, into one buffer.
//! - **Bounded**: an over-long message is an error as soon as its length gives it away, so until
//!   an error a framer popped after every push holds at most one message's limit (and prefix)
//!   plus the last chunk. After an error it keeps what is pushed for `take_rest`: take it then.
//! - **Desync is sticky**: after an error the framer yields no more messages; every later `pop`
//!   returns the same error (as rustls' deframer does), and it never panics.
//!
//! The framers: [`LineFramer`] (messages end with `\n`) and [`LengthPrefixed`] (a big-endian
//! length, then that many bytes).

pub mod beanstalkd;
mod chunks;
mod length;
mod line;

pub use length::{LengthPrefixed, PrefixWidth};
pub use line::LineFramer;

use bytes::Bytes;
use std::fmt;

/// One direction of one connection, as a sequence of whole messages. See the [module
/// documentation](self) for the order of calls and what each framer guarantees.
pub trait Framer {
    /// Appends `data`, the next bytes read from the stream. The chunk is kept as it is (no copy);
    /// an empty chunk changes nothing. Bytes pushed after an error are kept for
    /// [`take_rest`](Framer::take_rest).
    fn push(&mut self, data: Bytes);

    /// The next whole message, including its delimiter or prefix; `Ok(None)` when the bytes
    /// buffered do not yet hold one. Once it has returned an error, the framer is desynced: every
    /// later call returns that same error and no message is yielded again.
    fn pop(&mut self) -> Result<Option<Bytes>, FrameError>;

    /// Bytes pushed and not yet yielded by [`pop`](Framer::pop) or
    /// [`take_rest`](Framer::take_rest).
    fn buffered(&self) -> u64;

    /// Every byte pushed and not yet yielded, in order, leaving the framer empty: the tail of an
    /// unfinished message at EOF, or the raw stream from the bad message on after an error. A
    /// desynced framer stays desynced.
    fn take_rest(&mut self) -> Bytes;
}

/// Why a framer stopped yielding messages. Once returned, a framer returns it from every `pop`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A message longer than the framer's limit: the peer is not speaking the protocol, or the
    /// limit is too low for it.
    TooLong {
        /// Which kind of message was too long.
        kind: MessageKind,
        /// The limit the framer was built with.
        limit: u64,
        /// For a length prefix, the payload length it declared. For a line, `limit + 1`: the
        /// framer gives up at the first byte past the limit, so the error is the same however
        /// the stream was split.
        seen: u64,
    },
}

/// The kind of message a [`FrameError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// A `\n`-terminated line ([`LineFramer`]).
    Line,
    /// A length-prefixed frame ([`LengthPrefixed`]).
    Frame,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong {
                kind: MessageKind::Line,
                limit,
                ..
            } => write!(f, "a line of more than {limit} bytes without a newline"),
            FrameError::TooLong {
                kind: MessageKind::Frame,
                limit,
                seen,
            } => write!(
                f,
                "a length prefix declaring {seen} bytes, more than the limit of {limit}"
            ),
        }
    }
}

impl std::error::Error for FrameError {}
