//! A capture's files read as one capture: `FILE`, then `FILE.1`, `FILE.2`, ... while each
//! continues it, and a file cut by a crash read up to the tear.
//!
//! The rules (`docs/capture-format.md`, "Reading a capture"):
//!
//! - `FILE` must be segment 0. Its header names the capture: its run, and the mode, addresses,
//!   config and epoch it was recorded with.
//! - `FILE.n` continues the capture when its header is `FILE`'s with `segment` = n. The first
//!   file that does not (another run's, typically, left at the same path) is left out, and so is
//!   every file after it, since they could only follow a gap: each is listed in
//!   [`Extent::skipped`] with the reason. Files of different runs are never read as one.
//! - A file that ends inside a record (a later file also inside its preamble or header, or before
//!   its first byte) is torn, as a crash leaves it: every complete record before the tear is read,
//!   the tear is [`Extent::torn`], and later files are left out.
//! - Anything else wrong is an error naming the file and the byte offset.

use super::{CaptureError, Decoder, ErrorKind, Header, Record};
use std::convert::Infallible;
use std::fmt;
use std::io::Read;

/// A whole capture read into memory: its first file's header, and the records of every file
/// that continues it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub header: Header,
    pub records: Vec<Record>,
    /// Which files were read, which were left out, and where the capture is torn.
    pub extent: Extent,
}

/// How much of what was on disk makes up the capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extent {
    /// The files read, in order (the torn one included).
    pub files: Vec<String>,
    /// Files given that are not part of the capture, with the reason.
    pub skipped: Vec<Skipped>,
    /// Where the capture ends inside a record, if it does.
    pub torn: Option<Torn>,
}

/// A file left out of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: String,
    /// Why, as the end of a sentence ("left out: ...").
    pub why: String,
}

/// Where a capture ends inside a record (or a later file inside its header): a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub file: String,
    /// Complete records of `file` before the tear.
    pub records: u64,
    /// Where the torn record (or header) starts in `file`.
    pub offset: u64,
    /// What is missing ([`ErrorKind::Truncated`] or [`ErrorKind::Empty`]).
    pub kind: ErrorKind,
}

impl fmt::Display for Torn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: torn after {} complete records at byte {}: {}",
            self.file, self.records, self.offset, self.kind
        )
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} was not read: {}", self.file, self.why)
    }
}

/// Why [`walk_segments`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError<E> {
    /// The capture cannot be read: the message names the file and, where there is one, the
    /// byte offset.
    Capture(String),
    /// The callback returned this error.
    Stopped(E),
}

/// Reads a capture's files in order, given as `(name, reader)` (`FILE`, `FILE.1`, ... while they
/// exist), under the rules in the module doc, calling `each` with every record, the file and
/// offset it starts at, and that file's header. Returns the first file's header and the
/// [`Extent`] read. Never reads more than one record into memory at a time.
pub fn walk_segments<R: Read, E>(
    segments: impl IntoIterator<Item = (String, R)>,
    mut each: impl FnMut(&str, u64, &Header, Record) -> Result<(), E>,
) -> Result<(Header, Extent), WalkError<E>> {
    let bad = |name: &str, e: &CaptureError| WalkError::Capture(format!("{name}: {e}"));
    let mut first: Option<Header> = None;
    let mut extent = Extent::default();
    // Once set, every later file is left out for this reason.
    let mut stop: Option<String> = None;
    for (n, (name, reader)) in segments.into_iter().enumerate() {
        if let Some(why) = &stop {
            extent.skipped.push(Skipped {
                file: name,
                why: why.clone(),
            });
            continue;
        }
        let mut dec = match Decoder::new(reader) {
            Ok(dec) => dec,
            Err(e) if n > 0 && e.is_truncation() => {
                stop = Some(format!("it comes after {name}, which is torn"));
                extent.torn = Some(Torn {
                    file: name.clone(),
                    records: 0,
                    offset: 0,
                    kind: e.kind,
                });
                extent.files.push(name);
                continue;
            }
            Err(e) => return Err(bad(&name, &e)),
        };
        let header = dec.header().clone();
        match &first {
            None if header.segment != 0 => {
                return Err(WalkError::Capture(format!(
                    "{name}: at byte {}: this is file {} of its capture, not its first; \
                     name the first file (FILE, not FILE.N)",
                    super::PREAMBLE_LEN,
                    header.segment
                )))
            }
            None => {}
            Some(f) => {
                if let Some(why) = not_continued(f, &header, n) {
                    stop = Some(format!(
                        "it comes after {name}, which is not part of this capture"
                    ));
                    extent.skipped.push(Skipped { file: name, why });
                    continue;
                }
            }
        }
        let mut records = 0;
        loop {
            let offset = dec.offset();
            match dec.next_record() {
                Ok(Some(record)) => {
                    each(&name, offset, &header, record).map_err(WalkError::Stopped)?;
                    records += 1;
                }
                Ok(None) => break,
                Err(e) if e.is_truncation() => {
                    stop = Some(format!("it comes after {name}, which is torn"));
                    extent.torn = Some(Torn {
                        file: name.clone(),
                        records,
                        offset: e.offset,
                        kind: e.kind,
                    });
                    break;
                }
                Err(e) => return Err(bad(&name, &e)),
            }
        }
        extent.files.push(name);
        first.get_or_insert(header);
    }
    match first {
        Some(header) => Ok((header, extent)),
        None => Err(WalkError::Capture(match extent.torn {
            Some(t) => t.to_string(),
            None => "no capture file given".into(),
        })),
    }
}

/// Why a file whose header is `h`, found as file `n`, does not continue the capture whose first
/// header is `first`; `None` if it does.
fn not_continued(first: &Header, h: &Header, n: usize) -> Option<String> {
    if h.run != first.run {
        return Some(match (h.run, first.run) {
            (Some(theirs), Some(ours)) => format!(
                "it belongs to another run (run {}), not to this capture's (run {})",
                theirs.id, ours.id
            ),
            _ => "it belongs to another run (one of another fanout version)".into(),
        });
    }
    // Files written before runs had an identity (schemas 1 and 2): a run's files share the
    // instant its proxy started.
    if h.epoch_unix_ms != first.epoch_unix_ms {
        return Some(format!(
            "it belongs to another run (its proxy started at {} ms since 1970, this capture's at {})",
            h.epoch_unix_ms, first.epoch_unix_ms
        ));
    }
    if h.segment as usize != n {
        return Some(format!(
            "it is file {} of this capture, where file {n} belongs",
            h.segment
        ));
    }
    let same = |a: &Header, b: &Header| {
        (&a.mode, &a.listen, &a.backends, &a.config) == (&b.mode, &b.listen, &b.backends, &b.config)
    };
    if !same(first, h) {
        return Some("it was recorded with another configuration than the first file".into());
    }
    None
}

/// Reads a capture's files (see [`walk_segments`]) into memory.
pub fn read_segments<R: Read>(
    segments: impl IntoIterator<Item = (String, R)>,
) -> Result<Capture, String> {
    let mut records = Vec::new();
    let walked = walk_segments(segments, |_, _, _, record| {
        records.push(record);
        Ok::<(), Infallible>(())
    });
    match walked {
        Ok((header, extent)) => Ok(Capture {
            header,
            records,
            extent,
        }),
        Err(WalkError::Capture(message)) => Err(message),
        Err(WalkError::Stopped(never)) => match never {},
    }
}

/// The file names of a rotated capture: `base`, then `base.1`, `base.2`, ...
pub fn segment_name(base: &str, segment: u32) -> String {
    match segment {
        0 => base.to_string(),
        n => format!("{base}.{n}"),
    }
}
