//! The capture tools that need no network: `fanout capture inspect FILE [--json]` and
//! `fanout replay --engine FILE` (and `PROGRAM replay --engine FILE` for programs on
//! [`crate::host`], which replay into their own interceptor: [`replay_engine_with`]).
//!
//! Both read a capture's files (`FILE`, then `FILE.1`, `FILE.2`, ... while they exist) with the
//! engine's [`walk_segments`], one record at a time, so an error names the file and the byte
//! offset where it starts and nothing larger than the format's limits is ever allocated. Its
//! rules decide what the capture is: only files of `FILE`'s run (the others are named on stderr,
//! "note: FILE.N was not read: ..."), and a file torn by a crash up to the tear, which ends the
//! tool with [`Error::Torn`] (exit status 3) once it has used every complete record.

use crate::balance::BalanceConfig;
use crate::error::{describe, Error};
use fanout_engine::capture::script::{self, SessionScript};
use fanout_engine::capture::{
    read_segments, segment_name, walk_segments, Decoder, Extent, Header, Record, Replayer,
    WalkError,
};
use fanout_engine::{Event, Interceptor, Passthrough, Peer};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// The files of the capture starting at `base`, in order, opened. `base` must exist; the
/// rotated files are taken while they exist.
pub fn open_segments(base: &Path) -> Result<Vec<(String, BufReader<File>)>, Error> {
    let base = base
        .to_str()
        .ok_or_else(|| Error::Runtime(format!("{}: the path is not UTF-8", base.display())))?;
    let mut files = Vec::new();
    for n in 0.. {
        let name = segment_name(base, n);
        match File::open(&name) {
            Ok(f) => files.push((name, BufReader::with_capacity(1 << 20, f))),
            Err(e) if n > 0 && e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => {
                return Err(Error::Runtime(format!(
                    "cannot open {name}: {}",
                    describe(&e)
                )))
            }
        }
    }
    Ok(files)
}

/// Walks every record of the capture at `base`, in order, with the file and offset it starts at
/// (the engine's rules: [`walk_segments`]), then names on stderr the files it left out.
fn walk(
    base: &Path,
    each: impl FnMut(&str, u64, &Header, Record) -> Result<(), Error>,
) -> Result<(Header, Extent), Error> {
    match walk_segments(open_segments(base)?, each) {
        Ok((header, extent)) => {
            note_skipped(&extent);
            Ok((header, extent))
        }
        Err(WalkError::Capture(message)) => Err(Error::Runtime(message)),
        Err(WalkError::Stopped(e)) => Err(e),
    }
}

/// One line on stderr per file that is not part of the capture, and why.
pub(crate) fn note_skipped(extent: &Extent) {
    for skipped in &extent.skipped {
        eprintln!("note: {skipped}");
    }
}

/// How a tool that did its work ends: `Ok`, or [`Error::Torn`] (exit status 3) naming where the
/// capture is torn.
pub(crate) fn torn_or_ok(extent: &Extent) -> Result<(), Error> {
    match &extent.torn {
        None => Ok(()),
        Some(torn) => Err(Error::Torn(format!(
            "{torn}. Every complete record before the tear was used; a capture ends like this \
             when its proxy is killed while recording"
        ))),
    }
}

// ---- replay --engine --------------------------------------------------------------------

/// The modes `fanout` itself records with [`Passthrough`] (relay, duplex, the em-proxy form);
/// `balance ...` modes run the balancer they name; every other mode is a program on
/// [`crate::host`], whose interceptor `fanout` does not have.
const BUILT_IN_MODES: [&str; 3] = ["relay", "duplex", "fanout"];

/// `fanout replay --engine FILE`: feeds every recorded input to a fresh engine built from the
/// header's config, running the interceptor the header's mode names (a balancer with the
/// recorded strategy, seed and retry interval for `balance ...`, else relay/duplex's
/// [`Passthrough`]), and checks each recorded `Outputs` digest. Prints one line; an error names
/// where the replay diverged.
pub fn replay_engine(base: &Path, out: &mut impl Write) -> Result<(), Error> {
    // A header that cannot be read is reported by the replay itself, in its words.
    let header = first_header(base);
    let balance = header
        .as_ref()
        .and_then(|h| Some((BalanceConfig::from_mode(&h.mode)?, &h.backends)));
    match balance {
        Some((Ok(cfg), upstreams)) => replay(
            base,
            out,
            |mode| BalanceConfig::from_mode(mode).is_some(),
            || cfg.balancer(upstreams),
        ),
        Some((Err(e), _)) => Err(Error::Runtime(format!("{}: {e}", base.display()))),
        None => replay(
            base,
            out,
            |mode| BUILT_IN_MODES.contains(&mode),
            || Passthrough,
        ),
    }
}

/// The header of the capture's first file, if it can be read.
fn first_header(base: &Path) -> Option<Header> {
    let (_, reader) = open_segments(base).ok()?.into_iter().next()?;
    Decoder::new(reader).ok().map(|d| d.header().clone())
}

/// The schema the capture's first file was written in (today's if it cannot be read: the
/// replay then reports why).
fn first_schema(base: &Path) -> u16 {
    let first = open_segments(base).ok().and_then(|s| s.into_iter().next());
    first
        .and_then(|(_, reader)| Decoder::new(reader).ok())
        .map_or(fanout_engine::capture::SCHEMA_VERSION, |d| d.schema())
}

/// `PROGRAM replay --engine FILE`: as [`replay_engine`], with an interceptor from `make` in the
/// engine, for a capture recorded by the program named `program` (the header's mode).
pub fn replay_engine_with<I: Interceptor>(
    base: &Path,
    out: &mut impl Write,
    program: &str,
    make: impl Fn() -> I,
) -> Result<(), Error> {
    replay(base, out, |mode| mode == program, make)
}

/// The replay itself. `ours` says whether a header's mode was recorded with this interceptor;
/// it only words the error when a replay fails.
fn replay<I: Interceptor>(
    base: &Path,
    out: &mut impl Write,
    ours: impl Fn(&str) -> bool,
    make: impl Fn() -> I,
) -> Result<(), Error> {
    let mut replayer: Option<Replayer<I>> = None;
    let mut mode = String::new();
    let schema = first_schema(base);
    // Inputs replayed when the last digest was checked.
    let mut checked_at = 0;
    let walked = walk(base, |name, offset, header, record| {
        if replayer.is_none() {
            mode.clone_from(&header.mode);
            let engine =
                crate::proxy::build_engine(header.config.clone(), make()).map_err(|e| {
                    Error::Runtime(format!("{name}: the recorded config is refused: {e}"))
                })?;
            replayer = Some(Replayer::for_schema(engine, schema));
        }
        let r = replayer.as_mut().expect("set above");
        let outputs = matches!(record, Record::Outputs { .. });
        r.apply(record, |_| {}).map_err(|d| {
            Error::Runtime(format!(
                "{name}: at byte {offset}: the replay diverged: {d}"
            ))
        })?;
        if let Some(v) = r.contract() {
            return Err(Error::Runtime(format!(
                "{name}: at byte {offset}: the replayed engine broke its contract: {v}"
            )));
        }
        if outputs {
            checked_at = r.inputs();
        }
        Ok(())
    });
    let other_program = |e: Error| match e {
        Error::Runtime(m) if !mode.is_empty() && !ours(&mode) => Error::Runtime(format!(
            "{m}\n(the capture was recorded by `{mode}`, which runs another interceptor: \
             replay it with `{mode} replay --engine FILE`)"
        )),
        e => e,
    };
    let (_, extent) = walked.map_err(other_program)?;
    let Some(r) = replayer else {
        torn_or_ok(&extent)?;
        return Err(Error::Runtime(format!(
            "{}: the capture holds no records: nothing to replay",
            base.display()
        )));
    };
    if r.checked() == 0 {
        let _ = writeln!(
            out,
            "replayed {} inputs; no digest recorded before the tear to check them against",
            r.inputs()
        );
        torn_or_ok(&extent)?;
        return Err(Error::Runtime(format!(
            "{}: replayed {} inputs, but the capture holds no Outputs digest to check them \
             against (was the proxy killed before it drained?)",
            base.display(),
            r.inputs()
        )));
    }
    let unchecked = match r.inputs() - checked_at {
        0 => String::new(),
        n => format!("; the last {n} inputs come after the last digest"),
    };
    let _ = writeln!(
        out,
        "reproduced {} inputs, {} commands, digest {:016x} ({} digest(s) checked{unchecked})",
        r.inputs(),
        r.digest().count(),
        r.digest().value(),
        r.checked()
    );
    torn_or_ok(&extent)
}

// ---- capture inspect --------------------------------------------------------------------

/// `fanout capture inspect FILE --json`: the header, then one JSON object per record, each
/// with the file and byte offset it starts at. `Read` data is hex (`data`) with its length
/// (`len`): hex because it is unambiguous, greppable and needs no decoder to eyeball.
pub fn dump_json(base: &Path, out: &mut impl Write) -> Result<(), Error> {
    let mut header_done = false;
    let write_err = |e: io::Error| Error::Runtime(format!("cannot write: {e}"));
    let header_line = |name: &str, header: &Header| {
        serde_json::json!({ "file": name, "header": header }).to_string()
    };
    let (header, extent) = walk(base, |name, offset, header, record| {
        if !header_done {
            header_done = true;
            writeln!(out, "{}", header_line(name, header)).map_err(write_err)?;
        }
        let mut value = serde_json::to_value(&record)
            .map_err(|e| Error::Runtime(format!("{name}: at byte {offset}: {e}")))?;
        if let Record::Input {
            event: Event::Read { data, .. },
            ..
        } = &record
        {
            if let Some(read) = value.pointer_mut("/Input/event/Read") {
                read["len"] = data.len().into();
                read["data"] = hex(data).into();
            }
        }
        let line = serde_json::json!({ "file": name, "offset": offset, "record": value });
        writeln!(out, "{line}").map_err(write_err)
    })?;
    if !header_done {
        // A capture with no records yet (its proxy just started, or was killed at once).
        let first = extent.files.first().map_or("", String::as_str);
        writeln!(out, "{}", header_line(first, &header)).map_err(write_err)?;
    }
    torn_or_ok(&extent)
}

fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `fanout capture inspect FILE`: what was recorded, in a few lines a person reads.
pub fn inspect(base: &Path, out: &mut impl Write) -> Result<(), Error> {
    let capture = read_segments(open_segments(base)?).map_err(Error::Runtime)?;
    note_skipped(&capture.extent);
    let names = &capture.extent.files;
    let size: u64 = names
        .iter()
        .filter_map(|n| std::fs::metadata(n).ok())
        .map(|m| m.len())
        .sum();
    let h = &capture.header;
    let mut s = Summary::default();
    for r in &capture.records {
        s.add(r);
    }
    let mut w = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "capture {} ({} file(s), {size} bytes, {} records)",
        base.display(),
        names.len(),
        capture.records.len()
    );
    let started = UNIX_EPOCH + Duration::from_millis(h.epoch_unix_ms);
    let _ = writeln!(
        w,
        "mode {}, listening on {}, proxy started {}",
        h.mode,
        h.listen,
        humantime::format_rfc3339_millis(started)
    );
    match &h.run {
        Some(run) => {
            let _ = writeln!(w, "run {}", run.id);
        }
        None => {
            let _ = writeln!(w, "run: not recorded (a capture of schema 1 or 2)");
        }
    }
    for (i, b) in h.backends.iter().enumerate() {
        // relay/duplex open backend i as upstream i; other interceptors choose per session.
        let role = match (BUILT_IN_MODES.contains(&h.mode.as_str()), i) {
            (false, _) => "upstream",
            (true, 0) => "primary",
            (true, _) => "secondary",
        };
        let _ = writeln!(
            w,
            "backend {i} {b} ({role}): {} connect(s), sent {} bytes",
            s.connects.get(&i).copied().unwrap_or(0),
            s.backend_bytes.get(&i).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        w,
        "sessions {}; clients sent {} bytes",
        s.sessions, s.client_bytes
    );
    let dur = s.last.saturating_sub(s.first);
    let _ = writeln!(
        w,
        "inputs {} over {:.3}s (first at {:.3}s, last at {:.3}s on the proxy's clock)",
        s.inputs,
        dur as f64 / 1e9,
        s.first as f64 / 1e9,
        s.last as f64 / 1e9
    );
    let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(w, "events: {}", kinds.join(", "));
    let listed = s.outputs.len() <= OUTPUTS_LISTED;
    for (i, (after, commands, digest)) in s.outputs.iter().enumerate() {
        // A long capture holds a digest per flush interval: the first ones and the last.
        let shown = listed || i < 3 || i + 2 >= s.outputs.len();
        if shown {
            let _ = writeln!(
                w,
                "outputs after {after} inputs: {commands} commands, digest {digest:016x}"
            );
        } else if i == 3 {
            let _ = writeln!(w, "  ... and {} more digests", s.outputs.len() - 5);
        }
    }
    let last = s.outputs.last().map_or(0, |o| o.0);
    if s.inputs == 0 && s.outputs.is_empty() {
        let _ = writeln!(w, "outputs: none (nothing recorded yet)");
    } else if last < s.inputs {
        let _ = writeln!(
            w,
            "outputs: none after the last {} inputs (the proxy did not end cleanly)",
            s.inputs - last
        );
    }
    match script::sessions(h, &capture.records) {
        Ok(scripts) => {
            let got: usize = scripts.iter().map(|s| s.client_saw.len()).sum();
            let _ = writeln!(w, "clients received {got} bytes");
            session_table(&mut w, &scripts, h.backends.len());
        }
        Err(e) => {
            let _ = writeln!(w, "sessions: cannot be replayed: {e}");
        }
    }
    out.write_all(w.as_bytes())
        .map_err(|e| Error::Runtime(format!("cannot write: {e}")))?;
    torn_or_ok(&capture.extent)
}

/// Sessions listed at most; a summary line covers the rest.
const SESSIONS_LISTED: usize = 50;
/// Output digests listed in full at most; beyond, the first three and the last two.
const OUTPUTS_LISTED: usize = 8;

fn session_table(w: &mut String, scripts: &[SessionScript], backends: usize) {
    use std::fmt::Write as _;
    let mut head = String::from("  conn   accepted_s  client_sent  client_got  client_eof");
    for b in 0..backends {
        let _ = write!(head, "  backend{b}_sent");
    }
    let _ = writeln!(w, "{head}");
    for s in scripts.iter().take(SESSIONS_LISTED) {
        let conn = s.conn.map_or(0, |c| c.0);
        let eof = s
            .client
            .eof
            .map_or("-".to_string(), |d| format!("{:.3}s", d.as_secs_f64()));
        let _ = write!(
            w,
            "  {conn:<6} {:>10.3}  {:>11}  {:>10}  {eof:>10}",
            s.accepted_at.as_nanos() as f64 / 1e9,
            s.client.len(),
            s.client_saw.len()
        );
        for b in 0..backends {
            let n = s
                .backends
                .get(&fanout_engine::BackendId(b as u16))
                .map_or(0, |st| st.len());
            let _ = write!(w, "  {n:>14}");
        }
        let _ = writeln!(w);
    }
    if scripts.len() > SESSIONS_LISTED {
        let _ = writeln!(w, "  ... and {} more", scripts.len() - SESSIONS_LISTED);
    }
}

#[derive(Default)]
struct Summary {
    inputs: u64,
    first: u64,
    last: u64,
    sessions: u64,
    client_bytes: u64,
    backend_bytes: BTreeMap<usize, u64>,
    connects: BTreeMap<usize, u64>,
    kinds: BTreeMap<&'static str, u64>,
    /// (inputs before it, commands, digest) per `Outputs` record.
    outputs: Vec<(u64, u64, u64)>,
}

impl Summary {
    fn add(&mut self, record: &Record) {
        match record {
            Record::Outputs { commands, digest } => {
                self.outputs.push((self.inputs, *commands, *digest))
            }
            Record::Input { at, event } => {
                let at = at.as_nanos();
                if self.inputs == 0 {
                    self.first = at;
                }
                self.last = at;
                self.inputs += 1;
                let kind = match event {
                    Event::Accepted { .. } => {
                        self.sessions += 1;
                        "accepted"
                    }
                    Event::Connected { sock } => {
                        if let Peer::Backend(b) = sock.peer {
                            *self.connects.entry(usize::from(b.0)).or_default() += 1;
                        }
                        "connected"
                    }
                    Event::ConnectFailed { .. } => "connect-failed",
                    Event::Read { sock, data } => {
                        let n = data.len() as u64;
                        match sock.peer {
                            Peer::Client => self.client_bytes += n,
                            Peer::Backend(b) => {
                                *self.backend_bytes.entry(usize::from(b.0)).or_default() += n
                            }
                        }
                        "read"
                    }
                    Event::ReadClosed { .. } => "read-closed",
                    Event::Flushed { .. } => "flushed",
                    Event::Spliced { .. } => "spliced",
                    Event::Failed { .. } => "failed",
                    Event::Timeout => "timeout",
                    Event::Drain => "drain",
                    Event::EffectDone { .. } => "effect-done",
                };
                *self.kinds.entry(kind).or_default() += 1;
            }
        }
    }
}
