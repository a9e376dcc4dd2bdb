//! `--splice`: a relay's bytes moved kernel-side arrive whole, in order and cut-through, with
//! half-closes passed on; `auto` splices bulk transfers only, `never` never.

use crate::streaming::upload_comes_back_intact;
use crate::support::backend::{self, Backend, Gate};
use crate::support::pattern::{Verifier, MIB};
use crate::support::proxy::{args, command, Fanout};
use std::io::Write;
use std::net::Shutdown;

/// `fanout relay --to TO --splice WHEN` logging at debug level, where the driver says when a
/// socket starts splicing.
fn relay(to: impl std::fmt::Display, when: &str) -> Fanout {
    let a = args([
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to.to_string(),
        "--splice",
        when,
    ]);
    let mut cmd = command(&a);
    cmd.env("RUST_LOG", "fanout_io=debug");
    Fanout::spawn(cmd, &format!("fanout {}", a.join(" ")))
}

fn spliced(proxy: &Fanout) -> bool {
    proxy.stderr().contains(": splicing to ")
}

#[test]
fn a_spliced_download_arrives_whole_and_in_order() {
    let len = 100 * MIB;
    let b = Backend::spawn(backend::stream(len));
    let proxy = relay(b.addr(), "always");
    let mut c = proxy.connect();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
    assert!(spliced(&proxy), "{}", proxy.stderr());
}

#[test]
fn a_spliced_upload_and_its_echo_arrive_whole_and_the_half_close_is_passed_on() {
    let len = 100 * MIB;
    let b = Backend::spawn(backend::echo);
    let proxy = relay(b.addr(), "always");
    // The echo ends only once the backend saw the client's FIN through the proxy.
    upload_comes_back_intact(&proxy, len);
    assert!(spliced(&proxy), "{}", proxy.stderr());
}

#[test]
fn spliced_bytes_are_forwarded_before_the_backend_finishes() {
    let (first, total) = (64 * 1024, 4 * MIB);
    let gate = Gate::default();
    let b = Backend::spawn(backend::gated_stream(first, total, gate.clone()));
    let proxy = relay(b.addr(), "always");
    let mut c = proxy.connect();
    let mut v = Verifier::new();
    v.read_exactly(&mut c, first);
    gate.open();
    assert_eq!(v.read_to_eof(&mut c), total);
}

#[test]
fn auto_splices_a_bulk_answer_after_a_small_request_went_through_memory() {
    let len = 50 * MIB;
    let b = Backend::spawn(backend::stream_after_eof(len));
    let proxy = relay(b.addr(), "auto");
    let mut c = proxy.connect();
    c.write_all(b"GET /large HTTP/1.0\r\n\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
    let log = proxy.stderr();
    assert!(
        log.contains("backend 0: splicing to conn 1 client"),
        "the answer, not the request, is spliced: {log}"
    );
    assert_eq!(log.matches(": splicing to ").count(), 1, "{log}");
}

#[test]
fn never_reads_every_byte_into_memory() {
    let len = 20 * MIB;
    let b = Backend::spawn(backend::stream(len));
    let proxy = relay(b.addr(), "never");
    let mut c = proxy.connect();
    assert_eq!(Verifier::new().read_to_eof(&mut c), len);
    assert!(!spliced(&proxy), "{}", proxy.stderr());
}

#[test]
fn a_client_that_pauses_holds_the_transfer_at_the_pipe_and_then_gets_all_of_it() {
    let len = 256 * MIB;
    let b = Backend::spawn(backend::stream(len));
    let proxy = relay(b.addr(), "always");
    let mut c = proxy.connect();
    let mut v = Verifier::new();
    v.read_exactly(&mut c, MIB);
    // The client's buffers and the pipe fill; the backend is no longer read.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rss = proxy.rss_kib();
    assert!(
        rss < 32 * 1024,
        "the proxy grew to {rss} KiB while its client read nothing"
    );
    // Reading again drains the pipe, which must put the backend back to be read.
    assert_eq!(v.read_to_eof(&mut c), len);
    assert!(spliced(&proxy), "{}", proxy.stderr());
}
