//! The capture format: the engine's inputs, with their instants, as a versioned file of
//! length-prefixed bincode 2 records, plus digests of the engine's outputs so a replay can prove it
//! reproduced them. `docs/capture-format.md` is the specification; this module is its only
//! implementation.
//!
//! Pure encoding and decoding: the driver owns the file. [`Encoder`] turns a [`Header`] and
//! [`Record`]s into bytes; [`Decoder`] reads them back from any `std::io::Read`, with every length
//! bounded before anything is allocated, and reports bad input as a [`CaptureError`] naming the byte
//! offset, in words ([`error`]); it never panics. [`walk_segments`] reads a capture's files as one
//! capture: only files of the first file's [`Run`], and a torn tail up to the tear ([`segments`]).
//! [`Replayer`] feeds decoded records into an engine and checks the output digests.

use crate::command::Command;
use crate::config::Config;
use crate::contract::{Checker, Unpaced, Violation};
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{Peer, SockId};
use crate::intercept::Interceptor;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use xxhash_rust::xxh3::Xxh3Default;

mod error;
mod run;
pub mod segments;

pub use error::{CaptureError, ErrorKind, Part};
pub use run::{Run, RunId};
pub use segments::{
    read_segments, segment_name, walk_segments, Capture, Extent, Skipped, Torn, WalkError,
};

/// The first eight bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"FANOUTCP";
/// The layout of the preamble and record framing. Bumped only for incompatible layout changes.
pub const FORMAT_VERSION: u16 = 1;
/// The schema of [`Header`], [`Record`], [`Event`] and [`Config`]. Enum variants are only ever
/// appended, so a reader accepts any schema up to its own. Schema 2 appended the interceptor
/// limits to `Config` and `Event::EffectDone`; a schema 1 header is read with the old `Config`
/// and the new limits at their defaults ([`v1`]). Schema 3 appended [`Header::run`],
/// `Config::secondary_memory` and `Failure::NoDescriptors`; a schema 2 header is read as it was
/// stored ([`v2`]), with no run and no secondary cap.
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
    /// Since schema 3: the run that wrote this file, the same in every file of one capture
    /// (`None` when read from a file of schema 1 or 2).
    pub run: Option<Run>,
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
            .map_err(|e| CaptureError::at(0, ErrorKind::Unencodable(error::explain_encode(&e))))?;
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
            .map_err(|e| CaptureError::at(0, ErrorKind::Unencodable(error::explain_encode(&e))))?;
        let len = self.buf.len() - 4;
        if len > MAX_RECORD as usize {
            return Err(CaptureError::at(0, ErrorKind::RecordTooLarge(len as u64)));
        }
        self.buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(&self.buf)
    }
}

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
            return Err(error::short_preamble(got));
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
                    part: Part::Header,
                    len: header_len.into(),
                    got: got as u64,
                },
            ));
        }
        let corrupt = ErrorKind::CorruptHeader;
        let (header, computed) = match schema {
            1 => {
                let old: v1::Header = decode_exact(&body, offset, corrupt)?;
                let computed = v1::fingerprint(&old.config);
                (old.into(), computed)
            }
            2 => {
                let old: v2::Header = decode_exact(&body, offset, corrupt)?;
                let computed = v2::fingerprint(&old.config);
                (old.into(), computed)
            }
            _ => {
                let header: Header = decode_exact(&body, offset, corrupt)?;
                let computed = config_fingerprint(&header.config);
                (header, computed)
            }
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
                        part: Part::Length,
                        len: 4,
                        got: n as u64,
                    },
                ))
            }
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD {
            return Err(CaptureError::at(
                start,
                ErrorKind::RecordTooLarge(len.into()),
            ));
        }
        self.buf.resize(len as usize, 0);
        let got = read_full(&mut self.input, &mut self.buf, start + 4)?;
        if got < len as usize {
            return Err(CaptureError::at(
                start,
                ErrorKind::Truncated {
                    part: Part::Record,
                    len: len.into(),
                    got: got as u64,
                },
            ));
        }
        let record = decode_exact(&self.buf, start + 4, ErrorKind::Corrupt)?;
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

/// Decodes `bytes` (a header or a record, at `offset`) as one value that must use every byte;
/// `corrupt` makes the error kind from a sentence saying what is wrong.
fn decode_exact<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    offset: u64,
    corrupt: fn(String) -> ErrorKind,
) -> Result<T, CaptureError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|e| CaptureError::at(offset, corrupt(error::explain_decode(&e))))?;
    if used != bytes.len() {
        return Err(CaptureError::at(
            offset + used as u64,
            corrupt(format!(
                "{} bytes are left over after its last value",
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
    /// The driver side of the contract, checked over the recorded inputs and the replayed
    /// commands, and the first promise broken.
    checker: Checker,
    broken: Option<Violation>,
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
            checker: Checker::new(engine.config()),
            engine,
            digest: OutputDigest::for_schema(schema),
            inputs: 0,
            checked: 0,
            broken: None,
        }
    }

    /// Applies one record: an input is handled and its commands drained into `out`; an outputs
    /// record is checked against what the engine emitted so far. Every input and command also
    /// goes through the contract checker; the first promise broken is [`Replayer::contract`].
    pub fn apply(
        &mut self,
        record: Record,
        mut out: impl FnMut(&Command),
    ) -> Result<(), Divergence> {
        match record {
            Record::Input { at, event } => {
                self.inputs += 1;
                let mut checked = self.checker.event(at, &event);
                self.engine.handle(at, event);
                while let Some(cmd) = self.engine.poll_command() {
                    self.digest.update(&cmd);
                    checked = checked.and_then(|()| self.checker.command(&cmd));
                    out(&cmd);
                }
                let checked = checked.and_then(|()| self.checker.settled(&self.engine, &Unpaced));
                if let (Err(v), None) = (checked, &self.broken) {
                    self.broken = Some(v);
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

    /// The first promise of the driver-side contract ([`crate::contract`]) the replayed engine
    /// broke, or the recorded driver broke in what it fed (a `Timeout` before its deadline).
    pub fn contract(&self) -> Option<&Violation> {
        self.broken.as_ref()
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
                run: None,
            }
        }
    }
}
