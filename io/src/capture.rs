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
        let mut out = BufWriter::with_capacity(BUFFER, crate::files::create(Path::new(&name))?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_engine::capture::{read_segments, Replayer};
    use fanout_engine::{Config, ConnId, Engine, SockId};

    fn header() -> Header {
        Header {
            segment: 0,
            mode: "relay".into(),
            listen: "127.0.0.1:9000".into(),
            backends: vec!["127.0.0.1:8081".into()],
            config: Config::default(),
            epoch_unix_ms: 0,
        }
    }

    /// Drives an engine as the driver does: record, handle, drain into the digest.
    fn session(rec: &mut Recorder, engine: &mut Engine, conn: u64, t: u64) {
        let conn = ConnId(conn);
        let client = SockId::client(conn);
        let events = [
            Event::Accepted {
                conn,
                client: "127.0.0.1:5000".into(),
            },
            Event::Read {
                sock: client,
                data: vec![b'x'; 400].into(),
            },
            Event::ReadClosed { sock: client },
        ];
        for (i, event) in events.into_iter().enumerate() {
            let at = Instant::from_nanos(t + i as u64 * 1000);
            rec.input(at, &event);
            engine.handle(at, event);
            while let Some(cmd) = engine.poll_command() {
                rec.output(&cmd);
            }
        }
    }

    fn segments(base: &Path) -> Vec<(String, File)> {
        let base = base.to_str().unwrap();
        (0..)
            .map(|n| segment_name(base, n))
            .map_while(|name| File::open(&name).ok().map(|f| (name, f)))
            .collect()
    }

    #[test]
    fn rotated_files_each_end_with_the_digest_so_far_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.fcap");
        let mut rec = Recorder::create(&path, 500, header()).unwrap();
        let mut engine = Engine::new(Config::default()).unwrap();
        for conn in 1..=4 {
            session(&mut rec, &mut engine, conn, conn * 1_000_000);
        }
        rec.finish();
        let files = segments(&path);
        assert!(
            files.len() >= 3,
            "4 sessions of 400 bytes should rotate at 500 bytes"
        );
        let capture = read_segments(files).unwrap();
        let outputs = capture
            .records
            .iter()
            .filter(|r| matches!(r, Record::Outputs { .. }))
            .count();
        assert_eq!(outputs, segments(&path).len(), "one digest per file");
        let mut replayer = Replayer::new(Engine::new(Config::default()).unwrap());
        for r in capture.records {
            replayer.apply(r, |_| {}).unwrap();
        }
        assert_eq!(replayer.checked() as usize, outputs);
    }

    #[test]
    fn a_write_error_stops_capturing_and_nothing_else() {
        // /dev/full takes the header into the buffer, then fails every flush with ENOSPC.
        let Ok(mut rec) = Recorder::create(Path::new("/dev/full"), 1 << 30, header()) else {
            return; // no /dev/full here
        };
        let mut engine = Engine::new(Config::default()).unwrap();
        let big = Event::Read {
            sock: SockId::client(ConnId(1)),
            data: vec![0u8; 2 * BUFFER].into(),
        };
        rec.input(Instant::ZERO, &big);
        assert!(
            rec.out.is_none(),
            "the failed write turned the recorder off"
        );
        session(&mut rec, &mut engine, 2, 0); // ignored, no panic
        rec.finish();
    }

    #[test]
    fn loop_k_records_to_its_own_file() {
        assert_eq!(loop_path(Path::new("/t/c.fcap"), 0), Path::new("/t/c.fcap"));
        assert_eq!(
            loop_path(Path::new("/t/c.fcap"), 3),
            Path::new("/t/c.fcap.t3")
        );
    }
}
