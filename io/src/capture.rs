//! `--capture FILE`: records every event the engine handles, with the instant it was handed, and
//! a running digest of every command it emitted (format: `docs/capture-format.md`; encoding:
//! [`fanout_engine::capture`], never re-implemented here).
//!
//! Choices, and why:
//!
//! - **One recorder per event loop.** Each loop runs its own engine, and a capture is the input of
//!   one engine, so loop 0 records to `FILE` and loop k to `FILE.t<k>`; each rotates on its own
//!   (`FILE.1`, `FILE.t1.1`, ...). Every one of them replays on its own.
//! - **Buffered, never synced.** Records go through a 1 MiB `BufWriter`; the loop never waits for
//!   `fsync`. A capture cut by SIGKILL may end inside a record: the reader reports that offset.
//! - **A write error stops capturing, not the proxy**: one error line, then the recorder is off.
//! - **`Outputs` when a file closes**: on rotation and when the loop ends (after a drain, which is
//!   how SIGTERM ends it), so a replay checks the digest at every file boundary.

use fanout_engine::capture::{segment_name, Encoder, Header, OutputDigest, Record};
use fanout_engine::{Command, Event, Instant};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Buffer between the recorder and the file.
const BUFFER: usize = 1 << 20;

/// Records one engine's inputs and the digest of its outputs.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The first file's name; rotated files are `base.1`, `base.2`, ...
    base: String,
    max_size: u64,
    header: Header,
    /// `None` once capturing stopped after an error, or after [`Recorder::finish`].
    out: Option<BufWriter<File>>,
    /// Bytes in the current file.
    written: u64,
    enc: Encoder,
    digest: OutputDigest,
}

/// The capture file loop `index` records to: `base` for loop 0, `base.t<k>` for loop k.
pub(crate) fn loop_path(base: &Path, index: usize) -> PathBuf {
    match index {
        0 => base.to_path_buf(),
        k => {
            let mut name = base.as_os_str().to_owned();
            name.push(format!(".t{k}"));
            PathBuf::from(name)
        }
    }
}

impl Recorder {
    /// Creates (truncates) `path` and writes the header of segment 0. Errors here are the
    /// caller's to report: the proxy refuses to start with a capture it cannot write.
    pub(crate) fn create(path: &Path, max_size: u64, mut header: Header) -> io::Result<Recorder> {
        let base = path
            .to_str()
            .ok_or_else(|| io::Error::other("the capture path is not UTF-8"))?
            .to_string();
        header.segment = 0;
        let mut rec = Recorder {
            base,
            max_size,
            header,
            out: None,
            written: 0,
            enc: Encoder::default(),
            digest: OutputDigest::default(),
        };
        rec.open_segment()?;
        Ok(rec)
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let name = segment_name(&self.base, self.header.segment);
        let mut out = BufWriter::with_capacity(BUFFER, File::create(&name)?);
        let bytes = self.enc.header(&self.header).map_err(io::Error::other)?;
        out.write_all(bytes)?;
        self.written = bytes.len() as u64;
        self.out = Some(out);
        Ok(())
    }

    /// Records one input, exactly as it is about to be handed to the engine.
    pub(crate) fn input(&mut self, at: Instant, event: &Event) {
        if self.out.is_none() {
            return;
        }
        // Rotate before the next input, not after the one that crossed the limit: the engine
        // has not handled that one yet, so its commands are not in the digest. Here every
        // earlier input's commands are (the driver drains them before handing another event).
        if self.written >= self.max_size {
            if let Err(e) = self.rotate() {
                self.fail(&e);
                return;
            }
        }
        // A clone of an event is cheap: `Read`'s bytes are reference counted.
        let record = Record::Input {
            at,
            event: event.clone(),
        };
        if let Err(e) = self.write(&record) {
            self.fail(&e);
        }
    }

    /// Adds one command the engine emitted to the running digest.
    pub(crate) fn output(&mut self, cmd: &Command) {
        if self.out.is_some() {
            self.digest.update(cmd);
        }
    }

    /// Writes the `Outputs` record and flushes; the recorder is off afterwards. Called when the
    /// loop ends (and again, harmlessly, when it is dropped).
    pub(crate) fn finish(&mut self) {
        if self.out.is_none() {
            return;
        }
        if let Err(e) = self.close_segment() {
            self.fail(&e);
        }
        self.out = None;
    }

    fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = self.enc.record(record).map_err(io::Error::other)?;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn close_segment(&mut self) -> io::Result<()> {
        self.write(&Record::Outputs {
            commands: self.digest.count(),
            digest: self.digest.value(),
        })?;
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.close_segment()?;
        self.out = None;
        self.header.segment += 1;
        self.open_segment()
    }

    fn fail(&mut self, e: &io::Error) {
        tracing::error!(
            "capture {}: cannot write ({e}); capturing stopped, the proxy goes on",
            segment_name(&self.base, self.header.segment)
        );
        self.out = None;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}
