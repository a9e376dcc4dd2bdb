//! Relay behaviour: streaming, half-close, backpressure, failures.

mod support;

use fanout_engine::{Command, Config, Event, Failure, Outcome};
use std::time::Duration;
use support::*;

#[test]
fn accept_asks_for_the_primary_and_nothing_else() {
    let mut h = Harness::new(relay());
    let cmds = h.accept(1);
    assert_eq!(
        cmds,
        vec![Command::Connect {
            sock: backend(1, P),
            upstream: fanout_engine::UpstreamId(0),
        }]
    );
}

#[test]
fn client_bytes_wait_for_the_connect_then_go_in_order() {
    let mut h = Harness::new(relay());
    h.accept(1);
    assert!(h.read(client(1), b"hello ").is_empty());
    assert!(h.read(client(1), b"world").is_empty());
    h.connected(backend(1, P));
    assert_eq!(h.sent(backend(1, P)), b"hello world");
}

#[test]
fn each_chunk_is_forwarded_as_it_arrives_without_waiting_for_more() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(client(1), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(h.sent(backend(1, P)), b"GET / HTTP/1.1\r\n\r\n");
    // The first part of a response reaches the client before the backend sent the rest.
    h.read(backend(1, P), b"HTTP/1.1 200 OK\r\n");
    assert_eq!(h.sent(client(1)), b"HTTP/1.1 200 OK\r\n");
    h.read(backend(1, P), b"content-length: 0\r\n\r\n");
    assert_eq!(
        h.sent(client(1)),
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn client_half_close_still_receives_the_whole_response() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(client(1), b"request");
    h.eof(client(1));
    // The FIN waits for the request bytes to be flushed.
    assert!(!h.is_shut(backend(1, P)));
    h.flush(backend(1, P));
    assert!(h.is_shut(backend(1, P)));
    // The backend answers after seeing EOF; the client gets all of it, then a FIN.
    h.read(backend(1, P), b"response part 1;");
    h.read(backend(1, P), b"response part 2");
    h.eof(backend(1, P));
    assert!(!h.is_shut(client(1)), "FIN must not overtake queued bytes");
    h.flush(client(1));
    assert_eq!(h.sent(client(1)), b"response part 1;response part 2");
    assert!(h.is_shut(client(1)));
    assert!(h.is_closed(client(1)) && h.is_closed(backend(1, P)));
    h.assert_quiescent();
}

#[test]
fn backend_eof_is_passed_on_only_after_its_queue_drains() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(backend(1, P), b"banner");
    h.eof(backend(1, P));
    assert!(!h.is_shut(client(1)));
    h.flush_some(client(1), 3);
    assert!(!h.is_shut(client(1)));
    h.flush(client(1));
    assert!(h.is_shut(client(1)));
    // The client may still talk to a half-closed primary.
    h.read(client(1), b"more");
    assert_eq!(h.sent(backend(1, P)), b"more");
    h.eof(client(1));
    h.flush_all();
    assert!(h.is_closed(backend(1, P)));
    h.assert_quiescent();
}

#[test]
fn slow_client_pauses_the_primary_until_low_water() {
    let cfg = Config {
        high_water: 1000,
        low_water: 200,
        ..relay()
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    h.read(backend(1, P), &[7; 600]);
    assert!(!h.is_paused(backend(1, P)));
    h.read(backend(1, P), &[7; 600]);
    assert!(
        h.is_paused(backend(1, P)),
        "1200 unflushed > high water 1000"
    );
    h.flush_some(client(1), 900);
    assert!(
        h.is_paused(backend(1, P)),
        "300 unflushed is above low water"
    );
    h.flush_some(client(1), 100);
    assert!(!h.is_paused(backend(1, P)), "200 unflushed is at low water");
}

#[test]
fn slow_primary_pauses_the_client() {
    let cfg = Config {
        high_water: 1000,
        low_water: 200,
        ..relay()
    };
    let mut h = Harness::new(cfg);
    h.accept(1);
    // Before the connect completes, bytes pile up as pending and still count.
    h.read(client(1), &[1; 1500]);
    assert!(h.is_paused(client(1)));
    h.connected(backend(1, P));
    h.flush(backend(1, P));
    assert!(!h.is_paused(client(1)));
}

#[test]
fn refused_primary_closes_the_client_at_once() {
    let mut h = Harness::new(relay());
    h.accept(1);
    h.read(client(1), b"hello");
    let cmds = h.handle(Event::ConnectFailed {
        sock: backend(1, P),
        reason: Failure::Refused,
    });
    assert_eq!(cmds, vec![Command::Close { sock: client(1) }]);
    h.assert_quiescent();
}

#[test]
fn primary_reset_mid_response_closes_the_client() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(backend(1, P), b"partial");
    let cmds = h.fail(backend(1, P), Failure::Reset);
    assert!(cmds.contains(&Command::Close { sock: client(1) }));
    h.assert_quiescent();
}

#[test]
fn primary_reset_after_its_eof_still_delivers_the_response() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(backend(1, P), b"whole response");
    h.eof(backend(1, P));
    h.fail(backend(1, P), Failure::Reset);
    assert!(!h.is_closed(client(1)));
    h.flush(client(1));
    assert!(h.is_shut(client(1)));
    assert_eq!(h.sent(client(1)), b"whole response");
}

#[test]
fn client_reset_closes_the_primary() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.read(client(1), b"x");
    let cmds = h.fail(client(1), Failure::Reset);
    assert_eq!(
        cmds,
        vec![Command::Close {
            sock: backend(1, P)
        }]
    );
    h.assert_quiescent();
}

#[test]
fn connect_timeout_closes_the_client() {
    let mut h = Harness::new(relay());
    h.accept(1);
    let cmds = h.advance(h.cfg().connect_timeout - Duration::from_millis(1));
    assert!(cmds.is_empty());
    let cmds = h.advance(Duration::from_millis(1));
    assert!(cmds.contains(&Command::Close {
        sock: backend(1, P)
    }));
    assert!(cmds.contains(&Command::Close { sock: client(1) }));
    h.assert_quiescent();
}

#[test]
fn idle_timeout_counts_from_the_last_activity() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(10),
        ..relay()
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    h.advance(Duration::from_secs(6));
    h.read(client(1), b"still here");
    h.flush_all();
    assert!(
        h.advance(Duration::from_secs(6)).is_empty(),
        "activity at 6s moves the deadline to 16s"
    );
    let cmds = h.advance(Duration::from_secs(4));
    assert!(cmds.contains(&Command::Close { sock: client(1) }));
    assert!(cmds.contains(&Command::Close {
        sock: backend(1, P)
    }));
    h.assert_quiescent();
}

#[test]
fn max_connections_pauses_accepting_and_resumes_when_one_leaves() {
    let cfg = Config {
        max_connections: 2,
        ..relay()
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    assert!(!h.accept_paused);
    h.open(2);
    assert!(h.accept_paused);
    // A client accepted in the same instant as the pause is closed, not served.
    let cmds = h.accept(3);
    assert_eq!(cmds, vec![Command::Close { sock: client(3) }]);
    h.exchange(1, b"q", b"a");
    assert!(!h.accept_paused);
    assert_eq!(h.engine.open_clients(), 1);
}

#[test]
fn drain_waits_for_open_sessions_then_reports_drained() {
    let mut h = Harness::new(relay());
    h.open(1);
    let cmds = h.handle(Event::Drain);
    assert_eq!(cmds, vec![Command::PauseAccept]);
    assert!(!h.drained);
    h.exchange(1, b"q", b"a");
    assert!(h.drained);
    assert_eq!(h.sent(client(1)), b"a");
    h.assert_quiescent();
}

#[test]
fn drain_deadline_closes_sessions_that_do_not_finish() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.handle(Event::Drain);
    let cmds = h.advance(h.cfg().drain_timeout);
    assert!(cmds.contains(&Command::Close { sock: client(1) }));
    assert!(h.drained);
    h.assert_quiescent();
}

#[test]
fn a_second_drain_closes_open_sessions_at_once() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.open(2);
    h.handle(Event::Drain);
    assert!(!h.drained, "the first drain lets sessions finish");
    let cmds = h.handle(Event::Drain);
    assert!(
        cmds.contains(&Command::Close { sock: client(1) }),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&Command::Close { sock: client(2) }),
        "{cmds:?}"
    );
    assert!(h.drained, "drained without waiting for the deadline");
    assert_eq!(h.engine.poll_timeout(), None);
    h.assert_quiescent();
    assert!(
        h.handle(Event::Drain).is_empty(),
        "a drain after the end is ignored"
    );
}

#[test]
fn many_sessions_end_with_nothing_held() {
    let mut h = Harness::new(relay());
    for conn in 1..=50 {
        h.open(conn);
    }
    for conn in 1..=50 {
        h.exchange(
            conn,
            format!("req {conn}").as_bytes(),
            format!("resp {conn}").as_bytes(),
        );
        assert_eq!(h.sent(client(conn)), format!("resp {conn}").as_bytes());
    }
    h.assert_quiescent();
    assert_eq!(h.engine.open_clients(), 0);
}

#[test]
fn events_for_unknown_sockets_are_ignored() {
    let mut h = Harness::new(relay());
    assert!(h.read(client(9), b"stray").is_empty());
    assert!(h.eof(backend(9, P)).is_empty());
    h.open(1);
    h.exchange(1, b"q", b"a");
    assert!(h.read(client(1), b"late").is_empty());
    h.assert_quiescent();
}

#[test]
fn same_inputs_give_the_same_commands() {
    let run = || {
        let mut h = Harness::new(duplex(2));
        for conn in 1..=5 {
            h.open(conn);
            h.read(client(conn), b"ping");
            h.read(backend(conn, S1), b"pong?");
            h.advance(Duration::from_millis(3));
        }
        for conn in 1..=5 {
            h.exchange(conn, b"", b"pong!");
        }
        h.advance(Duration::from_secs(60));
        format!("{:?}", h.log)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_relay_reports_only_when_asked() {
    let mut h = Harness::new(relay());
    h.open(1);
    h.exchange(1, b"q", b"a");
    assert!(h.reports.is_empty());
    let mut h = Harness::new(Config {
        reports: true,
        ..relay()
    });
    h.open(1);
    h.exchange(1, b"q", b"a");
    assert_eq!(h.reports.len(), 1);
    assert_eq!(h.reports[0].backends[0].outcome, Outcome::Ok);
}

#[test]
fn a_connect_result_for_a_closed_backend_changes_nothing() {
    let mut h = Harness::new(relay());
    h.accept(1);
    h.advance(h.cfg().connect_timeout); // times out and closes everything
    h.assert_quiescent();
    assert!(h
        .handle(Event::Connected {
            sock: backend(1, P)
        })
        .is_empty());
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.fail(backend(1, S1), Failure::Reset);
    assert!(h
        .handle(Event::Connected {
            sock: backend(1, S1)
        })
        .is_empty());
    h.read(client(1), b"only the primary hears this");
    assert!(h.sent(backend(1, S1)).is_empty());
}
