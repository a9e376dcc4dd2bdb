//! `--capture FILE`: records every event the engine handles, with the instant it was handed, and
//! a running digest of every command it emitted (format: `docs/capture-format.md`; encoding:
//! [`fanout_engine::capture`], never re-implemented here).
//!
//! Choices, and why:
//!
//! - **One recorder per event loop.** Each loop runs its own engine, and a capture is the input of
//!   one engine, so loop 0 records to `FILE` and loop k to `FILE.t<k>`; each rotates on its own
//!   (`FILE.1`, `FILE.t1.1`, ...). Every one of them replays on its own.
//! - **The loop never writes the file.** It encodes records into a backlog that a writer thread
//!   writes out (`writer.rs`: why a thread and not a loop timer): at once past 1 MiB, else at most
//!   `--capture-flush` (default 1 s) after a record was handed over. Never `fsync`ed: a crash of
//!   the proxy (SIGKILL, OOM) loses at most the last interval, and may tear the last record; the
//!   reader reads up to the tear. The header is written when a file is created, so a capture
//!   killed at once is still a valid, empty one.
//! - **Digests along the way.** An `Outputs` record closes every file (rotation, and the loop's
//!   end after a drain) and is also written before the first input handed at least
//!   `--capture-flush` after the previous one: a capture cut by a crash still lets
//!   `replay --engine` check everything but its last interval.
//! - **One run, its own files.** Every file carries the run's identity (drawn by the proxy at
//!   start, [`new_run`]). A capture never overwrites or extends another: at start, any file an
//!   earlier capture left at `FILE` (`FILE`, `FILE.N`, `FILE.t<k>`, `FILE.t<k>.N`) stops the
//!   proxy with a message naming them, and every file is created with `O_EXCL` (which also never
//!   follows a symlink in its place).
//! - **Failures stop capturing, not the proxy**: a write error, or a disk that falls 32 MiB
//!   behind the traffic (the loop never waits for it), logs one error line; the file ends with the
//!   digest so far where it can.

mod writer;

use fanout_engine::capture::{segment_name, Encoder, Header, OutputDigest, Record, Run, RunId};
use fanout_engine::{Command, Event, Instant};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use writer::{Refused, Writer, MAX_BACKLOG};

/// Records one engine's inputs and the digest of its outputs.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The first file's name; rotated files are `base.1`, `base.2`, ...
    base: String,
    max_size: u64,
    /// `--capture-flush`: how long records may wait in memory, and how often a digest is taken.
    every: Duration,
    header: Header,
    /// `None` once capturing stopped after an error, or after [`Recorder::finish`].
    writer: Option<Writer>,
    /// Bytes in the current file.
    written: u64,
    /// The instant of the last `Outputs` record (or of the start).
    checkpoint: Instant,
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

/// A new run's identity: 128 random bits from the operating system, and its start time.
pub(crate) fn new_run(started: SystemTime) -> io::Result<Run> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| io::Error::other(format!("no random run id: {e}")))?;
    let started_unix_ms = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(Run {
        id: RunId(u128::from_le_bytes(id)),
        started_unix_ms,
    })
}

/// Creates one capture file; fails if anything (a file, a symlink) is at `path` already.
fn create(path: &Path) -> io::Result<File> {
    crate::files::create_new(path)
}

/// Files an earlier capture left at `path`: `path` itself, `path.N`, `path.t<k>` and
/// `path.t<k>.N`, sorted.
fn earlier_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(io::Error::other("the capture path names no file"));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Creating the file reports a missing directory in its own words.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ours = |suffix: &str| match suffix.strip_prefix('t') {
        Some(rest) => match rest.split_once('.') {
            Some((k, n)) => digits(k) && digits(n),
            None => digits(rest),
        },
        None => digits(suffix),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(other) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let same_capture = other == name
            || other
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(ours);
        if same_capture {
            found.push(dir.join(other));
        }
    }
    found.sort();
    Ok(found)
}

/// The error for a path that holds an earlier capture: names the files and what to do.
fn refuse(found: &[PathBuf]) -> io::Error {
    const LISTED: usize = 8;
    let mut names: Vec<String> = found
        .iter()
        .take(LISTED)
        .map(|p| p.display().to_string())
        .collect();
    if found.len() > LISTED {
        names.push(format!("and {} more", found.len() - LISTED));
    }
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "it holds an earlier capture ({}); fanout never overwrites or extends one: move those \
             files away (or delete them), or record to another --capture path",
            names.join(", ")
        ),
    )
}

impl Recorder {
    /// Creates `path` (refusing if any file of an earlier capture is there), writes the header
    /// of segment 0 into it, and starts its writer. Errors here are the caller's to report: the
    /// proxy refuses to start with a capture it cannot write.
    pub(crate) fn create(
        path: &Path,
        max_size: u64,
        every: Duration,
        header: Header,
    ) -> io::Result<Recorder> {
        let base = path
            .to_str()
            .ok_or_else(|| io::Error::other("the capture path is not UTF-8"))?
            .to_string();
        crate::files::refuse_symlink(path)?;
        let found = earlier_files(path)?;
        if !found.is_empty() {
            return Err(refuse(&found));
        }
        let file = create(path)?;
        Recorder::start(base, file, max_size, every, header)
    }

    /// Writes the header of segment 0 into `file` (named `base`) and starts its writer.
    fn start(
        base: String,
        mut file: File,
        max_size: u64,
        every: Duration,
        mut header: Header,
    ) -> io::Result<Recorder> {
        header.segment = 0;
        let mut enc = Encoder::default();
        let bytes = enc.header(&header).map_err(io::Error::other)?;
        let written = bytes.len() as u64;
        file.write_all(bytes)?;
        let writer = Writer::start(file, base.clone(), every)?;
        Ok(Recorder {
            base,
            max_size,
            every,
            header,
            writer: Some(writer),
            written,
            checkpoint: Instant::ZERO,
            enc,
            digest: OutputDigest::default(),
        })
    }

    /// Records one input, exactly as it is about to be handed to the engine.
    pub(crate) fn input(&mut self, at: Instant, event: &Event) {
        if self.writer.is_none() {
            return;
        }
        // Rotate and take digests before the next input, not after the one that crossed the
        // limit: the engine has not handled that one yet, so its commands are not in the digest.
        // Here every earlier input's commands are (the driver drains them before handing
        // another event).
        if self.written >= self.max_size {
            if self.rotate().is_err() {
                return;
            }
        } else if at >= self.checkpoint + self.every && self.outputs(at).is_err() {
            return;
        }
        // A clone of an event is cheap: `Read`'s bytes are reference counted.
        let record = Record::Input {
            at,
            event: event.clone(),
        };
        let _ = self.write(&record);
    }

    /// Adds one command the engine emitted to the running digest.
    pub(crate) fn output(&mut self, cmd: &Command) {
        if self.writer.is_some() {
            self.digest.update(cmd);
        }
    }

    /// Writes the `Outputs` record, and waits for the writer to put everything in the file; the
    /// recorder is off afterwards. Called when the loop ends (and again, harmlessly, when it is
    /// dropped).
    pub(crate) fn finish(&mut self) {
        if self.writer.is_some() {
            let _ = self.write(&self.outputs_record());
        }
        self.stop();
    }

    fn outputs_record(&self) -> Record {
        Record::Outputs {
            commands: self.digest.count(),
            digest: self.digest.value(),
        }
    }

    /// Writes the digest so far, at `at`.
    fn outputs(&mut self, at: Instant) -> Result<(), Refused> {
        self.checkpoint = at;
        self.write(&self.outputs_record())
    }

    /// Encodes `record` into the writer's backlog; on a refusal, capturing stops.
    fn write(&mut self, record: &Record) -> Result<(), Refused> {
        let Some(writer) = &self.writer else {
            return Err(Refused::Failed);
        };
        let bytes = match self.enc.record(record) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(
                    "capture {}: {e}; capturing stopped, the proxy goes on",
                    self.file_name()
                );
                self.stop();
                return Err(Refused::Failed);
            }
        };
        match writer.append(bytes) {
            Ok(()) => {
                self.written += bytes.len() as u64;
                Ok(())
            }
            Err(Refused::Failed) => {
                // The writer logged why.
                self.stop();
                Err(Refused::Failed)
            }
            Err(Refused::Behind) => {
                tracing::error!(
                    "capture {}: the disk fell {} MiB behind the traffic; capturing stopped (the \
                     file ends with the digest so far), the proxy goes on",
                    self.file_name(),
                    MAX_BACKLOG >> 20
                );
                // `record` was not taken, so the backlog ends with the input before it and the
                // digest covers exactly that input's commands: it closes the file after what is
                // queued. The loop does not wait for the writer to get there.
                let outputs = self.outputs_record();
                if let Ok(bytes) = self.enc.record(&outputs) {
                    writer.append_last(bytes);
                }
                if let Some(writer) = self.writer.take() {
                    writer.detach();
                }
                Err(Refused::Behind)
            }
        }
    }

    /// Closes the current file with the digest so far and continues in the next.
    fn rotate(&mut self) -> Result<(), Refused> {
        self.write(&self.outputs_record())?;
        self.header.segment += 1;
        let name = segment_name(&self.base, self.header.segment);
        let header = match self.enc.header(&self.header) {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                tracing::error!("capture {name}: {e}; capturing stopped, the proxy goes on");
                self.stop();
                return Err(Refused::Failed);
            }
        };
        self.written = header.len() as u64;
        if let Some(writer) = &self.writer {
            writer.open(name, header);
        }
        Ok(())
    }

    /// Ends the writer after it wrote what it has.
    fn stop(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            writer.close();
        }
    }

    fn file_name(&self) -> String {
        segment_name(&self.base, self.header.segment)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests;
