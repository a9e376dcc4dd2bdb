//! SIGTERM and SIGINT drain: stop accepting, let open sessions finish (until --drain-timeout),
//! then exit 0; a second one ends the drain at once (exit 128 + signal). SIGHUP reopens the
//! report file and touches no session.

use crate::support::backend::{self, Backend, Gate};
use crate::support::client;
use crate::support::pattern::{Verifier, MIB};
use crate::support::proxy::{report_path, Fanout};
use crate::support::{eventually, report, LIVENESS};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

/// Whether a connect to `proxy` is refused (the listener is closed). A connect that still gets
/// through (the signal is not handled yet) is dropped at once.
fn connect_refused(proxy: &Fanout) -> bool {
    match TcpStream::connect_timeout(&proxy.addr(), Duration::from_secs(1)) {
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// A session is mid-response when `sig` arrives: new connects are refused, the session still gets
/// every byte, and the process then exits 0.
fn drains_on(sig: i32) {
    let len = 8 * MIB;
    let gate = Gate::default();
    let b = Backend::spawn(backend::gated_stream(MIB, len, gate.clone()));
    let mut proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    let mut v = Verifier::new();
    v.read_exactly(&mut c, MIB);

    proxy.signal(sig);
    assert!(
        eventually(LIVENESS, || connect_refused(&proxy)),
        "connects still accepted after the signal"
    );
    assert!(proxy.try_exit().is_none(), "exited with a session open");

    gate.open();
    assert_eq!(v.read_to_eof(&mut c), len);
    drop(c);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
}

#[test]
fn sigterm_refuses_new_clients_finishes_open_session_then_exits_0() {
    drains_on(libc::SIGTERM);
}

#[test]
fn sigint_refuses_new_clients_finishes_open_session_then_exits_0() {
    drains_on(libc::SIGINT);
}

#[test]
fn drain_timeout_cuts_endless_session_and_exits_0() {
    let b = Backend::spawn(backend::echo);
    let mut proxy = Fanout::relay(b.addr(), &["--drain-timeout", "500ms"]);
    let mut c = proxy.connect();
    client::echoes(&mut c, b'x');
    proxy.signal(libc::SIGTERM);
    // The default drain timeout is 30 s: closing within LIVENESS is the flag at work.
    client::expect_closed(&mut c, LIVENESS);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
}

#[test]
fn sigterm_with_no_sessions_exits_0() {
    let b = Backend::spawn(backend::echo);
    let mut proxy = Fanout::relay(b.addr(), &[]);
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
}

#[test]
fn drain_timeout_reports_cut_session_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::echo);
    let secondary = Backend::spawn(backend::echo);
    let mut proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str(), "--drain-timeout", "500ms"],
    );
    let mut c = proxy.connect();
    client::echoes(&mut c, b'x');
    proxy.signal(libc::SIGINT);
    client::expect_closed(&mut c, LIVENESS);
    assert_eq!(proxy.wait_exit(LIVENESS).code(), Some(0));
    let sessions = report::read(&path);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let p = report::backend(&sessions[0], &primary.arg());
    assert_eq!(p["outcome"], "drain-timeout", "{p:#}");
}

#[test]
fn sigterm_with_two_threads_closes_every_listener_and_drains_every_session() {
    let len = 4 * MIB;
    let gate = Gate::default();
    let b = Backend::spawn(backend::gated_stream(MIB, len, gate.clone()));
    let mut proxy = Fanout::relay(b.addr(), &["--threads", "2"]);
    let mut sessions: Vec<_> = (0..6)
        .map(|_| {
            let mut c = proxy.connect();
            let mut v = Verifier::new();
            v.read_exactly(&mut c, MIB);
            (c, v)
        })
        .collect();

    proxy.signal(libc::SIGTERM);
    // With one listener per loop, a listener left open would take some of these connects.
    assert!(
        eventually(LIVENESS, || connect_refused(&proxy)),
        "connects still accepted after SIGTERM"
    );
    for i in 0..20 {
        assert!(
            connect_refused(&proxy),
            "connect {i} after the first refusal got through"
        );
    }

    gate.open();
    for (c, v) in &mut sessions {
        assert_eq!(v.read_to_eof(c), len);
    }
    drop(sessions);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
}

#[test]
fn drain_ends_when_a_lingering_secondary_reaches_its_deadline() {
    // The client is done and gone; only a slow secondary keeps the session open. Its deadline
    // (1 s), not the 30 s default drain timeout, decides when the process may exit.
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::answer(b"done".to_vec()));
    let slow = Backend::spawn(backend::slow_reader);
    let mut proxy = Fanout::duplex(
        primary.addr(),
        &[slow.arg()],
        &["--report", path.as_str(), "--secondary-deadline", "1s"],
    );
    assert_eq!(client::request(proxy.addr(), b"finish up"), b"done");
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(LIVENESS).code(), Some(0));
    let sessions = report::read(&path);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let s = report::backend(&sessions[0], &slow.arg());
    assert_eq!(s["outcome"], "detached-deadline", "{s:#}");
}

/// A session is open when the drain starts; a second `sig` closes it at once (not after the 30 s
/// default drain timeout), reports it, and the process exits with `code`.
fn second_signal_cuts_the_drain_short(sig: i32, code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let b = Backend::spawn(backend::echo);
    let mut proxy = Fanout::relay(b.addr(), &["--report", path.as_str()]);
    let mut c = proxy.connect();
    let me = c.local_addr().unwrap().to_string();
    client::echoes(&mut c, b'x');

    proxy.signal(sig);
    assert!(
        eventually(LIVENESS, || connect_refused(&proxy)),
        "the first signal did not start a drain"
    );
    client::echoes(&mut c, b'y');
    assert!(proxy.try_exit().is_none(), "exited with a session open");

    proxy.signal(sig);
    client::expect_closed(&mut c, LIVENESS);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(code), "stderr:\n{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("drain was cut short"),
        "stderr:\n{}",
        proxy.stderr()
    );
    // The report may hold probes of `connect_refused` too; the cut session is there as well.
    let sessions = report::read(&path);
    let p = report::backend(report::session_of(&sessions, &me), &b.arg());
    assert_ne!(p["outcome"], "ok", "{p:#}");
}

#[test]
fn a_second_sigterm_during_the_drain_closes_open_sessions_and_exits_143() {
    second_signal_cuts_the_drain_short(libc::SIGTERM, 143);
}

#[test]
fn a_second_sigint_during_the_drain_closes_open_sessions_and_exits_130() {
    second_signal_cuts_the_drain_short(libc::SIGINT, 130);
}

#[test]
fn sighup_reopens_the_report_file_and_cuts_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let rotated = format!("{path}.1");
    let b = Backend::spawn(backend::echo);
    let mut proxy = Fanout::relay(b.addr(), &["--report", path.as_str()]);
    let before = proxy.connect();
    let before_addr = before.local_addr().unwrap().to_string();
    drop(before);
    report::wait_for(&path, 1);
    let mut across = proxy.connect();
    let across_addr = across.local_addr().unwrap().to_string();
    client::echoes(&mut across, b'a');

    // What logrotate does: rename the file, then SIGHUP.
    std::fs::rename(&path, &rotated).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        eventually(LIVENESS, || std::path::Path::new(&path).exists()),
        "no new report file after SIGHUP; stderr:\n{}",
        proxy.stderr()
    );
    assert!(proxy.try_exit().is_none(), "SIGHUP ended fanout");

    client::echoes(&mut across, b'b');
    drop(across);
    let after = proxy.connect();
    let after_addr = after.local_addr().unwrap().to_string();
    drop(after);

    let new = report::wait_for(&path, 2);
    let clients: Vec<&str> = new.iter().map(|s| s["client"].as_str().unwrap()).collect();
    assert!(
        clients.contains(&across_addr.as_str()) && clients.contains(&after_addr.as_str()),
        "the new file lacks a session that ended after SIGHUP: {new:#?}"
    );
    let old = report::read(&rotated);
    assert_eq!(old.len(), 1, "the rotated file changed: {old:#?}");
    assert_eq!(old[0]["client"], before_addr.as_str());
    for s in &new {
        let p = report::backend(s, &b.arg());
        assert_eq!(p["outcome"], "ok", "a session was cut: {p:#}");
    }
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.wait_exit(LIVENESS).code(), Some(0));
}
