//! Each rule of the checker, broken on purpose by a hand-made stream of events and commands:
//! the checker must catch it under that rule, not a neighbouring one.

use super::*;
use crate::effect::EffectRequest;
use crate::ids::UpstreamId;
use crate::{Failure, Passthrough};
use bytes::Bytes;

const CLIENT: SockId = SockId {
    conn: ConnId(1),
    peer: Peer::Client,
};
const PRIMARY: SockId = SockId {
    conn: ConnId(1),
    peer: Peer::Backend(BackendId::PRIMARY),
};

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn cfg() -> Config {
    Config {
        high_water: 1000,
        low_water: 100,
        reports: true,
        ..Config::default()
    }
}

/// A real relay engine and the checker, fed in step; `drop` leaves commands out of what the
/// checker is shown (a driver that lost them), `extra` adds commands the engine never sent.
struct Run {
    engine: Engine<Passthrough>,
    checker: Checker,
    pacing: Relay,
}

impl Run {
    fn new(cfg: Config) -> Self {
        Run {
            pacing: Relay::new(&cfg, 4096),
            checker: Checker::new(&cfg),
            engine: Engine::new(cfg).unwrap(),
        }
    }

    fn feed_with(
        &mut self,
        now: Instant,
        event: Event,
        mut keep: impl FnMut(&Command) -> bool,
    ) -> Result<(), Violation> {
        self.checker.event(now, &event)?;
        self.engine.handle(now, event);
        while let Some(cmd) = self.engine.poll_command() {
            if keep(&cmd) {
                self.checker.command(&cmd)?;
            }
        }
        self.checker.settled(&self.engine, &self.pacing)
    }

    fn feed(&mut self, now: Instant, event: Event) -> Result<(), Violation> {
        self.feed_with(now, event, |_| true)
    }

    /// A session accepted and its primary connected.
    fn open(&mut self) {
        let client = "10.0.0.1:1".to_string();
        let conn = ConnId(1);
        self.feed(at(0), Event::Accepted { conn, client }).unwrap();
        self.feed(at(1), Event::Connected { sock: PRIMARY })
            .unwrap();
    }

    /// A read at 2 ms, or later if time has passed that.
    fn read(&mut self, sock: SockId, n: usize) -> Result<(), Violation> {
        let data = Bytes::from(vec![b'x'; n]);
        let now = self.checker.now.map_or(at(2), |t| t.max(at(2)));
        self.feed(now, Event::Read { sock, data })
    }
}

/// A checker that saw session 1 accepted and its primary connected (no engine).
fn opened() -> Checker {
    let mut c = Checker::new(&cfg());
    let client = "10.0.0.1:1".to_string();
    c.event(
        at(0),
        &Event::Accepted {
            conn: ConnId(1),
            client,
        },
    )
    .unwrap();
    c.command(&connect(PRIMARY)).unwrap();
    c.event(at(1), &Event::Connected { sock: PRIMARY }).unwrap();
    c
}

fn connect(sock: SockId) -> Command {
    Command::Connect {
        sock,
        upstream: UpstreamId(0),
    }
}

fn write(sock: SockId, n: usize) -> Command {
    Command::Write {
        sock,
        data: Bytes::from(vec![b'x'; n]),
    }
}

fn rule_of(result: Result<(), Violation>) -> Rule {
    result
        .expect_err("the checker let a violation through")
        .rule
}

#[test]
fn a_relay_session_run_through_to_its_end_breaks_no_rule() {
    let mut r = Run::new(cfg());
    r.open();
    r.read(CLIENT, 10).unwrap();
    r.feed(
        at(3),
        Event::Flushed {
            sock: PRIMARY,
            bytes: 10,
        },
    )
    .unwrap();
    r.read(PRIMARY, 5).unwrap();
    r.feed(
        at(4),
        Event::Flushed {
            sock: CLIENT,
            bytes: 5,
        },
    )
    .unwrap();
    r.feed(at(5), Event::ReadClosed { sock: CLIENT }).unwrap();
    r.feed(at(6), Event::ReadClosed { sock: PRIMARY }).unwrap();
    assert!(r.engine.is_idle());
    r.checker.finish().unwrap();
}

#[test]
fn a_command_naming_a_socket_never_had_is_unknown_socket() {
    let c = opened();
    let stranger = SockId::client(ConnId(9));
    assert_eq!(
        rule_of(c.check_command(&write(stranger, 1))),
        Rule::UnknownSocket
    );
    let orphan = SockId::backend(ConnId(9), BackendId::PRIMARY);
    assert_eq!(
        rule_of(c.check_command(&connect(orphan))),
        Rule::UnknownSocket
    );
}

#[test]
fn a_write_after_close_or_failure_is_closed_socket() {
    let mut c = opened();
    c.command(&Command::Close { sock: PRIMARY }).unwrap();
    assert_eq!(
        rule_of(c.check_command(&write(PRIMARY, 1))),
        Rule::ClosedSocket
    );
    let failed = Event::Failed {
        sock: CLIENT,
        reason: Failure::Reset,
    };
    c.event(at(2), &failed).unwrap();
    assert_eq!(
        rule_of(c.check_command(&write(CLIENT, 1))),
        Rule::ClosedSocket
    );
    assert_eq!(
        rule_of(c.check_command(&Command::Close { sock: CLIENT })),
        Rule::ClosedSocket
    );
}

#[test]
fn a_second_connect_or_one_to_a_client_is_connect() {
    let c = opened();
    assert_eq!(rule_of(c.check_command(&connect(PRIMARY))), Rule::Connect);
    assert_eq!(rule_of(c.check_command(&connect(CLIENT))), Rule::Connect);
}

#[test]
fn a_write_before_connect_or_of_nothing_is_write() {
    let mut c = opened();
    let second = SockId::backend(ConnId(1), BackendId(1));
    c.command(&connect(second)).unwrap();
    assert_eq!(rule_of(c.check_command(&write(second, 1))), Rule::Write);
    assert_eq!(rule_of(c.check_command(&write(PRIMARY, 0))), Rule::Write);
}

#[test]
fn a_write_after_fin_is_write_after_fin() {
    let mut c = opened();
    c.command(&Command::Shutdown { sock: PRIMARY }).unwrap();
    assert_eq!(
        rule_of(c.check_command(&write(PRIMARY, 1))),
        Rule::WriteAfterFin
    );
}

#[test]
fn a_fin_while_bytes_are_queued_is_fin_over_queue() {
    let mut c = opened();
    c.command(&write(PRIMARY, 3)).unwrap();
    c.event(
        at(2),
        &Event::Flushed {
            sock: PRIMARY,
            bytes: 2,
        },
    )
    .unwrap();
    let fin = Command::Shutdown { sock: PRIMARY };
    assert_eq!(rule_of(c.check_command(&fin)), Rule::FinOverQueue);
    c.event(
        at(3),
        &Event::Flushed {
            sock: PRIMARY,
            bytes: 1,
        },
    )
    .unwrap();
    c.command(&fin).unwrap();
}

#[test]
fn a_second_fin_is_fin_twice() {
    let mut c = opened();
    c.command(&Command::Shutdown { sock: PRIMARY }).unwrap();
    let fin = Command::Shutdown { sock: PRIMARY };
    assert_eq!(rule_of(c.check_command(&fin)), Rule::FinTwice);
}

#[test]
fn pause_twice_resume_unpaused_and_pause_after_eof_are_pause_pairing() {
    let mut c = opened();
    let resume = Command::ResumeRead { sock: CLIENT };
    assert_eq!(rule_of(c.check_command(&resume)), Rule::PausePairing);
    c.command(&Command::PauseRead { sock: CLIENT }).unwrap();
    let pause = Command::PauseRead { sock: CLIENT };
    assert_eq!(rule_of(c.check_command(&pause)), Rule::PausePairing);
    c.event(at(2), &Event::ReadClosed { sock: PRIMARY })
        .unwrap();
    let pause = Command::PauseRead { sock: PRIMARY };
    assert_eq!(rule_of(c.check_command(&pause)), Rule::PausePairing);
}

#[test]
fn accept_pause_pairing_and_resume_during_drain_are_accept_pairing() {
    let mut c = opened();
    assert_eq!(
        rule_of(c.check_command(&Command::ResumeAccept)),
        Rule::AcceptPairing
    );
    c.command(&Command::PauseAccept).unwrap();
    assert_eq!(
        rule_of(c.check_command(&Command::PauseAccept)),
        Rule::AcceptPairing
    );
    c.event(at(2), &Event::Drain).unwrap();
    assert_eq!(
        rule_of(c.check_command(&Command::ResumeAccept)),
        Rule::AcceptPairing
    );
}

#[test]
fn a_reader_left_unpaused_above_the_high_mark_is_water_marks() {
    let mut r = Run::new(cfg());
    r.open();
    // The engine pauses the client; a driver that lost the pause leaves it reading.
    let data = Bytes::from(vec![b'x'; 1001]);
    let event = Event::Read { sock: CLIENT, data };
    let lost = r.feed_with(at(2), event, |c| !matches!(c, Command::PauseRead { .. }));
    assert_eq!(rule_of(lost), Rule::WaterMarks);
}

#[test]
fn a_reader_resumed_before_the_low_mark_is_water_marks() {
    let mut r = Run::new(cfg());
    r.open();
    r.read(CLIENT, 1001).unwrap();
    assert!(r.checker.sock(CLIENT).unwrap().paused);
    // Above the low mark the engine keeps it paused; a resume there breaks the hysteresis.
    let flushed = Event::Flushed {
        sock: PRIMARY,
        bytes: 500,
    };
    r.checker.event(at(3), &flushed).unwrap();
    r.engine.handle(at(3), flushed);
    assert_eq!(r.engine.poll_command(), None);
    r.checker
        .command(&Command::ResumeRead { sock: CLIENT })
        .unwrap();
    assert_eq!(
        rule_of(r.checker.settled(&r.engine, &r.pacing)),
        Rule::WaterMarks
    );
}

#[test]
fn a_paused_reader_left_paused_at_the_low_mark_is_water_marks() {
    let mut r = Run::new(cfg());
    r.open();
    r.read(CLIENT, 1001).unwrap();
    let flushed = Event::Flushed {
        sock: PRIMARY,
        bytes: 1001,
    };
    let lost = r.feed_with(at(3), flushed, |c| !matches!(c, Command::ResumeRead { .. }));
    assert_eq!(rule_of(lost), Rule::WaterMarks);
}

#[test]
fn a_socket_holding_more_than_its_limit_is_limit() {
    let mut r = Run::new(cfg());
    r.open();
    r.pacing.max_read = 0;
    // No read may cross the high mark: the one that did is already too much.
    assert_eq!(rule_of(r.read(CLIENT, 1001)), Rule::Limit);
}

#[test]
fn a_write_the_engine_never_counted_is_accounting() {
    let mut r = Run::new(cfg());
    r.open();
    r.checker.command(&write(PRIMARY, 7)).unwrap();
    assert_eq!(rule_of(r.read(CLIENT, 1)), Rule::Accounting);
}

#[test]
fn a_socket_the_engine_dropped_without_close_is_accounting() {
    let mut r = Run::new(cfg());
    r.open();
    let failed = Event::Failed {
        sock: CLIENT,
        reason: Failure::Reset,
    };
    // The engine closes the primary too; a driver that lost that Close still holds it.
    let lost = r.feed_with(at(2), failed, |c| {
        !matches!(c, Command::Close { .. } | Command::Report(_))
    });
    assert_eq!(rule_of(lost), Rule::Accounting);
}

#[test]
fn a_timeout_with_no_deadline_or_before_it_is_timer() {
    let mut c = Checker::new(&cfg());
    assert_eq!(rule_of(c.event(at(0), &Event::Timeout)), Rule::Timer);
    let mut r = Run::new(cfg());
    r.open();
    let due = r.engine.poll_timeout().expect("the idle deadline");
    let early = Instant::from_nanos(due.as_nanos() - 1);
    assert_eq!(rule_of(r.feed(early, Event::Timeout)), Rule::Timer);
    let mut r = Run::new(cfg());
    r.open();
    r.feed(due, Event::Timeout).unwrap();
}

#[test]
fn time_going_backwards_is_timer() {
    let mut c = opened();
    let read = Event::ReadClosed { sock: CLIENT };
    assert_eq!(rule_of(c.event(at(0), &read)), Rule::Timer);
}

#[test]
fn a_report_while_open_twice_or_miscounted_is_report() {
    let mut r = Run::new(cfg());
    r.open();
    r.read(PRIMARY, 5).unwrap();
    assert_eq!(
        rule_of(r.checker.check_command(&r.engine_report())),
        Rule::Report
    );
    let failed = Event::Failed {
        sock: CLIENT,
        reason: Failure::Reset,
    };
    let mut seen = None;
    r.feed_with(at(3), failed, |c| match c {
        Command::Report(rep) => {
            seen = Some(rep.clone());
            false
        }
        _ => true,
    })
    .unwrap();
    let real = seen.expect("the session's report");
    let mut miscounted = real.clone();
    miscounted.backends[0].bytes_received += 1;
    let miscounted = Command::Report(miscounted);
    assert_eq!(rule_of(r.checker.check_command(&miscounted)), Rule::Report);
    let report = Command::Report(real);
    r.checker.command(&report).unwrap();
    assert_eq!(rule_of(r.checker.check_command(&report)), Rule::Report);
}

impl Run {
    /// A report for session 1 as if it had ended now.
    fn engine_report(&self) -> Command {
        Command::Report(Box::new(SessionReport {
            conn: ConnId(1),
            client: String::new(),
            started: at(0),
            backends: Vec::new(),
            interceptor_error: None,
        }))
    }
}

#[test]
fn a_report_with_reports_off_is_report() {
    let mut c = Checker::new(&Config::default());
    let client = "10.0.0.1:1".to_string();
    c.event(
        at(0),
        &Event::Accepted {
            conn: ConnId(1),
            client,
        },
    )
    .unwrap();
    c.command(&Command::Close { sock: CLIENT }).unwrap();
    let run = Run::new(cfg());
    assert_eq!(rule_of(c.check_command(&run.engine_report())), Rule::Report);
}

#[test]
fn drained_without_a_drain_or_twice_is_drain() {
    let mut c = opened();
    assert_eq!(rule_of(c.check_command(&Command::Drained)), Rule::Drain);
    c.event(at(2), &Event::Drain).unwrap();
    c.command(&Command::Drained).unwrap();
    assert_eq!(rule_of(c.check_command(&Command::Drained)), Rule::Drain);
}

#[test]
fn drained_with_a_session_left_is_drain() {
    let mut r = Run::new(cfg());
    r.open();
    r.feed(at(2), Event::Drain).unwrap();
    r.checker.command(&Command::Drained).unwrap();
    assert_eq!(rule_of(r.read(CLIENT, 1)), Rule::Drain);
}

#[test]
fn a_session_cut_drain_timeout_before_the_drain_deadline_is_drain() {
    let cfg = Config {
        drain_timeout: std::time::Duration::from_millis(100),
        ..cfg()
    };
    // The engine's own cut, at the deadline: no violation, and its report to replay below.
    let mut real = Run::new(cfg.clone());
    real.open();
    real.feed(at(2), Event::Drain).unwrap();
    let mut cut = None;
    real.feed_with(at(102), Event::Timeout, |c| {
        if let Command::Report(r) = c {
            cut = Some(r.clone());
        }
        true
    })
    .unwrap();
    let cut = cut.expect("the drain deadline cut the session");
    assert_eq!(
        cut.backends[0].outcome,
        crate::report::Outcome::DrainTimeout
    );
    // The same report shown at 50 ms, with or without a second drain before it.
    let shown_at_50 = |second_drain: bool| {
        let mut r = Run::new(cfg.clone());
        r.open();
        r.feed(at(2), Event::Drain).unwrap();
        let event = if second_drain {
            Event::Drain
        } else {
            Event::EffectDone {
                id: EffectId(9),
                result: Ok(Bytes::new()),
            }
        };
        r.checker.event(at(50), &event).unwrap();
        r.checker.command(&Command::Close { sock: CLIENT }).unwrap();
        r.checker
            .command(&Command::Close { sock: PRIMARY })
            .unwrap();
        r.checker.check_command(&Command::Report(cut.clone()))
    };
    assert_eq!(rule_of(shown_at_50(false)), Rule::Drain);
    assert!(
        shown_at_50(true).is_ok(),
        "a second drain brings the deadline to now"
    );
}

#[test]
fn an_effect_id_twice_is_effect() {
    let mut c = opened();
    let effect = Command::Effect {
        conn: ConnId(1),
        id: EffectId(1),
        request: Box::new(EffectRequest {
            kind: "k".into(),
            payload: Bytes::new(),
        }),
    };
    c.command(&effect).unwrap();
    let done = Event::EffectDone {
        id: EffectId(1),
        result: Ok(Bytes::new()),
    };
    c.event(at(2), &done).unwrap();
    assert_eq!(rule_of(c.check_command(&effect)), Rule::Effect);
}

#[test]
fn a_socket_left_open_an_unreported_session_or_an_unfinished_drain_is_leak() {
    let mut r = Run::new(cfg());
    r.open();
    assert_eq!(rule_of(r.checker.finish()), Rule::Leak);
    // Every socket closed, but the report lost.
    let failed = Event::Failed {
        sock: CLIENT,
        reason: Failure::Reset,
    };
    r.feed_with(at(2), failed, |c| !matches!(c, Command::Report(_)))
        .unwrap();
    assert_eq!(rule_of(r.checker.finish()), Rule::Leak);
    let mut c = Checker::new(&cfg());
    c.event(at(0), &Event::Drain).unwrap();
    assert_eq!(rule_of(c.finish()), Rule::Leak);
}

#[test]
fn a_refused_accept_need_not_be_reported() {
    let mut r = Run::new(Config {
        max_connections: 1,
        ..cfg()
    });
    r.open();
    let client = "10.0.0.1:2".to_string();
    r.feed(
        at(2),
        Event::Accepted {
            conn: ConnId(2),
            client,
        },
    )
    .unwrap();
    assert_eq!(
        r.checker.sock(SockId::client(ConnId(2))).unwrap().phase,
        Phase::Closed
    );
    r.feed(
        at(3),
        Event::Failed {
            sock: CLIENT,
            reason: Failure::Reset,
        },
    )
    .unwrap();
    r.checker.finish().unwrap();
}

#[test]
fn a_splice_into_a_socket_with_bytes_queued_breaks_the_splice_rule() {
    let mut r = Run::new(cfg());
    r.open();
    r.read(CLIENT, 10).unwrap(); // queued to the primary, not flushed
    let spliced = Event::Spliced {
        sock: CLIENT,
        bytes: 5,
    };
    assert_eq!(rule_of(r.feed(at(3), spliced)), Rule::Splice);
}

#[test]
fn a_splice_from_a_socket_at_eof_breaks_the_splice_rule() {
    let mut r = Run::new(cfg());
    r.open();
    r.feed(at(2), Event::ReadClosed { sock: PRIMARY }).unwrap();
    let spliced = Event::Spliced {
        sock: PRIMARY,
        bytes: 5,
    };
    assert_eq!(rule_of(r.feed(at(3), spliced)), Rule::Splice);
}
