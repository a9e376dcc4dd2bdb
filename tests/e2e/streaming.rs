//! Cut-through: bytes are forwarded as they arrive, and big streams arrive whole and in order.

use crate::support::backend::{self, Backend, Gate};
use crate::support::pattern::{self, Verifier, MIB};
use crate::support::proxy::{report_path, Fanout};
use crate::support::{client, report};
use std::io::Write;
use std::net::Shutdown;

/// What the gated backend sends before it waits, and in all.
const FIRST: u64 = 64 * 1024;
const TOTAL: u64 = 4 * MIB;

/// The backend sends [`FIRST`] bytes, then waits for the test's go-ahead, which the test gives
/// only after those bytes reached the client through `proxy`. A proxy that held the response back
/// would leave the client's read to time out.
fn first_bytes_arrive_before_backend_finishes(proxy: &Fanout, gate: &Gate) {
    let mut c = proxy.connect();
    let mut v = Verifier::new();
    v.read_exactly(&mut c, FIRST);
    gate.open();
    assert_eq!(v.read_to_eof(&mut c), TOTAL);
}

#[test]
fn relay_forwards_first_bytes_before_backend_finishes() {
    let gate = Gate::default();
    let b = Backend::spawn(backend::gated_stream(FIRST, TOTAL, gate.clone()));
    let proxy = Fanout::relay(b.addr(), &[]);
    first_bytes_arrive_before_backend_finishes(&proxy, &gate);
}

#[test]
fn duplex_forwards_first_bytes_before_backend_finishes() {
    let gate = Gate::default();
    let primary = Backend::spawn(backend::gated_stream(FIRST, TOTAL, gate.clone()));
    let secondary = Backend::spawn(backend::stream(TOTAL));
    let proxy = Fanout::duplex(primary.addr(), &[secondary.arg()], &[]);
    first_bytes_arrive_before_backend_finishes(&proxy, &gate);
}

#[test]
fn relay_delivers_100_mib_download_intact_and_in_order() {
    let len = 100 * MIB;
    let b = Backend::spawn(backend::stream(len));
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
}

#[test]
fn relay_delivers_100_mib_upload_and_its_echo_intact_and_in_order() {
    let len = 100 * MIB;
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &[]);
    upload_comes_back_intact(&proxy, len);
}

#[test]
fn duplex_delivers_100_mib_download_intact_and_reports_its_digest() {
    let len = 100 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::stream(len));
    let secondary = Backend::spawn(backend::stream(len));
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str()],
    );
    let mut c = proxy.connect();
    let mut v = Verifier::new();
    assert_eq!(v.read_to_eof(&mut c), len);
    drop(c);

    let sessions = report::wait_for(&path, 1);
    let p = report::backend(&sessions[0], &primary.arg());
    assert_eq!(p["bytes_received"], len, "{p:#}");
    assert_eq!(p["digest"], format!("{:016x}", v.digest()), "{p:#}");
    assert_eq!(p["outcome"], "ok", "{p:#}");
    let s = report::backend(&sessions[0], &secondary.arg());
    assert_eq!(s["matches_primary"], true, "{s:#}");
    assert_eq!(s["outcome"], "ok", "{s:#}");
}

#[test]
fn duplex_delivers_100_mib_upload_echo_intact_to_client() {
    let len = 100 * MIB;
    let primary = Backend::spawn(backend::echo);
    let secondary = Backend::spawn(backend::echo);
    let proxy = Fanout::duplex(primary.addr(), &[secondary.arg()], &[]);
    upload_comes_back_intact(&proxy, len);
}

/// A backend that reads a decimal length as the request and answers that many bytes of the
/// pattern stream.
fn sized_answer(mut s: std::net::TcpStream, _: &backend::Stop) {
    let req = backend::read_request(&mut s);
    let Some(len) = std::str::from_utf8(&req).ok().and_then(|r| r.parse().ok()) else {
        return;
    };
    if pattern::write(&mut s, len, |_| {}).is_ok() {
        backend::finish(s);
    }
}

/// 16 clients at once, each asking for a different length: each gets exactly its own response.
fn concurrent_clients_get_their_own_responses(proxy: &Fanout) {
    let addr = proxy.addr();
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            std::thread::spawn(move || {
                let len = (i + 1) * 64 * 1024 + i;
                let got = client::request(addr, len.to_string().as_bytes());
                assert_eq!(got.len() as u64, len, "client {i}");
                assert!(
                    got == pattern::bytes(len as usize),
                    "client {i}: wrong bytes"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn relay_concurrent_clients_each_get_their_own_response() {
    let b = Backend::spawn(sized_answer);
    let proxy = Fanout::relay(b.addr(), &[]);
    concurrent_clients_get_their_own_responses(&proxy);
}

#[test]
fn duplex_concurrent_clients_each_get_their_own_response_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(sized_answer);
    let secondary = Backend::spawn(sized_answer);
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str()],
    );
    concurrent_clients_get_their_own_responses(&proxy);
    let sessions = report::wait_for(&path, 16);
    assert_eq!(sessions.len(), 16);
    for s in &sessions {
        let sec = report::backend(s, &secondary.arg());
        assert_eq!(sec["matches_primary"], true, "{s:#}");
    }
}

#[test]
fn relay_with_two_threads_serves_every_client() {
    let b = Backend::spawn(sized_answer);
    let proxy = Fanout::relay(b.addr(), &["--threads", "2"]);
    concurrent_clients_get_their_own_responses(&proxy);
}

#[test]
fn interactive_round_trips_each_get_their_answer_at_once() {
    // Request, answer, request, answer... on one connection: nothing may wait for more bytes or
    // for the connection to close.
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    for i in 0..300usize {
        let msg = pattern::bytes(1 + (i * 37) % 3000);
        c.write_all(&msg).unwrap();
        assert!(
            client::read_exactly(&mut c, msg.len()) == msg,
            "round trip {i}"
        );
    }
}

#[test]
fn burst_of_100_clients_are_all_served() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut clients: Vec<_> = (0..100).map(|_| proxy.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&(i as u32).to_le_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            client::read_exactly(c, 4),
            (i as u32).to_le_bytes(),
            "client {i}"
        );
    }
}

/// Uploads `len` pattern bytes through `proxy` to an echoing primary, half-closes, and checks the
/// echo arrives whole and in order while the upload is still going.
pub(crate) fn upload_comes_back_intact(proxy: &Fanout, len: u64) {
    let mut c = proxy.connect();
    let mut up = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        pattern::write(&mut up, len, |_| {}).expect("upload through the proxy");
        up.shutdown(Shutdown::Write).unwrap();
    });
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
    writer.join().unwrap();
}
