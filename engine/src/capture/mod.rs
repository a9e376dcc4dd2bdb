//! The capture format: the engine's inputs, with their instants, as a versioned file of
//! length-prefixed bincode 2 records, plus digests of the engine's outputs so a replay can prove it
//! reproduced them. `docs/capture-format.md` is the specification; this module is its only
//! implementation.
//!
//! Pure encoding and decoding: the driver owns the file. [`Encoder`] turns a [`Header`] and
//! [`Record`]s into bytes; [`Decoder`] reads them back from any `std::io::Read`, with every length
//! bounded before anything is allocated, and reports bad input as a [`CaptureError`] naming the byte
//! offset; it never panics. [`Replayer`] feeds decoded records into an engine and checks the output
//! digests.

use crate::command::Command;
use crate::config::Config;
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{Peer, SockId};
use crate::intercept::Interceptor;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use xxhash_rust::xxh3::Xxh3Default;

/// The first eight bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"FANOUTCP";
/// The layout of the preamble and record framing. Bumped only for incompatible layout changes.
pub const FORMAT_VERSION: u16 = 1;
/// The schema of [`Header`], [`Record`], [`Event`] and [`Config`]. Enum variants are only ever
/// appended, so a reader accepts any schema up to its own. Schema 2 appended the interceptor
/// limits to `Config` and `Event::EffectDone`; a schema 1 header is read with the old `Config`
/// and the new limits at their defaults ([`v1`]). Schema 3 appended `Config::secondary_memory`
/// and `Failure::NoDescriptors`; a schema 1 or 2 header is read without the cap ([`v2`]).
pub const SCHEMA_VERSION: u16 = 3;
/// The largest header accepted.
pub const MAX_HEADER: u32 = 1 << 20;
/// The largest record accepted (a read is at most a few hundred KiB; this leaves room).
pub const MAX_RECORD: u32 = 16 << 20;
/// Bytes before the header: magic, format, schema, fingerprint, header length.
pub const PREAMBLE_LEN: usize = 8 + 2 + 2 + 8 + 4;

const RECORD_LIMIT: usize = MAX_RECORD as usize;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_LIMIT>()
}

/// What a capture was recorded with: enough to rebuild the engine and name its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// 0 for the first file of a capture, then 1, 2, ... for the files it rotated into.
    pub segment: u32,
    /// `relay`, `duplex`, ...
    pub mode: String,
    /// The address the proxy listened on.
    pub listen: String,
    /// Backend addresses by `BackendId`.
    pub backends: Vec<String>,
    /// The engine's configuration.
    pub config: Config,
    /// Wall-clock time of the driver's epoch (engine `Instant::ZERO`), milliseconds since 1970.
    pub epoch_unix_ms: u64,
}

/// One entry of a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An input the engine handled.
    Input { at: Instant, event: Event },
    /// The digest of every command the engine emitted from the start of the capture up to this
    /// point, and how many there were.
    Outputs { commands: u64, digest: u64 },
}

/// The fingerprint of a configuration: a replay refuses a header whose config does not match it.
pub fn config_fingerprint(config: &Config) -> u64 {
    let bytes = bincode::serde::encode_to_vec(config, bincode_config()).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Turns headers and records into bytes. Reuses one buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// The preamble and header that start a capture file.
    pub fn header(&mut self, header: &Header) -> Result<&[u8], CaptureError> {
        let body = bincode::serde::encode_to_vec(header, bincode_config())
            .map_err(|e| CaptureError::at(0, ErrorKind::Corrupt(e.to_string())))?;
        if body.len() > MAX_HEADER as usize {
            return Err(CaptureError::at(
                0,
                ErrorKind::HeaderTooLarge(body.len() as u64),
            ));
        }
        self.buf.clear();
        self.buf.extend_from_slice(&MAGIC);
        self.buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        self.buf.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        self.buf
            .extend_from_slice(&config_fingerprint(&header.config).to_le_bytes());
        self.buf
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&body);
        Ok(&self.buf)
    }

    /// One length-prefixed record.
    pub fn record(&mut self, record: &Record) -> Result<&[u8], CaptureError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        bincode::serde::encode_into_std_write(record, &mut self.buf, bincode_config())
            .map_err(|e| CaptureError::at(0, ErrorKind::RecordTooLarge(format!("{e}"))))?;
        let len = self.buf.len() - 4;
        if len > MAX_RECORD as usize {
            return Err(CaptureError::at(
                0,
                ErrorKind::RecordTooLarge(len.to_string()),
            ));
        }
        self.buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(&self.buf)
    }
}

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
    RecordTooLarge(String),
    /// The file ends inside the preamble, the header or a record.
    Truncated {
        needed: u64,
        got: u64,
    },
    Corrupt(String),
    Io(String),
}

impl CaptureError {
    fn at(offset: u64, kind: ErrorKind) -> Self {
        CaptureError { offset, kind }
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            ErrorKind::Empty => write!(f, "the file is empty (not a fanout capture)"),
            ErrorKind::BadMagic => write!(f, "not a fanout capture (bad magic)"),
            ErrorKind::UnsupportedFormat(v) => write!(
                f,
                "capture format version {v} is not supported (this fanout reads version {FORMAT_VERSION})"
            ),
            ErrorKind::UnsupportedSchema(v) => write!(
                f,
                "event schema version {v} is newer than this fanout's ({SCHEMA_VERSION}); upgrade fanout"
            ),
            ErrorKind::FingerprintMismatch { stored, computed } => write!(
                f,
                "config fingerprint {stored:016x} does not match the header's config ({computed:016x}): corrupt header"
            ),
            ErrorKind::HeaderTooLarge(n) => {
                write!(f, "header claims {n} bytes, more than the {MAX_HEADER} allowed")
            }
            ErrorKind::RecordTooLarge(n) => {
                write!(f, "record claims {n} bytes, more than the {MAX_RECORD} allowed")
            }
            ErrorKind::Truncated { needed, got } => write!(
                f,
                "truncated: needed {needed} more bytes, the file has {got}"
            ),
            ErrorKind::Corrupt(why) => write!(f, "corrupt record: {why}"),
            ErrorKind::Io(why) => write!(f, "read error: {why}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// Reads a capture: the header first, then records one by one.
#[derive(Debug)]
pub struct Decoder<R> {
    input: R,
    offset: u64,
    header: Header,
    schema: u16,
    buf: Vec<u8>,
}

/// Reads exactly `buf.len()` bytes; on a short read says how many arrived.
fn read_full(input: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, CaptureError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CaptureError::at(
                    offset + got as u64,
                    ErrorKind::Io(e.to_string()),
                ))
            }
        }
    }
    Ok(got)
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the preamble and header.
    pub fn new(mut input: R) -> Result<Self, CaptureError> {
        let mut pre = [0u8; PREAMBLE_LEN];
        let got = read_full(&mut input, &mut pre, 0)?;
        if got == 0 {
            return Err(CaptureError::at(0, ErrorKind::Empty));
        }
        let seen = got.min(MAGIC.len());
        if pre[..seen] != MAGIC[..seen] {
            return Err(CaptureError::at(0, ErrorKind::BadMagic));
        }
        if got < PREAMBLE_LEN {
            return Err(CaptureError::at(
                got as u64,
                ErrorKind::Truncated {
                    needed: (PREAMBLE_LEN - got) as u64,
                    got: 0,
                },
            ));
        }
        let format = u16::from_le_bytes([pre[8], pre[9]]);
        if format != FORMAT_VERSION {
            return Err(CaptureError::at(8, ErrorKind::UnsupportedFormat(format)));
        }
        let schema = u16::from_le_bytes([pre[10], pre[11]]);
        if schema > SCHEMA_VERSION || schema == 0 {
            return Err(CaptureError::at(10, ErrorKind::UnsupportedSchema(schema)));
        }
        let fingerprint = u64::from_le_bytes(pre[12..20].try_into().expect("8 bytes"));
        let header_len = u32::from_le_bytes(pre[20..24].try_into().expect("4 bytes"));
        if header_len > MAX_HEADER {
            return Err(CaptureError::at(
                20,
                ErrorKind::HeaderTooLarge(header_len.into()),
            ));
        }
        let mut body = vec![0u8; header_len as usize];
        let offset = PREAMBLE_LEN as u64;
        let got = read_full(&mut input, &mut body, offset)?;
        if got < body.len() {
            return Err(CaptureError::at(
                offset,
                ErrorKind::Truncated {
                    needed: header_len.into(),
                    got: got as u64,
                },
            ));
        }
        let (header, computed) = if schema == 1 {
            let old: v1::Header = decode_exact(&body, offset)?;
            let computed = v1::fingerprint(&old.config);
            (old.into(), computed)
        } else if schema == 2 {
            let old: v2::Header = decode_exact(&body, offset)?;
            let computed = v2::fingerprint(&old.config);
            (old.into(), computed)
        } else {
            let header: Header = decode_exact(&body, offset)?;
            let computed = config_fingerprint(&header.config);
            (header, computed)
        };
        if computed != fingerprint {
            return Err(CaptureError::at(
                12,
                ErrorKind::FingerprintMismatch {
                    stored: fingerprint,
                    computed,
                },
            ));
        }
        Ok(Decoder {
            input,
            offset: offset + u64::from(header_len),
            header,
            schema,
            buf: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The schema version the file was written in (a replay hashes reports as it did).
    pub fn schema(&self) -> u16 {
        self.schema
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, CaptureError> {
        let start = self.offset;
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len, start)? {
            0 => return Ok(None),
            4 => {}
            n => {
                return Err(CaptureError::at(
                    start,
                    ErrorKind::Truncated {
                        needed: 4,
                        got: n as u64,
                    },
                ))
            }
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD {
            return Err(CaptureError::at(
                start,
                ErrorKind::RecordTooLarge(len.to_string()),
            ));
        }
        self.buf.resize(len as usize, 0);
        let got = read_full(&mut self.input, &mut self.buf, start + 4)?;
        if got < len as usize {
            return Err(CaptureError::at(
                start,
                ErrorKind::Truncated {
                    needed: len.into(),
                    got: got as u64,
                },
            ));
        }
        let record = decode_exact(&self.buf, start + 4)?;
        self.offset = start + 4 + u64::from(len);
        Ok(Some(record))
    }
}

impl<R: Read> Iterator for Decoder<R> {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Decodes `bytes` as one value that must use every byte.
fn decode_exact<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    offset: u64,
) -> Result<T, CaptureError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|e| CaptureError::at(offset, ErrorKind::Corrupt(e.to_string())))?;
    if used != bytes.len() {
        return Err(CaptureError::at(
            offset + used as u64,
            ErrorKind::Corrupt(format!(
                "{} bytes left over after the record",
                bytes.len() - used
            )),
        ));
    }
    Ok(value)
}

/// A running digest of engine commands, in order.
#[derive(Clone, Default)]
pub struct OutputDigest {
    hasher: Xxh3Default,
    count: u64,
    /// Hash reports in the outcome words of schema 1 and 2 ([`v2::as_recorded`]).
    older_words: bool,
}

impl fmt::Debug for OutputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OutputDigest({} commands, {:016x})",
            self.count,
            self.value()
        )
    }
}

impl OutputDigest {
    /// The digest a capture of schema `schema` recorded: today's, except that reports of
    /// schema 1 and 2 hash the outcome words their engines used.
    pub fn for_schema(schema: u16) -> Self {
        OutputDigest {
            older_words: schema < 3,
            ..OutputDigest::default()
        }
    }

    fn sock(&mut self, tag: u8, sock: &SockId) {
        let peer = match sock.peer {
            Peer::Client => u32::MAX,
            Peer::Backend(b) => u32::from(b.0),
        };
        self.hasher.update(&[tag]);
        self.hasher.update(&sock.conn.0.to_le_bytes());
        self.hasher.update(&peer.to_le_bytes());
    }

    /// Adds one command.
    pub fn update(&mut self, cmd: &Command) {
        self.count += 1;
        match cmd {
            Command::Connect { sock, upstream } => {
                self.sock(0, sock);
                // relay and duplex connect backend i to upstream i, and schema 1 captures hashed
                // nothing more: the upstream joins the digest only where it says something.
                if sock.peer != Peer::Backend(crate::ids::BackendId(upstream.0)) {
                    self.hasher.update(&[0xff]);
                    self.hasher.update(&upstream.0.to_le_bytes());
                }
            }
            Command::Write { sock, data } => {
                self.sock(1, sock);
                self.hasher.update(&(data.len() as u64).to_le_bytes());
                self.hasher.update(data);
            }
            Command::Shutdown { sock } => self.sock(2, sock),
            Command::Close { sock } => self.sock(3, sock),
            Command::PauseRead { sock } => self.sock(4, sock),
            Command::ResumeRead { sock } => self.sock(5, sock),
            Command::PauseAccept => self.hasher.update(&[6]),
            Command::ResumeAccept => self.hasher.update(&[7]),
            Command::Report(report) => {
                self.hasher.update(&[8]);
                let older;
                let report = if self.older_words {
                    older = v2::as_recorded(report);
                    &older
                } else {
                    &**report
                };
                let bytes =
                    bincode::serde::encode_to_vec(report, bincode_config()).unwrap_or_default();
                self.hasher.update(&bytes);
            }
            Command::Drained => self.hasher.update(&[9]),
            Command::Effect { conn, id, request } => {
                self.hasher.update(&[10]);
                self.hasher.update(&conn.0.to_le_bytes());
                self.hasher.update(&id.0.to_le_bytes());
                self.hasher
                    .update(&(request.kind.len() as u64).to_le_bytes());
                self.hasher.update(request.kind.as_bytes());
                self.hasher
                    .update(&(request.payload.len() as u64).to_le_bytes());
                self.hasher.update(&request.payload);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn value(&self) -> u64 {
        self.hasher.digest()
    }
}

/// Feeds a capture's inputs into an engine and checks its outputs against the recorded digests.
#[derive(Debug)]
pub struct Replayer<I: Interceptor> {
    pub engine: Engine<I>,
    digest: OutputDigest,
    inputs: u64,
    checked: u64,
}

/// A replay that did not reproduce the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Inputs replayed when the digests differed.
    pub after_inputs: u64,
    pub recorded: (u64, u64),
    pub replayed: (u64, u64),
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after {} inputs the engine emitted {} commands with digest {:016x}; the capture recorded {} with digest {:016x}",
            self.after_inputs, self.replayed.0, self.replayed.1, self.recorded.0, self.recorded.1
        )
    }
}

impl<I: Interceptor> Replayer<I> {
    /// Replays a capture of today's schema.
    pub fn new(engine: Engine<I>) -> Self {
        Replayer::for_schema(engine, SCHEMA_VERSION)
    }

    /// Replays a capture written in schema `schema` ([`Decoder::schema`]), checking its digests
    /// as that schema computed them ([`OutputDigest::for_schema`]).
    pub fn for_schema(engine: Engine<I>, schema: u16) -> Self {
        Replayer {
            engine,
            digest: OutputDigest::for_schema(schema),
            inputs: 0,
            checked: 0,
        }
    }

    /// Applies one record: an input is handled and its commands drained into `out`; an outputs
    /// record is checked against what the engine emitted so far.
    pub fn apply(
        &mut self,
        record: Record,
        mut out: impl FnMut(&Command),
    ) -> Result<(), Divergence> {
        match record {
            Record::Input { at, event } => {
                self.inputs += 1;
                self.engine.handle(at, event);
                while let Some(cmd) = self.engine.poll_command() {
                    self.digest.update(&cmd);
                    out(&cmd);
                }
                Ok(())
            }
            Record::Outputs { commands, digest } => {
                self.checked += 1;
                if (commands, digest) == (self.digest.count(), self.digest.value()) {
                    Ok(())
                } else {
                    Err(Divergence {
                        after_inputs: self.inputs,
                        recorded: (commands, digest),
                        replayed: (self.digest.count(), self.digest.value()),
                    })
                }
            }
        }
    }

    /// Inputs replayed so far.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Outputs records checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    pub fn digest(&self) -> &OutputDigest {
        &self.digest
    }
}

pub mod script;
pub mod v2;

/// A whole capture read into memory: the first file's header and the records of every segment,
/// in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub header: Header,
    pub records: Vec<Record>,
}

/// Reads a capture's segments in order (`FILE`, `FILE.1`, ...), given as `(name, reader)`.
/// Checks that each segment continues the previous one; errors name the file and offset.
pub fn read_segments<R: Read>(
    segments: impl IntoIterator<Item = (String, R)>,
) -> Result<Capture, String> {
    let mut capture: Option<Capture> = None;
    for (n, (name, reader)) in segments.into_iter().enumerate() {
        let mut dec = Decoder::new(reader).map_err(|e| format!("{name}: {e}"))?;
        let header = dec.header().clone();
        if header.segment as usize != n {
            return Err(format!(
                "{name}: is segment {} of its capture, expected segment {n}",
                header.segment
            ));
        }
        let records = dec
            .by_ref()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        match &mut capture {
            None => capture = Some(Capture { header, records }),
            Some(c) => {
                if c.header.config != header.config || c.header.backends != header.backends {
                    return Err(format!(
                        "{name}: recorded with another configuration than segment 0"
                    ));
                }
                c.records.extend(records);
            }
        }
    }
    capture.ok_or_else(|| "no capture file given".to_string())
}

/// The file names of a rotated capture: `base`, then `base.1`, `base.2`, ...
pub fn segment_name(base: &str, segment: u32) -> String {
    match segment {
        0 => base.to_string(),
        n => format!("{base}.{n}"),
    }
}

/// Schema 1 (before interceptors): the header's `Config` had no interceptor limits (read at
/// their defaults) and no secondary cap (read without one, as [`v2`]).
pub mod v1 {
    use super::bincode_config;
    use crate::config::Config;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    /// `Config` as schema 1 stored it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OldConfig {
        pub secondaries: u16,
        pub max_connections: usize,
        pub high_water: u64,
        pub low_water: u64,
        pub secondary_budget: u64,
        pub secondary_deadline: Duration,
        pub compare_window: u64,
        pub connect_timeout: Duration,
        pub idle_timeout: Duration,
        pub drain_timeout: Duration,
        pub reports: bool,
    }

    /// `Header` as schema 1 stored it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Header {
        pub segment: u32,
        pub mode: String,
        pub listen: String,
        pub backends: Vec<String>,
        pub config: OldConfig,
        pub epoch_unix_ms: u64,
    }

    /// The fingerprint schema 1 wrote: over its own `Config`.
    pub fn fingerprint(config: &OldConfig) -> u64 {
        let bytes = bincode::serde::encode_to_vec(config, bincode_config()).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    impl From<Header> for super::Header {
        fn from(h: Header) -> Self {
            let c = h.config;
            super::Header {
                segment: h.segment,
                mode: h.mode,
                listen: h.listen,
                backends: h.backends,
                config: Config {
                    secondaries: c.secondaries,
                    max_connections: c.max_connections,
                    high_water: c.high_water,
                    low_water: c.low_water,
                    secondary_budget: c.secondary_budget,
                    secondary_deadline: c.secondary_deadline,
                    compare_window: c.compare_window,
                    connect_timeout: c.connect_timeout,
                    idle_timeout: c.idle_timeout,
                    drain_timeout: c.drain_timeout,
                    reports: c.reports,
                    secondary_memory: super::v2::NO_CAP,
                    ..Config::default()
                },
                epoch_unix_ms: h.epoch_unix_ms,
            }
        }
    }
}
