//! The duplex report (`--report FILE`, JSON Lines) and the `-v` summary lines.

use crate::support::backend::{self, Backend};
use crate::support::pattern::hex_digest;
use crate::support::proxy::{args, report_path, run_to_exit, Fanout};
use crate::support::{client, eventually, report, LIVENESS};
use serde_json::Value;
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BACKEND_KEYS: [&str; 11] = [
    "role",
    "address",
    "connect_ms",
    "first_byte_ms",
    "last_byte_ms",
    "bytes_sent",
    "bytes_received",
    "outcome",
    "digest",
    "matches_primary",
    "first_difference",
];

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.frac]Z`; panics on
/// anything else.
fn parse_utc(s: &str) -> f64 {
    fn not_rfc3339<T>(s: &str) -> T {
        panic!("start {s:?} is not YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
    }
    let bad = || not_rfc3339::<()>(s);
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        bad();
    }
    let num =
        |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap_or_else(|_| not_rfc3339(s)) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm) = (num(11..13), num(14..16));
    let secs: f64 = s[17..s.len() - 1]
        .parse()
        .unwrap_or_else(|_| not_rfc3339(s));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3600 + mm * 60) as f64 + secs
}

fn is_ms(v: &Value) -> bool {
    v.as_f64().is_some_and(|ms| ms >= 0.0)
}

#[test]
fn report_has_one_object_per_session_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let primary = Backend::spawn(backend::answer(response.clone()));
    let honest = Backend::spawn(backend::answer(response.clone()));
    let refuser = backend::closed_port().to_string();
    let proxy = Fanout::duplex(
        primary.addr(),
        &[honest.arg(), refuser.clone()],
        &["--report", path.as_str()],
    );
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = proxy.connect();
        clients.push(c.local_addr().unwrap().to_string());
        c.write_all(request).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(client::read_to_eof(&mut c), response);
    }
    let sessions = report::wait_for(&path, 2);
    std::thread::sleep(Duration::from_millis(200));
    let sessions_later = report::read(&path);
    assert_eq!(
        sessions_later.len(),
        2,
        "two sessions, two lines: {sessions:#?}"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_ne!(sessions[0]["session"], sessions[1]["session"]);
    for me in &clients {
        let s = report::session_of(&sessions, me);
        assert!(s["session"].is_u64(), "{s:#}");
        let start = parse_utc(s["start"].as_str().expect("start is a string"));
        assert!(
            (now - start).abs() < 120.0,
            "start {} is not now",
            s["start"]
        );
        let backends = s["backends"].as_array().expect("backends is an array");
        assert_eq!(backends.len(), 3, "{s:#}");
        for b in backends {
            for key in BACKEND_KEYS {
                assert!(b.get(key).is_some(), "backend lacks {key}: {b:#}");
            }
        }
        assert_eq!(backends[0]["role"], "primary", "primary first: {s:#}");
        assert_eq!(backends[1]["role"], "secondary", "{s:#}");
        assert_eq!(backends[2]["role"], "secondary", "{s:#}");

        let p = report::backend(s, &primary.arg());
        assert!(is_ms(&p["connect_ms"]), "{p:#}");
        assert!(
            is_ms(&p["first_byte_ms"]) && is_ms(&p["last_byte_ms"]),
            "{p:#}"
        );
        assert!(
            p["first_byte_ms"].as_f64() <= p["last_byte_ms"].as_f64(),
            "{p:#}"
        );
        assert_eq!(p["bytes_sent"], request.len(), "{p:#}");
        assert_eq!(p["bytes_received"], response.len(), "{p:#}");
        assert_eq!(p["outcome"], "ok", "{p:#}");
        assert_eq!(p["digest"], hex_digest(&response), "{p:#}");
        assert_eq!(p["matches_primary"], Value::Null, "{p:#}");
        assert_eq!(p["first_difference"], Value::Null, "{p:#}");

        let h = report::backend(s, &honest.arg());
        assert!(
            is_ms(&h["connect_ms"]) && is_ms(&h["first_byte_ms"]),
            "{h:#}"
        );
        assert_eq!(h["bytes_sent"], request.len(), "{h:#}");
        assert_eq!(h["bytes_received"], response.len(), "{h:#}");
        assert_eq!(h["outcome"], "ok", "{h:#}");
        assert_eq!(h["digest"], hex_digest(&response), "{h:#}");
        assert_eq!(h["matches_primary"], true, "{h:#}");
        assert_eq!(h["first_difference"], Value::Null, "{h:#}");

        let r = report::backend(s, &refuser);
        assert_eq!(r["outcome"], "refused", "{r:#}");
        assert_eq!(r["connect_ms"], Value::Null, "{r:#}");
        assert_eq!(r["first_byte_ms"], Value::Null, "{r:#}");
        assert_eq!(r["last_byte_ms"], Value::Null, "{r:#}");
        assert_eq!(
            (&r["bytes_sent"], &r["bytes_received"]),
            (&0.into(), &0.into())
        );
        assert_eq!(r["digest"], hex_digest(b""), "{r:#}");
        assert_eq!(r["matches_primary"], false, "{r:#}");
    }
}

#[test]
fn verbose_prints_one_summary_line_per_session_on_stderr() {
    let primary = Backend::spawn(backend::answer(b"pong".to_vec()));
    let secondary = Backend::spawn(backend::answer(b"pong".to_vec()));
    let proxy = Fanout::duplex(primary.addr(), &[secondary.arg()], &["-v"]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = proxy.connect();
        clients.push(c.local_addr().unwrap().to_string());
        c.write_all(b"ping").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(client::read_to_eof(&mut c), b"pong");
    }
    let summaries = |me: &str| {
        let needle = format!("{me} primary");
        proxy
            .stderr()
            .lines()
            .filter(|l| l.contains("session") && l.contains(&needle))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for me in &clients {
        assert!(
            eventually(LIVENESS, || !summaries(me).is_empty()),
            "no summary line for {me}; stderr:\n{}",
            proxy.stderr()
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    for me in &clients {
        let lines = summaries(me);
        assert_eq!(lines.len(), 1, "summary lines for {me}: {lines:#?}");
        let line = &lines[0];
        assert!(line.contains(" ok "), "{line}");
        assert!(line.contains(&secondary.arg()), "{line}");
        assert!(line.contains("match=true"), "{line}");
    }
}

#[test]
fn report_lines_stay_whole_with_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let response = crate::support::pattern::bytes(200 * 1024);
    let primary = Backend::spawn(backend::answer(response.clone()));
    let secondary = Backend::spawn(backend::answer(response.clone()));
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str(), "--threads", "2"],
    );
    let addr = proxy.addr();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let response = response.clone();
            std::thread::spawn(move || assert!(client::request(addr, b"go") == response))
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Every line parses (report::read panics otherwise), and there is one per session.
    let sessions = report::wait_for(&path, 32);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(report::read(&path).len(), 32);
    for s in &sessions {
        assert_eq!(
            report::backend(s, &secondary.arg())["matches_primary"],
            true
        );
    }
}

#[test]
fn an_idle_session_is_reported_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::echo);
    let secondary = Backend::spawn(backend::echo);
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str(), "--idle-timeout", "300ms"],
    );
    let mut c = proxy.connect();
    client::echoes(&mut c, b'i');
    client::expect_closed(&mut c, LIVENESS);
    let sessions = report::wait_for(&path, 1);
    for address in [primary.arg(), secondary.arg()] {
        let b = report::backend(&sessions[0], &address);
        assert_eq!(b["outcome"], "idle-timeout", "{b:#}");
    }
}

/// The report names every client: created 0600, and never written through a symlink.
#[test]
fn report_file_is_created_owner_only_and_never_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let b = Backend::spawn(backend::echo);
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let mut proxy = Fanout::relay(b.addr(), &["--report", path.as_str()]);
    assert_eq!(client::request(proxy.addr(), b"x"), b"x");
    report::wait_for(&path, 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the report has mode {mode:o}");
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(LIVENESS).code(), Some(0));

    let target = dir.path().join("precious");
    std::fs::write(&target, b"not yours\n").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let f = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &b.arg(),
            "--report",
            link.to_str().unwrap(),
        ]),
        LIVENESS,
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("symbolic link"), "{}", f.stderr);
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours\n");
}
