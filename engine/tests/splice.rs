//! Splice grants: when the driver may move bytes kernel-side (`Engine::splice_route`) and what a
//! spliced transfer (`Event::Spliced`) counts for.

mod support;

use fanout_engine::{Command, Config, Event};
use std::time::Duration;
use support::*;

#[test]
fn relay_grants_a_splice_each_way_once_the_primary_is_connected() {
    let mut h = Harness::new(relay());
    h.accept(1);
    assert_eq!(h.engine.splice_route(client(1)), None, "still connecting");
    h.connected(backend(1, P));
    assert_eq!(h.engine.splice_route(client(1)), Some(backend(1, P)));
    assert_eq!(h.engine.splice_route(backend(1, P)), Some(client(1)));
    assert_eq!(h.engine.splice_route(client(2)), None, "no such session");
}

#[test]
fn duplex_never_grants_a_splice_since_secondaries_and_digests_need_the_bytes() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    assert_eq!(h.engine.splice_route(client(1)), None);
    assert_eq!(h.engine.splice_route(backend(1, P)), None);
}

#[test]
fn a_relay_that_reports_keeps_the_bytes_for_its_digests() {
    let mut h = Harness::new(Config {
        reports: true,
        ..relay()
    });
    h.open(1);
    assert_eq!(h.engine.splice_route(client(1)), None);
}

#[test]
fn no_grant_while_bytes_the_engine_handed_over_are_unflushed() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(client(1), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.engine.splice_route(client(1)),
        None,
        "spliced bytes would overtake the queued request"
    );
    assert_eq!(h.engine.splice_route(backend(1, P)), Some(client(1)));
    h.flush(backend(1, P));
    assert_eq!(h.engine.splice_route(client(1)), Some(backend(1, P)));
}

#[test]
fn no_grant_from_a_socket_at_eof_nor_into_one_that_is_shutting_down() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.eof(client(1));
    assert_eq!(
        h.engine.splice_route(client(1)),
        None,
        "the client sent EOF"
    );
    assert!(h.is_shut(backend(1, P)));
    assert_eq!(
        h.engine.splice_route(backend(1, P)),
        Some(client(1)),
        "the answer still flows"
    );
    h.eof(backend(1, P));
    assert_eq!(h.engine.splice_route(backend(1, P)), None);
    h.assert_quiescent();
}

#[test]
fn spliced_bytes_keep_a_session_from_idling_out() {
    let mut h = Harness::new(Config {
        idle_timeout: Duration::from_secs(10),
        ..relay()
    });
    h.open(1);
    h.advance(Duration::from_secs(6));
    h.handle(Event::Spliced {
        sock: backend(1, P),
        bytes: 1 << 20,
    });
    assert!(
        h.advance(Duration::from_secs(6)).is_empty(),
        "a spliced MiB at 6s moves the deadline to 16s"
    );
    let cmds = h.advance(Duration::from_secs(4));
    assert!(cmds.contains(&Command::Close { sock: client(1) }));
    h.assert_quiescent();
}

#[test]
fn a_spliced_session_still_half_closes_in_order() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.handle(Event::Spliced {
        sock: client(1),
        bytes: 4096,
    });
    h.eof(client(1));
    assert!(
        h.is_shut(backend(1, P)),
        "nothing queued: the FIN goes at once"
    );
    h.handle(Event::Spliced {
        sock: backend(1, P),
        bytes: 65536,
    });
    h.eof(backend(1, P));
    assert!(h.is_closed(client(1)) && h.is_closed(backend(1, P)));
    h.assert_quiescent();
}
