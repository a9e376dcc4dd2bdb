//! `fanout replay FILE --to ADDR [--speed X] [--concurrency N,N,...]`: the recorded clients
//! played against a live server.
//!
//! Each recorded session ([`script::sessions`]) becomes one TCP connection to `--to` that sends
//! the client's chunks at their recorded offsets from the accept divided by `--speed`, shuts down
//! its write side at the recorded client EOF (if the client half-closed), and reads until the
//! server closes. Its latency is the time from the connect to the last response byte.
//!
//! - Without `--concurrency`, sessions start at their recorded offsets (divided by `--speed`), at
//!   most [`MAX_IN_FLIGHT`] at once.
//! - With a list of levels, each level plays every session with at most N in flight (the next
//!   starts when one ends), and prints one table row: sessions, errors, throughput, latency
//!   percentiles.
//!
//! Threads, not an event loop: this is a load tool, and two threads per session in flight (one
//! reads, one writes at the recorded times) keep each session's code a straight line. They are
//! bounded by the level (or [`MAX_IN_FLIGHT`]) and use small stacks. Every connect, read and
//! write has `--timeout`. Responses are not compared unless `--expect-recorded`: a staging server
//! answers with its own dates and ids.
//!
//! Exit status: 0 when every session completed (and matched, with `--expect-recorded`), 1
//! otherwise; 3 when they did but the capture is torn (its sessions up to the tear were played).
//! The table is printed either way.

use crate::cli::ReplayArgs;
use crate::error::{describe, Error};
use crate::tools::{note_skipped, open_segments, torn_or_ok};
use fanout_engine::capture::read_segments;
use fanout_engine::capture::script::{self, SessionScript};
use hdrhistogram::Histogram;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sessions in flight at most when playing at the recorded times.
pub const MAX_IN_FLIGHT: usize = 512;
/// Stack of a session thread: they only shuffle bytes through a 64 KiB heap buffer.
const STACK: usize = 256 * 1024;
/// How often a long run reports progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Error messages printed at most per level.
const ERRORS_SHOWN: usize = 5;

/// How to play one session.
#[derive(Debug, Clone)]
struct Opts {
    target: SocketAddr,
    speed: f64,
    timeout: Duration,
    expect: bool,
}

/// What one session did.
#[derive(Debug)]
struct Outcome {
    latency: Duration,
    sent: u64,
    received: u64,
    error: Option<String>,
    mismatch: bool,
}

/// One level's results.
#[derive(Debug)]
struct Level {
    label: String,
    sessions: usize,
    errors: usize,
    mismatches: usize,
    elapsed: Duration,
    bytes: u64,
    latency: Histogram<u64>,
    messages: Vec<String>,
}

/// Plays the capture at `args.file` against `args.to`.
pub fn run(args: &ReplayArgs) -> Result<(), Error> {
    let to = args.to.as_deref().unwrap_or_default();
    let target = to
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--to {to}: not an address (IP:PORT or HOST:PORT)")))?;
    let capture = read_segments(open_segments(&args.file)?).map_err(Error::Runtime)?;
    note_skipped(&capture.extent);
    let scripts = script::sessions(&capture.header, &capture.records)
        .map_err(|e| Error::Runtime(format!("{}: {e}", args.file.display())))?;
    if scripts.is_empty() {
        return Err(Error::Runtime(format!(
            "{}: the capture holds no sessions",
            args.file.display()
        )));
    }
    let scripts = Arc::new(scripts);
    let opts = Opts {
        target,
        speed: args.speed,
        timeout: args.timeout,
        expect: args.expect_recorded,
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "replaying {} session(s) from {} against {target} at speed {}",
        scripts.len(),
        args.file.display(),
        args.speed
    );
    let _ = writeln!(out, "{}", Row::HEADER);
    let _ = out.flush();
    let levels: Vec<Option<usize>> = if args.concurrency.is_empty() {
        vec![None]
    } else {
        args.concurrency.iter().map(|&n| Some(n)).collect()
    };
    let mut failed = false;
    for limit in levels {
        let level = play_level(&scripts, &opts, limit);
        let _ = writeln!(out, "{}", Row(&level, opts.expect));
        let _ = out.flush();
        for m in &level.messages {
            eprintln!("fanout replay: {m}");
        }
        failed |= level.errors > 0 || level.mismatches > 0;
    }
    if failed {
        return Err(Error::Runtime(
            "some sessions failed or did not match (see the table)".into(),
        ));
    }
    torn_or_ok(&capture.extent)
}

/// Plays every session, at most `limit` at once; `None`: at the recorded start times.
fn play_level(scripts: &Arc<Vec<SessionScript>>, opts: &Opts, limit: Option<usize>) -> Level {
    let label = limit.map_or("recorded".to_string(), |n| n.to_string());
    let cap = limit.unwrap_or(MAX_IN_FLIGHT).max(1);
    let first = scripts.first().map(|s| s.accepted_at).unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Outcome>();
    let mut level = Level {
        label,
        sessions: scripts.len(),
        errors: 0,
        mismatches: 0,
        elapsed: Duration::ZERO,
        bytes: 0,
        latency: Histogram::new(3).expect("3 significant figures is valid"),
        messages: Vec::new(),
    };
    let start = Instant::now();
    let mut progress = Progress {
        label: level.label.clone(),
        total: scripts.len(),
        start,
        next: start + PROGRESS_EVERY,
        printed: false,
    };
    let mut in_flight = 0usize;
    let mut done = 0usize;
    let take = |o: Outcome, level: &mut Level, done: &mut usize| {
        *done += 1;
        level.bytes += o.sent + o.received;
        let _ = level.latency.record(
            u64::try_from(o.latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        if let Some(e) = o.error {
            level.errors += 1;
            if level.messages.len() < ERRORS_SHOWN {
                level.messages.push(e);
            }
        }
        level.mismatches += usize::from(o.mismatch);
    };
    for (i, script) in scripts.iter().enumerate() {
        let start_at = if limit.is_none() {
            start + scaled(script.accepted_at.saturating_since(first), opts.speed)
        } else {
            start
        };
        // Wait for the start time and a free slot, collecting outcomes meanwhile.
        loop {
            let now = Instant::now();
            if in_flight < cap && now >= start_at {
                break;
            }
            let until = if in_flight < cap {
                start_at.min(progress.next)
            } else {
                progress.next
            };
            // The scheduler holds a sender, so an error is only ever a timeout.
            if let Ok(o) = rx.recv_timeout(until.saturating_duration_since(now)) {
                in_flight -= 1;
                take(o, &mut level, &mut done);
            }
            progress.tick(done, in_flight, level.errors);
        }
        let (tx, opts, scripts) = (tx.clone(), opts.clone(), Arc::clone(scripts));
        let spawned = std::thread::Builder::new()
            .name(format!("replay-{i}"))
            .stack_size(STACK)
            .spawn(move || {
                let _ = tx.send(play_session(&scripts[i], &opts));
            });
        match spawned {
            Ok(_) => in_flight += 1,
            Err(e) => take(
                Outcome {
                    latency: Duration::ZERO,
                    sent: 0,
                    received: 0,
                    error: Some(format!("session {i}: cannot start a thread: {e}")),
                    mismatch: false,
                },
                &mut level,
                &mut done,
            ),
        }
    }
    while in_flight > 0 {
        if let Ok(o) = rx.recv_timeout(progress.next.saturating_duration_since(Instant::now())) {
            in_flight -= 1;
            take(o, &mut level, &mut done);
        }
        progress.tick(done, in_flight, level.errors);
    }
    level.elapsed = start.elapsed();
    progress.finish();
    level
}

/// `d / speed`.
fn scaled(d: Duration, speed: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() / speed).unwrap_or(Duration::MAX)
}

/// Progress lines on stderr, once a second, for runs longer than a second.
struct Progress {
    label: String,
    total: usize,
    start: Instant,
    next: Instant,
    printed: bool,
}

impl Progress {
    fn tick(&mut self, done: usize, in_flight: usize, errors: usize) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + PROGRESS_EVERY;
        self.printed = true;
        eprintln!(
            "replay: level {}: {done}/{} sessions done, {in_flight} in flight, {errors} error(s), {:.0}s",
            self.label,
            self.total,
            (now - self.start).as_secs_f64()
        );
    }

    fn finish(&self) {
        if self.printed {
            eprintln!(
                "replay: level {} finished in {:.1}s",
                self.label,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// One table row (and the header that goes with it).
struct Row<'a>(&'a Level, bool);

impl Row<'_> {
    const HEADER: &'static str = "level     sessions  errors  mismatches  sessions/s      MB/s       p50       p90       p99       max";
}

impl std::fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (l, compared) = (self.0, self.1);
        let secs = l.elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| format!("{:.2}ms", l.latency.value_at_quantile(q) as f64 / 1000.0);
        let mismatches = if compared {
            l.mismatches.to_string()
        } else {
            "-".to_string()
        };
        write!(
            f,
            "{:<9} {:>8}  {:>6}  {:>10}  {:>10.1}  {:>8.2}  {:>8}  {:>8}  {:>8}  {:>8}",
            l.label,
            l.sessions,
            l.errors,
            mismatches,
            l.sessions as f64 / secs,
            l.bytes as f64 / 1e6 / secs,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            format!("{:.2}ms", l.latency.max() as f64 / 1000.0),
        )
    }
}

/// Plays one session: connect, send at the recorded times, read until the server closes.
fn play_session(script: &SessionScript, opts: &Opts) -> Outcome {
    let t0 = Instant::now();
    let mut outcome = Outcome {
        latency: Duration::ZERO,
        sent: 0,
        received: 0,
        error: None,
        mismatch: false,
    };
    let conn = script.conn.map_or(0, |c| c.0);
    let fail = |o: &mut Outcome, what: &str, e: &io::Error| {
        o.error = Some(format!("session {conn}: {what}: {}", describe(e)));
    };
    let stream = match TcpStream::connect_timeout(&opts.target, opts.timeout) {
        Ok(s) => s,
        Err(e) => {
            fail(&mut outcome, "connect", &e);
            outcome.latency = t0.elapsed();
            return outcome;
        }
    };
    let _ = stream.set_nodelay(true);
    let prepared = stream
        .set_read_timeout(Some(opts.timeout))
        .and_then(|()| stream.set_write_timeout(Some(opts.timeout)))
        .and_then(|()| stream.try_clone());
    let writer_stream = match prepared {
        Ok(s) => s,
        Err(e) => {
            fail(&mut outcome, "socket set-up", &e);
            return outcome;
        }
    };
    // Dropping `cancel` wakes the writer from its pacing sleep when the read side gave up.
    let (cancel, cancelled) = mpsc::channel::<()>();
    let client = script.client.clone();
    let speed = opts.speed;
    let writer = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || send_script(writer_stream, &client, t0, speed, &cancelled));
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            fail(&mut outcome, "cannot start its writer thread", &e);
            return outcome;
        }
    };
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = None;
    let mut reader = &stream;
    let read_result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                outcome.received += n as u64;
                last = Some(Instant::now());
                if opts.expect {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    outcome.latency = last.unwrap_or_else(Instant::now) - t0;
    if let Err(e) = &read_result {
        fail(&mut outcome, "read", e);
        let _ = stream.shutdown(Shutdown::Both);
    }
    drop(cancel);
    match writer.join() {
        Ok((sent, result)) => {
            outcome.sent = sent;
            // The server may close before the recorded client finished sending (an early error
            // answer): the writer is then cancelled or hits a reset, which is the server's
            // choice. Only a write that timed out (a server that stopped reading) is an error.
            if let Err(e) = result {
                let stalled = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                if outcome.error.is_none() && stalled {
                    fail(&mut outcome, "write", &e);
                }
            }
        }
        Err(_) => outcome.error = Some(format!("session {conn}: the writer thread panicked")),
    }
    if opts.expect && outcome.error.is_none() && got != script.client_saw {
        outcome.mismatch = true;
    }
    outcome
}

/// Sends the client's chunks at their (scaled) times, then half-closes if it did. Returns the
/// bytes sent and how it ended.
fn send_script(
    mut s: TcpStream,
    client: &script::Stream,
    t0: Instant,
    speed: f64,
    cancelled: &mpsc::Receiver<()>,
) -> (u64, io::Result<()>) {
    let mut sent = 0u64;
    let wait = |at: Duration| -> bool {
        let due = t0 + scaled(at, speed);
        let left = due.saturating_duration_since(Instant::now());
        left.is_zero() || matches!(cancelled.recv_timeout(left), Err(RecvTimeoutError::Timeout))
    };
    for chunk in &client.chunks {
        if !wait(chunk.at) {
            return (sent, Err(io::Error::other("cancelled")));
        }
        if let Err(e) = s.write_all(&chunk.data) {
            return (sent, Err(e));
        }
        sent += chunk.data.len() as u64;
    }
    if let Some(eof) = client.eof {
        if !wait(eof) {
            return (sent, Err(io::Error::other("cancelled")));
        }
        if let Err(e) = s.shutdown(Shutdown::Write) {
            return (sent, Err(e));
        }
    }
    (sent, Ok(()))
}
