//! Every golden capture replayed three ways gives every client the same bytes:
//!
//! 1. into the engine alone (`script::sessions`: what the engine wrote to each client);
//! 2. through the simulator (`fanout_sim::replay::replay`: recorded clients and backends as
//!    turmoil hosts);
//! 3. through the real `fanout` binary on loopback, in front of playback backends that answer
//!    their n-th connection with the n-th session's recorded bytes.
//!
//! Also here: `fanout replay --to` against a proxy in front of the same playback backends with
//! `--expect-recorded`, and the test that records a fresh duplex capture (and, with
//! `FANOUT_BLESS=1`, makes it `tests/captures/duplex-http.fcap`).

use crate::captures::{golden_dir, goldens};
use crate::support::backend::Stop;
use crate::support::proxy::{args, run_to_exit, Fanout};
use crate::support::ReadRetrying;
use crate::support::LIVENESS;
use fanout_engine::capture::script::{self, SessionScript, Stream};
use fanout_engine::capture::{read_segments, Header};
use fanout_engine::BackendId;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn load(file: &Path) -> (Header, Vec<SessionScript>) {
    let f = std::fs::File::open(file).unwrap();
    let capture = read_segments([(file.display().to_string(), std::io::BufReader::new(f))])
        .unwrap_or_else(|e| panic!("{e}"));
    let scripts = script::sessions(&capture.header, &capture.records)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    (capture.header, scripts)
}

/// Writes `stream`'s chunks at their offsets from `start`, then shuts down if it ended.
fn play(s: &mut TcpStream, stream: &Stream, start: Instant) -> std::io::Result<()> {
    for chunk in &stream.chunks {
        std::thread::sleep((start + chunk.at).saturating_duration_since(Instant::now()));
        s.write_all(&chunk.data)?;
    }
    if let Some(eof) = stream.eof {
        std::thread::sleep((start + eof).saturating_duration_since(Instant::now()));
        s.shutdown(Shutdown::Write)?;
    }
    Ok(())
}

/// Reads until EOF (or an error: a reset ends a stream too), returning what arrived.
fn drain(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read_retrying(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A backend that answers its n-th connection with `streams[n]` (at the recorded times, then
/// EOF if recorded), reading and discarding what it is sent until the proxy closes.
struct Playback {
    addr: SocketAddr,
    stop: Stop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Playback {
    fn start(streams: Vec<Stream>) -> Playback {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Stop::default();
        let n = Arc::new(AtomicUsize::new(0));
        let streams = Arc::new(streams);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.stopped() {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let start = Instant::now();
                    conn.set_read_timeout(Some(LIVENESS)).unwrap();
                    conn.set_write_timeout(Some(LIVENESS)).unwrap();
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let streams = Arc::clone(&streams);
                    std::thread::spawn(move || {
                        let mut reader = conn.try_clone().unwrap();
                        let discard = std::thread::spawn(move || drain(&mut reader));
                        let script = streams.get(i).cloned().unwrap_or_default();
                        let _ = play(&mut conn, &script, start);
                        let _ = discard.join();
                    });
                }
            })
        };
        Playback {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.stop.stop();
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One playback backend per `BackendId` of the capture.
fn playback_backends(header: &Header, scripts: &[SessionScript]) -> Vec<Playback> {
    (0..header.backends.len())
        .map(|b| {
            let id = BackendId(b as u16);
            Playback::start(
                scripts
                    .iter()
                    .map(|s| s.backends.get(&id).cloned().unwrap_or_default())
                    .collect(),
            )
        })
        .collect()
}

/// The real binary with the capture's mode and limits, in front of `backends`.
fn proxy_for(header: &Header, backends: &[Playback]) -> Fanout {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let mut a = match header.mode.as_str() {
        "relay" => args(["relay", "--listen", "127.0.0.1:0", "--to", &addrs[0]]),
        "duplex" => {
            let mut a = args(["duplex", "--listen", "127.0.0.1:0", "--primary", &addrs[0]]);
            for s in &addrs[1..] {
                a.extend(args(["--secondary", s]));
            }
            a
        }
        _ => {
            let mut a = args(["-l", "127.0.0.1:0", "-r", &addrs[0]]);
            if addrs.len() > 1 {
                a.extend(args(["-d", &addrs[1..].join(",")]));
            }
            a
        }
    };
    let c = &header.config;
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    a.extend(args([
        "--connect-timeout".to_string(),
        ms(c.connect_timeout),
        "--idle-timeout".into(),
        ms(c.idle_timeout),
        "--secondary-deadline".into(),
        ms(c.secondary_deadline),
        "--drain-timeout".into(),
        ms(c.drain_timeout),
        "--max-connections".into(),
        c.max_connections.to_string(),
        "--high-water".into(),
        c.high_water.to_string(),
        "--low-water".into(),
        c.low_water.to_string(),
        "--secondary-budget".into(),
        c.secondary_budget.to_string(),
        "--secondary-memory".into(),
        c.secondary_memory.to_string(),
    ]));
    Fanout::start(&a)
}

/// Plays each session through the real proxy, one after another (so each playback backend's
/// n-th connection is the n-th session's), and returns what each client received.
fn through_io(header: &Header, scripts: &[SessionScript]) -> Vec<Vec<u8>> {
    let backends = playback_backends(header, scripts);
    let proxy = proxy_for(header, &backends);
    scripts
        .iter()
        .map(|s| {
            let mut conn = proxy.connect();
            let start = Instant::now();
            let mut reader = conn.try_clone().unwrap();
            let got = std::thread::spawn(move || drain(&mut reader));
            play(&mut conn, &s.client, start).expect("client playback");
            got.join().unwrap()
        })
        .collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn every_golden_capture_gives_clients_the_same_bytes_in_engine_sim_and_io() {
    for file in goldens() {
        same_bytes_in_engine_sim_and_io(&file);
    }
}

/// Replays `file` into the engine, the simulator and the real binary; every client must get the
/// same bytes from all three.
fn same_bytes_in_engine_sim_and_io(file: &Path) -> Vec<SessionScript> {
    let (header, scripts) = load(file);
    let sim = fanout_sim::replay::replay(&header, &scripts, 0, &[]);
    assert!(
        sim.error.is_none(),
        "{}: sim: {:?}",
        file.display(),
        sim.error
    );
    let io = through_io(&header, &scripts);
    assert_eq!(sim.received.len(), scripts.len());
    for (n, s) in scripts.iter().enumerate() {
        let name = format!("{} session {n}", file.display());
        assert!(!s.client_saw.is_empty(), "{name}: the client saw nothing");
        for (driver, got) in [("sim", &sim.received[n]), ("io", &io[n])] {
            assert!(
                *got == s.client_saw,
                "{name}: {driver} gave the client {} bytes, the engine replay {} (first difference at byte {})\n{driver}: {:?}\nengine: {:?}",
                got.len(),
                s.client_saw.len(),
                first_difference(got, &s.client_saw),
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(&s.client_saw),
            );
        }
    }
    scripts
}

/// `fanout replay --to` with `--expect-recorded`, one session at a time, through a proxy in front
/// of playback backends: every response matches the recording.
#[test]
fn replay_to_a_proxy_over_playback_backends_matches_the_recording() {
    for file in goldens() {
        let (header, scripts) = load(&file);
        let backends = playback_backends(&header, &scripts);
        let proxy = proxy_for(&header, &backends);
        let f = run_to_exit(
            &args([
                "replay",
                file.to_str().unwrap(),
                "--to",
                &proxy.addr().to_string(),
                "--concurrency",
                "1",
                "--expect-recorded",
                "--timeout",
                "10s",
            ]),
            LIVENESS * 3,
        );
        assert!(
            f.status.success(),
            "{}: {}\n{}",
            file.display(),
            f.stdout,
            f.stderr
        );
        assert!(f.stdout.contains("sessions/s"), "{}", f.stdout);
    }
}

// ---- recording the golden capture ------------------------------------------------------

/// An HTTP-ish backend: reads a request head (and a `Content-Length` body), answers with a body
/// derived from the path, `Connection: close`, then closes.
fn http_backend(name: &'static str) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s: TcpStream, _: &Stop| {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read_retrying(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&req[..head_end]).to_string();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while req.len() < head_end + body_len {
            match s.read_retrying(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let size = if path == "/big" { 20_000 } else { 64 };
        let body: Vec<u8> = (0..size)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i + path.len()) % 26])
            .collect();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nServer: {name}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes());
        let _ = s.write_all(&body);
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.read_retrying(&mut buf);
    }
}

/// Records a duplex with two backends and five sessions of small HTTP-ish traffic (one of them
/// half-closing) with the real binary, and checks the fresh capture replays to its digest and gives
/// every client the same bytes in every driver. With `FANOUT_BLESS=1` it also becomes the golden
/// `tests/captures/duplex-http.fcap`:
/// `FANOUT_BLESS=1 cargo test -p fanout-io --test e2e a_fresh_duplex_capture`.
#[test]
fn a_fresh_duplex_capture_replays_in_every_driver() {
    use crate::support::backend::Backend;
    let primary = Backend::spawn(http_backend("primary"));
    let secondary = Backend::spawn(http_backend("secondary"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("duplex-http.fcap");
    let mut proxy = Fanout::duplex(
        primary.arg(),
        &[secondary.arg()],
        &["--capture", file.to_str().unwrap()],
    );
    let pause = || std::thread::sleep(Duration::from_millis(15));
    let sessions: Vec<(Vec<&[u8]>, bool)> = vec![
        (vec![b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"], false),
        // The half-close: the client shuts down its write side right after the request.
        (vec![b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"], true),
        (
            vec![
                b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
                b"hello",
                b"world",
            ],
            false,
        ),
        (vec![b"GET /d HT", b"TP/1.1\r\nHo", b"st: x\r\n\r\n"], false),
        (vec![b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"], false),
    ];
    for (chunks, half_close) in sessions {
        let mut s = proxy.connect();
        for c in chunks {
            s.write_all(c).unwrap();
            pause();
        }
        if half_close {
            s.shutdown(Shutdown::Write).unwrap();
        }
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            match s.read_retrying(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK"));
        drop(s);
        pause();
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
    let replayed = run_to_exit(
        &args(["replay", "--engine", file.to_str().unwrap()]),
        LIVENESS,
    );
    assert_eq!(replayed.status.code(), Some(0), "{replayed:?}");
    let scripts = same_bytes_in_engine_sim_and_io(&file);
    assert_eq!(scripts.len(), 5);
    assert_eq!(scripts.iter().filter(|s| s.client.eof.is_some()).count(), 5);
    if std::env::var_os("FANOUT_BLESS").is_some() {
        std::fs::copy(&file, golden_dir().join("duplex-http.fcap")).unwrap();
    }
}
