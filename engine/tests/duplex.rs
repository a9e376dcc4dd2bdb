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

/// Three sessions whose secondaries never read, a 10,000-byte budget each and 25,000 bytes for
/// all of them: the write that takes the total past the cap detaches its own secondary.
fn capped() -> Config {
    Config {
        secondary_budget: 10_000,
        secondary_memory: 25_000,
        ..duplex(1)
    }
}

#[test]
fn the_write_that_takes_all_secondaries_past_the_memory_cap_detaches_its_secondary() {
    let mut h = Harness::new(capped());
    for conn in 1..=3 {
        h.open(conn);
        h.read(client(conn), &[7; 9_000]); // under the budget; the secondaries never flush
        h.flush(backend(conn, P));
    }
    // 9,000 + 9,000 held; the third session's 9,000 would make 27,000.
    assert!(!h.is_closed(backend(1, S1)) && !h.is_closed(backend(2, S1)));
    assert!(h.is_closed(backend(3, S1)));
    assert_eq!(h.engine.secondary_held(), 18_000);
    // The primary path never notices: the third client's bytes all reached its primary, and no
    // client was paused.
    assert_eq!(h.sent(backend(3, P)).len(), 9_000);
    assert!((1..=3).all(|c| !h.is_paused(client(c))));
    for conn in 1..=3 {
        h.exchange(conn, b"", b"answer");
        assert_eq!(h.sent(client(conn)), b"answer");
    }
    // Only the third session is over; the others' secondaries still hold their bytes.
    let r = &h.reports[0];
    assert_eq!(r.conn, fanout_engine::ConnId(3));
    assert_eq!(r.backends[1].outcome, Outcome::DetachedMemory);
    assert_eq!(r.backends[0].outcome, Outcome::Ok);
    assert_eq!(Outcome::DetachedMemory.as_str(), "detached-memory");
}

#[test]
fn a_secondary_past_its_own_budget_is_detached_for_the_budget_even_at_the_cap() {
    let mut h = Harness::new(capped());
    h.open(1);
    h.read(client(1), &[1; 9_000]);
    h.open(2);
    h.read(client(2), &[2; 9_000]);
    // Session 2's secondary passes both its budget and the cap: the budget names it.
    h.read(client(2), &[2; 2_000]);
    assert!(h.is_closed(backend(2, S1)));
    h.exchange(2, b"", b"a");
    assert_eq!(h.reports[0].backends[1].outcome, Outcome::DetachedBudget);
    assert!(!h.is_closed(backend(1, S1)));
}

#[test]
fn bytes_a_secondary_flushed_or_dropped_leave_room_under_the_cap() {
    let mut h = Harness::new(capped());
    h.open(1);
    h.open(2);
    h.read(client(1), &[1; 9_000]);
    h.read(client(2), &[2; 9_000]);
    h.flush(backend(1, S1)); // session 1's secondary catches up
    h.fail(backend(2, S1), Failure::Reset); // session 2's is gone, its bytes with it
    assert_eq!(h.engine.secondary_held(), 0);
    h.open(3);
    h.open(4);
    h.read(client(3), &[3; 9_000]);
    h.read(client(4), &[4; 9_000]);
    h.read(client(1), &[1; 6_000]);
    assert!((1..=4).all(|c| c == 2 || !h.is_closed(backend(c, S1))));
    assert_eq!(h.engine.secondary_held(), 24_000);
}

#[test]
fn bytes_waiting_for_a_secondary_to_connect_count_against_the_cap() {
    let mut h = Harness::new(capped());
    h.open(1);
    h.read(client(1), &[1; 9_000]);
    h.open(2);
    h.read(client(2), &[2; 9_000]);
    // Session 3's secondary is still connecting: its bytes wait in the engine all the same.
    h.accept(3);
    h.connected(backend(3, P));
    h.read(client(3), &[3; 5_000]);
    assert!(!h.is_closed(backend(3, S1)));
    assert_eq!(h.engine.secondary_held(), 23_000);
    h.read(client(3), &[3; 4_000]);
    assert!(h.is_closed(backend(3, S1)));
    assert_eq!(h.engine.secondary_held(), 18_000);
    h.exchange(3, b"", b"a");
    assert_eq!(h.reports[0].backends[1].outcome, Outcome::DetachedMemory);
    assert_eq!(h.reports[0].backends[1].connect_time, None);
}

#[test]
fn a_zero_secondary_memory_cap_is_refused() {
    let cfg = Config {
        secondary_memory: 0,
        ..duplex(1)
    };
    let err = fanout_engine::Engine::new(cfg).unwrap_err();
    assert!(err.to_string().contains("secondary memory"), "{err}");
}

#[test]
fn a_backend_that_could_not_get_a_descriptor_is_reported_no_descriptors() {
    let mut h = Harness::new(duplex(1));
    h.accept(1);
    h.connected(backend(1, P));
    h.handle(Event::ConnectFailed {
        sock: backend(1, S1),
        reason: Failure::NoDescriptors,
    });
    h.exchange(1, b"q", b"a");
    assert_eq!(h.sent(client(1)), b"a");
    assert_eq!(h.reports[0].backends[1].outcome, Outcome::NoDescriptors);
    assert_eq!(Outcome::NoDescriptors.as_str(), "no-descriptors");
    // Refused stays for a peer that refused.
    let mut h = Harness::new(duplex(0));
    h.accept(1);
    h.handle(Event::ConnectFailed {
        sock: backend(1, P),
        reason: Failure::NoDescriptors,
    });
    assert!(h.is_closed(client(1)));
    assert_eq!(h.reports[0].backends[0].outcome, Outcome::NoDescriptors);
    h.assert_quiescent();
}

#[test]
fn idle_drain_and_a_vanished_client_each_have_their_own_outcome() {
    // Idle: no bytes either way for the idle timeout.
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.read(client(1), b"q");
    h.flush_all();
    h.advance(h.cfg().idle_timeout);
    let r = &h.reports[0];
    assert_eq!(
        (r.backends[0].outcome, r.backends[1].outcome),
        (Outcome::IdleTimeout, Outcome::IdleTimeout)
    );
    assert_eq!(Outcome::IdleTimeout.as_str(), "idle-timeout");
    h.assert_quiescent();

    // Drain: the drain deadline cuts what is still going.
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.handle(Event::Drain);
    h.advance(h.cfg().drain_timeout);
    let r = &h.reports[0];
    assert_eq!(
        (r.backends[0].outcome, r.backends[1].outcome),
        (Outcome::DrainTimeout, Outcome::DrainTimeout)
    );
    assert_eq!(Outcome::DrainTimeout.as_str(), "drain-timeout");
    assert!(h.drained);

    // The client resets mid-response: the primary has nobody to answer; the secondary finishes.
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.read(client(1), b"q");
    h.flush_all();
    h.read(backend(1, P), b"half an ans");
    h.fail(client(1), Failure::Reset);
    h.read(backend(1, S1), b"answer");
    h.eof(backend(1, S1));
    let r = &h.reports[0];
    assert_eq!(r.backends[0].outcome, Outcome::ClientGone);
    assert_eq!(r.backends[1].outcome, Outcome::Ok);
    assert_eq!(Outcome::ClientGone.as_str(), "client-gone");
    h.assert_quiescent();
}

#[test]
fn a_refused_secondary_keeps_none_of_the_primarys_answer() {
    let mut h = Harness::new(duplex(1));
    h.accept(1);
    h.connected(backend(1, P));
    h.handle(Event::ConnectFailed {
        sock: backend(1, S1),
        reason: Failure::Refused,
    });
    h.read(client(1), b"GET / HTTP/1.1\r\n\r\n");
    h.read(backend(1, P), &[b'x'; 10_000]);
    assert_eq!(h.engine.compare_held(), 0);
}

#[test]
fn a_secondary_that_ended_equal_so_far_releases_the_primarys_bytes_and_is_judged_by_length() {
    let mut h = Harness::new(duplex(1));
    h.open(1);
    h.read(client(1), b"req");
    h.read(backend(1, P), b"abc");
    assert_eq!(
        h.engine.compare_held(),
        3,
        "kept until the secondary answers"
    );
    h.read(backend(1, S1), b"abc");
    h.eof(backend(1, S1));
    h.read(backend(1, P), b"def");
    assert_eq!(h.engine.compare_held(), 0, "the secondary said all it will");
    h.eof(client(1));
    h.flush_all();
    h.eof(backend(1, P));
    h.flush_all();
    let r = h.reports.last().expect("a report");
    let s = &r.backends[1];
    assert_eq!(s.matches_primary, Some(false));
    assert_eq!(
        s.first_difference,
        Some(3),
        "it stopped where the primary went on"
    );
}
