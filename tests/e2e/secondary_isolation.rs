//! Secondary isolation: whatever a secondary does, the client gets exactly the primary's bytes,
//! and the report says what became of the secondary.

use crate::support::backend::{self, Backend};
use crate::support::pattern::{self, MIB};
use crate::support::proxy::{report_path, Fanout};
use crate::support::{client, report};
use serde_json::Value;
use std::net::Shutdown;
use std::time::Duration;

const REQUEST: &[u8] = b"PUT /isolation HTTP/1.1\r\nContent-Length: 12\r\n\r\nhello, world";

/// The primary's answer: 100 KiB of the pattern stream.
fn response() -> Vec<u8> {
    pattern::bytes(100 * 1024)
}

/// Runs one request through a duplex fanout with `secondaries` (and `extra` flags), checks the
/// client got exactly the primary's answer, and returns the session's report.
fn one_session(secondaries: &[String], extra: &[&str]) -> (Value, Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::answer(response()));
    let mut flags = vec!["--report", path.as_str()];
    flags.extend_from_slice(extra);
    let proxy = Fanout::duplex(primary.addr(), secondaries, &flags);
    let got = client::request(proxy.addr(), REQUEST);
    assert!(
        got == response(),
        "the client got {} bytes that are not the primary's {} bytes",
        got.len(),
        response().len()
    );
    let sessions = report::wait_for(&path, 1);
    let p = report::backend(&sessions[0], &primary.arg());
    assert_eq!(p["outcome"], "ok", "{p:#}");
    (sessions[0].clone(), primary)
}

fn assert_outcome(session: &Value, address: &str, outcome: &str) {
    let b = report::backend(session, address);
    assert_eq!(b["outcome"], outcome, "{session:#}");
}

#[test]
fn refused_secondary_costs_client_nothing_and_is_reported_refused() {
    let refuser = backend::closed_port().to_string();
    let (session, _p) = one_session(std::slice::from_ref(&refuser), &[]);
    assert_outcome(&session, &refuser, "refused");
}

#[test]
fn resetting_secondary_costs_client_nothing_and_is_reported_reset() {
    let resetter = Backend::spawn(backend::reset_after_first_byte);
    let (session, _p) = one_session(&[resetter.arg()], &[]);
    assert_outcome(&session, &resetter.arg(), "reset");
}

#[test]
fn slow_reading_secondary_costs_client_nothing_and_is_detached_at_deadline() {
    let slow = Backend::spawn(backend::slow_reader);
    let (session, _p) = one_session(&[slow.arg()], &["--secondary-deadline", "1s"]);
    assert_outcome(&session, &slow.arg(), "detached-deadline");
}

#[test]
fn garbage_answering_secondary_costs_client_nothing_and_is_reported_with_first_difference() {
    let mut garbage = response();
    garbage[4242] ^= 0x5a;
    garbage[5000] ^= 0x5a;
    let liar = Backend::spawn(backend::answer(garbage));
    let (session, _p) = one_session(&[liar.arg()], &[]);
    let s = report::backend(&session, &liar.arg());
    assert_eq!(s["outcome"], "ok", "{s:#}");
    assert_eq!(s["matches_primary"], false, "{s:#}");
    assert_eq!(s["first_difference"], 4242, "{s:#}");
}

#[test]
fn honest_secondary_is_reported_matching_primary() {
    let honest = Backend::spawn(backend::answer(response()));
    let (session, primary) = one_session(&[honest.arg()], &[]);
    let s = report::backend(&session, &honest.arg());
    let p = report::backend(&session, &primary.arg());
    assert_eq!(s["outcome"], "ok", "{s:#}");
    assert_eq!(s["matches_primary"], true, "{s:#}");
    assert_eq!(s["first_difference"], Value::Null, "{s:#}");
    assert_eq!(s["digest"], p["digest"], "{session:#}");
    assert_eq!(s["bytes_sent"], REQUEST.len(), "{s:#}");
}

#[test]
fn never_reading_secondary_lets_48_mib_upload_complete_and_is_detached_by_budget() {
    let len = 48 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::count_upload);
    let sink = Backend::spawn(backend::never_read);
    let proxy = Fanout::duplex(primary.addr(), &[sink.arg()], &["--report", path.as_str()]);
    let mut c = proxy.connect();
    let mut up = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        pattern::write(&mut up, len, |_| {}).expect("upload through the proxy");
        up.shutdown(Shutdown::Write).unwrap();
    });
    let answer = client::read_to_eof(&mut c);
    writer.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        backend::count_line(len, pattern::digest(len)),
        "the primary did not get the whole upload"
    );
    drop(c);
    let sessions = report::wait_for(&path, 1);
    assert_outcome(&sessions[0], &sink.arg(), "detached-budget");
    assert_outcome(&sessions[0], &primary.arg(), "ok");
}

#[test]
fn every_kind_of_bad_secondary_at_once_leaves_client_stream_intact() {
    let refuser = backend::closed_port().to_string();
    let resetter = Backend::spawn(backend::reset_after_first_byte);
    let sink = Backend::spawn(backend::never_read);
    let slow = Backend::spawn(backend::slow_reader);
    let mut garbage = response();
    garbage[10] ^= 1;
    let liar = Backend::spawn(backend::answer(garbage));
    let honest = Backend::spawn(backend::answer(response()));
    let secondaries = [
        refuser.clone(),
        resetter.arg(),
        sink.arg(),
        slow.arg(),
        liar.arg(),
        honest.arg(),
    ];
    let (session, _p) = one_session(&secondaries, &["--secondary-deadline", "1s"]);
    assert_outcome(&session, &refuser, "refused");
    assert_outcome(&session, &resetter.arg(), "reset");
    // A small request fits the budget: the never-reader outlives the primary and hits the deadline.
    assert_outcome(&session, &sink.arg(), "detached-deadline");
    assert_outcome(&session, &slow.arg(), "detached-deadline");
    let l = report::backend(&session, &liar.arg());
    assert_eq!(
        (&l["outcome"], &l["first_difference"]),
        (&"ok".into(), &10.into()),
        "{l:#}"
    );
    assert_eq!(l["matches_primary"], false, "{l:#}");
    let h = report::backend(&session, &honest.arg());
    assert_eq!(h["matches_primary"], true, "{h:#}");
    assert_eq!(
        session["backends"].as_array().unwrap().len(),
        7,
        "{session:#}"
    );
}

#[test]
fn secondary_budget_flag_sets_where_a_never_reader_is_detached() {
    // A 64 KiB budget is passed long before the upload ends, even after the kernel's socket
    // buffers toward the secondary (which autotune to several MiB on loopback) have absorbed
    // their share: 32 MiB is well past both. The deadline is long so that only the budget can
    // end the secondary's leg; a short upload that fit in the buffers would instead end at the
    // deadline, racing the report wait.
    let len = 32 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::count_upload);
    let sink = Backend::spawn(backend::never_read);
    let proxy = Fanout::duplex(
        primary.addr(),
        &[sink.arg()],
        &[
            "--report",
            path.as_str(),
            "--secondary-budget",
            "64KiB",
            "--secondary-deadline",
            "120s",
        ],
    );
    let mut c = proxy.connect();
    pattern::write(&mut c, len, |_| {}).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&client::read_to_eof(&mut c)),
        backend::count_line(len, pattern::digest(len))
    );
    drop(c);
    let sessions = report::wait_for(&path, 1);
    assert_outcome(&sessions[0], &sink.arg(), "detached-budget");
}

#[test]
fn flooding_secondary_costs_client_nothing_and_proxy_memory_stays_bounded() {
    // A secondary that answers 256 MiB to a 100 KiB primary answer: the proxy reads and digests
    // it all (a secondary is never paused) but keeps only a bounded compare window of it.
    let len = 256 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::answer(response()));
    let flood = Backend::spawn(backend::stream(len));
    let proxy = Fanout::duplex(
        primary.addr(),
        &[flood.arg()],
        &["--report", path.as_str(), "--secondary-deadline", "120s"],
    );
    assert!(client::request(proxy.addr(), REQUEST) == response());
    let sessions = report::wait_for_within(&path, 1, Duration::from_secs(60));
    let s = report::backend(&sessions[0], &flood.arg());
    assert_eq!(s["outcome"], "ok", "{s:#}");
    assert_eq!(s["bytes_received"], len, "{s:#}");
    assert_eq!(s["matches_primary"], false, "{s:#}");
    assert_eq!(
        s["digest"],
        format!("{:016x}", pattern::digest(len)),
        "{s:#}"
    );
    let peak = proxy.peak_rss_kib();
    assert!(peak < 64 * 1024, "proxy peak RSS {peak} KiB");
}

#[test]
fn secondary_memory_caps_what_never_reading_secondaries_hold_together() {
    // 48 clients upload 12 MiB each through a duplex whose secondary never reads, with a
    // 16 MiB budget per secondary. Once the kernel's buffers toward each secondary are full (a
    // few MiB on loopback), each holds the rest of its upload: without a cap the proxy peaks
    // near 400 MiB. With --secondary-memory 4MiB the write that would take the secondaries past
    // 4 MiB together detaches its secondary instead, and every client still gets its whole
    // stream to the primary.
    const SESSIONS: usize = 48;
    const CAP_MIB: u64 = 4;
    let len = 12 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::count_upload);
    let sink = Backend::spawn(backend::never_read);
    let cap = format!("{CAP_MIB}MiB");
    let proxy = Fanout::duplex(
        primary.addr(),
        &[sink.arg()],
        &[
            "--report",
            path.as_str(),
            "--secondary-memory",
            cap.as_str(),
            "--secondary-budget",
            "16MiB",
            "--secondary-deadline",
            "1s",
        ],
    );
    let clients: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let mut c = proxy.connect();
            std::thread::spawn(move || {
                let mut up = c.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    pattern::write(&mut up, len, |_| {}).expect("upload through the proxy");
                    up.shutdown(Shutdown::Write).unwrap();
                });
                let answer = client::read_to_eof(&mut c);
                writer.join().unwrap();
                answer
            })
        })
        .collect();
    let want = backend::count_line(len, pattern::digest(len));
    for c in clients {
        let answer = c.join().expect("a client thread");
        assert_eq!(
            String::from_utf8_lossy(&answer),
            want,
            "a primary lost bytes"
        );
    }
    let sessions = report::wait_for_within(&path, SESSIONS, Duration::from_secs(30));
    let mut detached = 0;
    for s in &sessions {
        assert_eq!(report::backend(s, &primary.arg())["outcome"], "ok", "{s:#}");
        let outcome = &report::backend(s, &sink.arg())["outcome"];
        detached += usize::from(outcome == "detached-memory");
    }
    assert!(
        detached >= SESSIONS / 2,
        "only {detached} of {SESSIONS} secondaries were detached for the shared cap: {sessions:#?}"
    );
    let peak_mib = proxy.peak_rss_kib() / 1024;
    assert!(
        peak_mib < CAP_MIB + 64,
        "proxy peak RSS {peak_mib} MiB with secondaries capped at {CAP_MIB} MiB"
    );
}
