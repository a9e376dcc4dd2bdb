//! beanstalkd's protocol, framed the way beanstalkd 1.12 itself reads it.
//!
//! A proxy that rewrites some beanstalkd commands (the archiver takes over far-future `put`s)
//! must know, at every byte, what the server will make of the client's stream, or it falls out
//! of step: a malformed `put` line is answered `BAD_FORMAT` and its "body" is then read as
//! commands; a line longer than the server's 224-byte buffer is thrown away in 224-byte windows up
//! to the next line end and answered once; a body over the server's maximum job size is thrown
//! away unread. [`RequestFramer`] reproduces those rules (see its doc for each one), so every
//! piece it yields says how many answers the server will give for it ([`Request::answers`]), and
//! the answers, framed by [`ResponseFramer`], pair with the requests in order. [`Tap`] does that
//! pairing for the archiver and collects what it must archive.
//!
//! Both framers follow the order of calls of [`super::Framer`]: push every chunk as it arrives,
//! pop until `None`, and at EOF take what is left. The pieces they yield are split-invariant
//! (they depend only on the bytes pushed, never on where chunks were cut), except that bytes the
//! server throws away or never reads are yielded as they arrive (where such a run ends, and its
//! answer, are split-invariant too); and they lose nothing: the pieces' bytes, in order,
//! followed by `take_rest()`, are exactly the bytes pushed.

mod parse;
mod request;
mod response;
mod tap;

pub use parse::{is_valid_tube, Command, JobVerb, Put};
pub use request::{Discarded, Request, RequestFramer};
pub use response::{Response, ResponseError, ResponseFramer, ResponseKind};
pub use tap::{Lost, Tap};

/// The server's command buffer: a line, `\r\n` included, must end within this many bytes.
pub const LINE_BUFFER: usize = 224;

/// The server's default maximum job size in bytes (`beanstalkd -z`).
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;

/// The longest tube name the server accepts.
pub const MAX_TUBE_NAME: usize = 200;

#[cfg(test)]
mod tests;
