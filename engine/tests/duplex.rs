//! Duplex behaviour: fan-out, secondary isolation, and the report.

mod support;

use fanout_engine::{Command, Config, Event, Failure, Outcome, Role};
use std::time::Duration;
use support::*;

#[test]
fn every_backend_gets_every_client_byte_and_only_the_primary_answers() {
    let mut h = Harness::new(duplex(2));
    h.open(1);
    h.read(client(1), b"GET /a");
    h.read(client(1), b" HTTP/1.0\r\n\r\n");
    for b in [P, S1, S2] {
        assert_eq!(h.sent(backend(1, b)), b"GET /a HTTP/1.0\r\n\r\n");
    }
    h.read(backend(1, S1), b"secondary says");
    h.read(backend(1, P), b"primary says");
    h.read(backend(1, S2), b"other says");
    assert_eq!(h.sent(client(1)), b"primary says");
}

#[test]
fn fan_out_shares_the_read_buffer_instead_of_copying_it() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    let data = fanout_engine::Bytes::from(vec![5u8; 4096]);
    let cmds = h.handle(Event::Read {
        sock: client(1),
        data: data.clone(),
    });
    let ptrs: Vec<*const u8> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Write { data, .. } => Some(data.as_ptr()),
            _ => None,
        })
        .collect();
    assert_eq!(ptrs, vec![data.as_ptr(), data.as_ptr()]);
}

#[test]
fn a_secondary_that_never_reads_is_detached_at_its_budget_and_never_pauses_the_client() {
    let cfg = Config {
        secondary_budget: 10_000,
        high_water: 4096,
        low_water: 1024,
        ..duplex(1)
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    for _ in 0..20 {
        h.read(client(1), &[3; 1000]);
        h.flush(backend(1, P)); // the primary keeps up; the secondary never flushes
        assert!(
            !h.is_paused(client(1)),
            "a secondary must never pause the client"
        );
    }
    assert!(h.is_closed(backend(1, S1)));
    assert_eq!(h.sent(backend(1, P)).len(), 20_000);
    h.exchange(1, b"", b"done");
    let report = &h.reports[0];
    assert_eq!(report.backends[1].outcome, Outcome::DetachedBudget);
    assert_eq!(report.backends[1].bytes_sent, 0);
    assert_eq!(report.backends[0].outcome, Outcome::Ok);
    h.assert_quiescent();
}

#[test]
fn a_refused_or_reset_secondary_costs_the_client_nothing() {
    for (fault, expected) in [(true, Outcome::Refused), (false, Outcome::Reset)] {
        let mut h = Harness::new(duplex(1));
        h.accept(1);
        h.connected(backend(1, P));
        if fault {
            h.handle(Event::ConnectFailed {
                sock: backend(1, S1),
                reason: Failure::Refused,
            });
        } else {
            h.connected(backend(1, S1));
            h.read(client(1), b"q");
            h.fail(backend(1, S1), Failure::Reset);
        }
        h.exchange(1, b"query", b"answer");
        assert_eq!(h.sent(client(1)), b"answer");
        assert_eq!(h.reports[0].backends[1].outcome, expected);
        h.assert_quiescent();
    }
}

#[test]
fn a_lagging_secondary_is_detached_at_its_deadline_after_the_primary_ends() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.exchange(1, b"q", b"a");
    // The client and primary are done; the secondary has not answered.
    assert!(h.is_closed(client(1)) && h.is_closed(backend(1, P)));
    assert_eq!(h.engine.session_count(), 1);
    assert_eq!(h.engine.open_clients(), 0);
    let deadline = h.cfg().secondary_deadline;
    assert!(h.advance(deadline - Duration::from_millis(1)).is_empty());
    let cmds = h.advance(Duration::from_millis(1));
    assert!(cmds.contains(&Command::Close {
        sock: backend(1, S1)
    }));
    assert_eq!(h.reports[0].backends[1].outcome, Outcome::DetachedDeadline);
    h.assert_quiescent();
}

#[test]
fn report_times_bytes_and_verdicts_per_backend() {
    let mut h = Harness::new(duplex(2));
    h.accept(1);
    h.advance(Duration::from_millis(2));
    h.connected(backend(1, P));
    h.connected(backend(1, S1));
    h.connected(backend(1, S2));
    h.read(client(1), b"req");
    h.eof(client(1));
    h.flush_all();
    h.advance(Duration::from_millis(5));
    h.read(backend(1, P), b"hello ");
    h.read(backend(1, S1), b"hello world");
    h.read(backend(1, S2), b"hello");
    h.advance(Duration::from_millis(5));
    h.read(backend(1, P), b"world");
    h.read(backend(1, S2), b" there");
    for b in [P, S1, S2] {
        h.eof(backend(1, b));
    }
    h.flush_all();
    let r = &h.reports[0];
    assert_eq!(r.client, "127.0.0.1:40001");
    let [p, s1, s2] = &r.backends[..] else {
        panic!("three backends")
    };
    assert_eq!((p.role, s1.role), (Role::Primary, Role::Secondary));
    assert_eq!(p.connect_time, Some(Duration::from_millis(2)));
    assert_eq!(p.first_byte, Some(Duration::from_millis(5)));
    assert_eq!(p.last_byte, Some(Duration::from_millis(10)));
    assert_eq!((p.bytes_sent, p.bytes_received), (3, 11));
    assert_eq!(p.matches_primary, None);
    assert_eq!(s1.matches_primary, Some(true));
    assert_eq!(s1.digest, p.digest);
    assert_eq!(s1.first_difference, None);
    assert_eq!(s2.matches_primary, Some(false));
    assert_eq!(
        s2.first_difference,
        Some(6),
        "\"hello there\" vs \"hello world\""
    );
    assert!([p, s1, s2].iter().all(|b| b.outcome == Outcome::Ok));
    h.assert_quiescent();
}

#[test]
fn a_shorter_secondary_differs_at_the_end_of_its_response() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.read(backend(1, S1), b"abc");
    h.eof(backend(1, S1));
    h.exchange(1, b"q", b"abcdef");
    let s = &h.reports[0].backends[1];
    assert_eq!(
        (s.matches_primary, s.first_difference),
        (Some(false), Some(3))
    );
}

#[test]
fn past_the_compare_window_only_digests_are_compared() {
    let cfg = Config {
        compare_window: 16,
        ..duplex(1)
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    h.read(backend(1, P), &[1; 100]); // the secondary lags by more than the window
    h.read(backend(1, S1), &[1; 99]);
    h.read(backend(1, S1), &[2; 1]);
    h.eof(backend(1, S1));
    h.exchange(1, b"", b"");
    let s = &h.reports[0].backends[1];
    assert_eq!((s.matches_primary, s.first_difference), (Some(false), None));
}

#[test]
fn primary_failure_still_lets_secondaries_finish_for_the_report() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.read(client(1), b"q");
    h.flush_all();
    h.fail(backend(1, P), Failure::Reset);
    assert!(h.is_closed(client(1)));
    // The secondary gets its FIN and may still answer.
    assert!(h.is_shut(backend(1, S1)));
    h.read(backend(1, S1), b"late answer");
    h.eof(backend(1, S1));
    let r = &h.reports[0];
    assert_eq!(r.backends[0].outcome, Outcome::Reset);
    assert_eq!(r.backends[1].outcome, Outcome::Ok);
    assert_eq!(r.backends[1].bytes_received, 11);
    h.assert_quiescent();
}

#[test]
fn a_silent_secondary_differs_at_offset_zero_even_past_the_compare_window() {
    let cfg = Config {
        compare_window: 16,
        ..duplex(1)
    };
    let mut h = Harness::new(cfg);
    h.open(1);
    h.read(backend(1, P), &[9; 100]); // more than the window, nothing from the secondary
    h.eof(backend(1, S1));
    h.exchange(1, b"", b"");
    let s = &h.reports[0].backends[1];
    assert_eq!(
        (s.matches_primary, s.first_difference),
        (Some(false), Some(0))
    );
}
