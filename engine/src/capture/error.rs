//! Why a capture could not be read (or written), where, in sentences a person reads: every
//! decoding error of bincode is put into words here, never shown as its `Debug` text.

use super::{FORMAT_VERSION, MAX_HEADER, MAX_RECORD, PREAMBLE_LEN, SCHEMA_VERSION};
use bincode::error::{DecodeError, EncodeError};
use std::fmt;

/// Why a capture could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureError {
    /// Byte offset in the file where the problem starts.
    pub offset: u64,
    pub kind: ErrorKind,
}

/// The kinds of bad capture input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Empty,
    BadMagic,
    UnsupportedFormat(u16),
    UnsupportedSchema(u16),
    FingerprintMismatch {
        stored: u64,
        computed: u64,
    },
    HeaderTooLarge(u64),
    RecordTooLarge(u64),
    /// The file ends inside `part`, which is `len` bytes long; `got` of them are there. At the
    /// end of a capture's last file this is a torn tail: what a crash leaves.
    Truncated {
        part: Part,
        len: u64,
        got: u64,
    },
    /// The header's bytes are all there but do not decode; the sentence says why.
    CorruptHeader(String),
    /// A record's bytes are all there but do not decode; the sentence says why.
    Corrupt(String),
    /// A header or record the encoder cannot write.
    Unencodable(String),
    Io(String),
}

/// The pieces of a capture file, for [`ErrorKind::Truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Magic, versions, fingerprint and header length ([`PREAMBLE_LEN`] bytes).
    Preamble,
    Header,
    /// The 4-byte length before a record.
    Length,
    Record,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Preamble => "preamble",
            Part::Header => "header",
            Part::Length => "length of a record",
            Part::Record => "record",
        })
    }
}

impl CaptureError {
    pub(crate) fn at(offset: u64, kind: ErrorKind) -> Self {
        CaptureError { offset, kind }
    }

    /// Whether the file simply ends early: inside a record, or (for a capture's later files)
    /// inside its preamble or header, or before its first byte. That is what a crash leaves;
    /// every complete record before it is good.
    pub fn is_truncation(&self) -> bool {
        matches!(self.kind, ErrorKind::Empty | ErrorKind::Truncated { .. })
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Empty => write!(f, "the file is empty (not a fanout capture)"),
            ErrorKind::BadMagic => {
                write!(f, "not a fanout capture (it does not start with FANOUTCP)")
            }
            ErrorKind::UnsupportedFormat(v) => write!(
                f,
                "capture format version {v} is not supported (this fanout reads version {FORMAT_VERSION})"
            ),
            ErrorKind::UnsupportedSchema(0) => {
                write!(f, "schema version 0 does not exist: the preamble is corrupt")
            }
            ErrorKind::UnsupportedSchema(v) => write!(
                f,
                "event schema version {v} is newer than this fanout's ({SCHEMA_VERSION}); upgrade fanout"
            ),
            ErrorKind::FingerprintMismatch { stored, computed } => write!(
                f,
                "config fingerprint {stored:016x} does not match the header's config ({computed:016x}): corrupt header"
            ),
            ErrorKind::HeaderTooLarge(n) => write!(
                f,
                "the header claims {n} bytes, more than the {MAX_HEADER} allowed"
            ),
            ErrorKind::RecordTooLarge(n) => write!(
                f,
                "a record claims {n} bytes, more than the {MAX_RECORD} allowed"
            ),
            ErrorKind::Truncated { part, len, got } => write!(
                f,
                "the file ends inside the {part}, which is {len} bytes long: {got} of them are there"
            ),
            ErrorKind::CorruptHeader(why) => write!(f, "the header does not decode: {why}"),
            ErrorKind::Corrupt(why) => write!(f, "the record does not decode: {why}"),
            ErrorKind::Unencodable(why) => write!(f, "cannot be written: {why}"),
            ErrorKind::Io(why) => write!(f, "read error: {why}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// What was wrong with bytes that did not decode, as the end of a sentence ("the record does not
/// decode: ...").
pub(crate) fn explain_decode(e: &DecodeError) -> String {
    match e {
        DecodeError::UnexpectedEnd { .. } => {
            "it ends in the middle of a value (its length is shorter than its contents)".into()
        }
        DecodeError::LimitExceeded => {
            format!("a length inside it claims more than the {MAX_RECORD} bytes a record may hold")
        }
        DecodeError::InvalidIntegerType { .. } => {
            "a number is stored with a width marker that does not exist".into()
        }
        DecodeError::NonZeroTypeIsZero { .. } => "a value that cannot be zero is zero".into(),
        DecodeError::UnexpectedVariant { found, .. } => {
            format!("it names kind number {found} of a value, which does not exist")
        }
        DecodeError::Utf8 { .. } | DecodeError::InvalidCharEncoding(_) => {
            "a text field is not valid UTF-8".into()
        }
        DecodeError::InvalidBooleanValue(v) => {
            format!("a yes/no field holds {v}, which is neither 0 nor 1")
        }
        DecodeError::ArrayLengthMismatch { required, found } => {
            format!("a list of {required} items holds {found}")
        }
        DecodeError::OutsideUsizeRange(v) => {
            format!("the number {v} is too large for this machine")
        }
        DecodeError::InvalidDuration { .. } | DecodeError::InvalidSystemTime { .. } => {
            "a duration or time is out of range".into()
        }
        DecodeError::Io { inner, .. } => format!("a read failed: {inner}"),
        DecodeError::Other(why) => (*why).to_string(),
        // Serde's own messages are sentences already ("invalid value: integer `14`, expected
        // `Ok` or `Err`").
        DecodeError::OtherString(why) => why.clone(),
        _ => "its bytes do not form a valid value".into(),
    }
}

/// Why a value cannot be encoded, as the end of a sentence. (Encoding into memory fails only
/// for types a capture does not hold; records too large are refused by length.)
pub(crate) fn explain_encode(e: &EncodeError) -> String {
    match e {
        EncodeError::OtherString(why) => why.clone(),
        _ => "its value cannot be encoded".into(),
    }
}

/// The preamble is [`PREAMBLE_LEN`] bytes; the error when the file stops after `got` of them.
pub(crate) fn short_preamble(got: usize) -> CaptureError {
    CaptureError::at(
        got as u64,
        ErrorKind::Truncated {
            part: Part::Preamble,
            len: PREAMBLE_LEN as u64,
            got: got as u64,
        },
    )
}
