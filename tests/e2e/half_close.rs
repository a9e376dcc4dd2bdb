//! Half-close both ways: a client's FIN reaches the backend after every byte it sent, and the
//! client still hears the whole response; a backend's FIN reaches the client after every byte.

use crate::support::backend::{self, Backend, Stop};
use crate::support::pattern::{self, Verifier, MIB};
use crate::support::proxy::{report_path, Fanout};
use crate::support::{client, eventually, report, LIVENESS};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

/// The client writes its request and shuts down its write side; the backend answers 10 MiB only
/// once it has read that EOF. The client must get all of it, then EOF.
fn half_closed_client_gets_whole_response(proxy: &Fanout) {
    let mut c = proxy.connect();
    c.write_all(b"GET /ten-mebibytes\r\n\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(Verifier::new().read_to_eof(&mut c), 10 * MIB);
}

#[test]
fn client_half_close_still_receives_whole_response() {
    let b = Backend::spawn(backend::stream_after_eof(10 * MIB));
    let proxy = Fanout::relay(b.addr(), &[]);
    half_closed_client_gets_whole_response(&proxy);
}

#[test]
fn duplex_client_half_close_still_receives_whole_response() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::stream_after_eof(10 * MIB));
    let secondary = Backend::spawn(backend::stream_after_eof(10 * MIB));
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str()],
    );
    half_closed_client_gets_whole_response(&proxy);
    let sessions = report::wait_for(&path, 1);
    let s = report::backend(&sessions[0], &secondary.arg());
    assert_eq!(s["outcome"], "ok", "{s:#}");
    assert_eq!(s["matches_primary"], true, "{s:#}");
}

#[test]
fn client_fin_reaches_backend_after_every_uploaded_byte() {
    let len = 10 * MIB;
    let b = Backend::spawn(backend::count_upload);
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    pattern::write(&mut c, len, |_| {}).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let answer = client::read_to_eof(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        backend::count_line(len, pattern::digest(len)),
        "the backend saw EOF before (or without) every uploaded byte"
    );
}

#[test]
fn backend_eof_reaches_client_after_all_bytes_and_client_can_still_send() {
    // The client never shuts down its side: the backend's FIN alone must end the client's reads.
    let len = 3 * MIB + 17;
    let after_fin = Arc::new(Mutex::new(None));
    let b = {
        let after_fin = Arc::clone(&after_fin);
        Backend::spawn(move |mut s: TcpStream, _: &Stop| {
            if pattern::write(&mut s, len, |_| {}).is_ok() && s.shutdown(Shutdown::Write).is_ok() {
                *after_fin.lock().unwrap() = Some(backend::read_request(&mut s));
            }
        })
    };
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
    // Half-closed, not closed: what the client sends now still reaches the backend.
    c.write_all(b"still here").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(
        eventually(LIVENESS, || after_fin.lock().unwrap().is_some()),
        "the backend never saw the client's FIN"
    );
    assert_eq!(
        after_fin.lock().unwrap().as_deref(),
        Some(&b"still here"[..]),
        "bytes the client sent after the backend's FIN"
    );
}

#[test]
fn duplex_primary_eof_reaches_client_after_all_bytes() {
    let len = 3 * MIB + 17;
    let primary = Backend::spawn(backend::stream(len));
    let secondary = Backend::spawn(backend::never_read);
    let proxy = Fanout::duplex(primary.addr(), &[secondary.arg()], &[]);
    let mut c = proxy.connect();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
}
