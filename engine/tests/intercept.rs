//! The programmable layer: routing, answering, holding, effects, bypass, flow control on every
//! route, and containment of a misbehaving interceptor.

mod support;

use fanout_engine::{
    BackendId, Bytes, Command, Config, Conn, EffectError, EffectId, EffectRequest, EffectResult,
    End, Failure, Finish, Interceptor, Open, Outcome, UpstreamId,
};
use std::time::Duration;
use support::*;

/// What a hook was called with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Connect,
    Connected(BackendId),
    ConnectFailed(BackendId, Failure),
    Data(Bytes),
    ClientEof,
    Response(BackendId, Bytes),
    Finish(BackendId, End),
    Effect(EffectId, EffectResult),
    End(Vec<Outcome>, Option<String>),
}

type Program = Box<dyn FnMut(&Ev, &mut Conn<'_>) -> Finish>;

/// An interceptor made of one closure, which sees every hook call; it logs them all.
struct Script {
    log: Vec<Ev>,
    f: Program,
}

fn script(f: impl FnMut(&Ev, &mut Conn<'_>) -> Finish + 'static) -> Script {
    Script {
        log: Vec::new(),
        f: Box::new(f),
    }
}

impl Script {
    fn run(&mut self, ev: Ev, conn: &mut Conn<'_>) -> Finish {
        self.log.push(ev.clone());
        (self.f)(&ev, conn)
    }
}

impl Interceptor for Script {
    type State = ();

    fn on_connect(&mut self, conn: &mut Conn<'_>) {
        self.run(Ev::Connect, conn);
    }
    fn on_backend_connected(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId) {
        self.run(Ev::Connected(b), conn);
    }
    fn on_connect_failed(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId, r: Failure) {
        self.run(Ev::ConnectFailed(b, r), conn);
    }
    fn on_data(&mut self, _: &mut (), conn: &mut Conn<'_>, data: Bytes) {
        self.run(Ev::Data(data), conn);
    }
    fn on_client_eof(&mut self, _: &mut (), conn: &mut Conn<'_>) {
        self.run(Ev::ClientEof, conn);
    }
    fn on_response(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId, data: Bytes) {
        self.run(Ev::Response(b, data), conn);
    }
    fn on_finish(&mut self, _: &mut (), conn: &mut Conn<'_>, b: BackendId, end: End) -> Finish {
        self.run(Ev::Finish(b, end), conn)
    }
    fn on_effect(&mut self, _: &mut (), conn: &mut Conn<'_>, id: EffectId, r: EffectResult) {
        self.run(Ev::Effect(id, r), conn);
    }
    fn on_end(&mut self, _: (), report: &fanout_engine::SessionReport) {
        let outcomes = report.backends.iter().map(|b| b.outcome).collect();
        self.log
            .push(Ev::End(outcomes, report.interceptor_error.clone()));
    }
}

/// A harness whose interceptor runs `f` on every hook (opening nothing unless `f` does).
fn hooks(mut f: impl FnMut(&Ev, &mut Conn<'_>) + 'static) -> Harness<Script> {
    Harness::with(
        cfg(),
        script(move |ev, c| {
            f(ev, c);
            Finish::Default
        }),
    )
}

/// A harness whose interceptor opens upstream 0 as the primary at connect and runs `f` on every
/// hook after.
fn primary_then(mut f: impl FnMut(&Ev, &mut Conn<'_>) + 'static) -> Harness<Script> {
    hooks(move |ev, c| {
        if *ev == Ev::Connect {
            c.open(UP0, Open::primary()).unwrap();
        } else {
            f(ev, c);
        }
    })
}

fn cfg() -> Config {
    Config {
        reports: true,
        ..Config::default()
    }
}

const UP0: UpstreamId = UpstreamId(0);
const UP1: UpstreamId = UpstreamId(1);
const B0: BackendId = BackendId(0);
const B1: BackendId = BackendId(1);

fn bytes(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}

fn connects(cmds: &[Command]) -> Vec<(fanout_engine::SockId, UpstreamId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Connect { sock, upstream } => Some((*sock, *upstream)),
            _ => None,
        })
        .collect()
}

fn log(h: &Harness<Script>) -> &[Ev] {
    &h.engine.interceptor().log
}

#[test]
fn on_data_rewrites_answers_drops_and_closes() {
    let mut h = primary_then(|ev, c| match ev {
        Ev::Data(d) => match &d[..] {
            b"ping" => c.answer(bytes(b"pong")),
            b"secret" => {}
            b"bye" => c.close(),
            _ => c.forward(Bytes::from(d.to_ascii_uppercase())),
        },
        Ev::Response(_, d) => {
            c.answer(bytes(b"["));
            c.answer(d.clone());
            c.answer(bytes(b"]"));
        }
        _ => {}
    });
    h.open(1);
    h.read(client(1), b"hello");
    h.read(client(1), b"ping");
    h.read(client(1), b"secret");
    h.read(backend(1, P), b"ok");
    assert_eq!(h.sent(backend(1, P)), b"HELLO");
    assert_eq!(h.sent(client(1)), b"pong[ok]");
    h.read(client(1), b"bye");
    assert!(h.is_closed(client(1)) && h.is_closed(backend(1, P)));
    assert_eq!(
        log(&h).last(),
        Some(&Ev::End(vec![Outcome::ClosedEarly], None))
    );
    h.assert_quiescent();
}

#[test]
fn a_backend_opened_mid_session_gets_the_bytes_that_chose_it() {
    // em-proxy's http_proxy: the first request says where it goes.
    let mut h = hooks(|ev, c| match ev {
        Ev::Data(d) => {
            if c.primary().is_none() {
                let up = if d.starts_with(b"GET /b") { UP1 } else { UP0 };
                c.open(up, Open::primary()).unwrap();
            }
            c.forward(d.clone());
        }
        Ev::Response(_, d) => c.answer(d.clone()),
        _ => {}
    });
    let cmds = h.accept(1);
    assert!(connects(&cmds).is_empty(), "nothing opened before a byte");
    let cmds = h.read(client(1), b"GET /b HTTP/1.1\r\n");
    assert_eq!(connects(&cmds), vec![(backend(1, B0), UP1)]);
    h.connected(backend(1, B0));
    h.read(client(1), b"\r\n");
    assert_eq!(h.sent(backend(1, B0)), b"GET /b HTTP/1.1\r\n\r\n");
    h.read(backend(1, B0), b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(h.sent(client(1)), b"HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn send_reaches_only_the_named_backend_and_only_the_primary_is_heard() {
    // em-proxy's selective_forward and duplex: a rewrite goes to prod only; test answers are
    // seen by on_response but never reach the client.
    let mut h = hooks(|ev, c| match ev {
        Ev::Connect => {
            c.open(UP0, Open::primary()).unwrap();
            c.open(UP1, Open::secondary()).unwrap();
        }
        Ev::Data(d) => {
            let ua = String::from_utf8_lossy(d).replace("curl", "fanout");
            c.send(B0, Bytes::from(ua));
        }
        Ev::Response(b, d) if *b == B0 => c.answer(d.clone()),
        _ => {}
    });
    h.open(1);
    h.read(client(1), b"User-Agent: curl\r\n");
    assert_eq!(h.sent(backend(1, B0)), b"User-Agent: fanout\r\n");
    assert_eq!(h.sent(backend(1, B1)), b"");
    h.read(backend(1, B1), b"from test");
    h.read(backend(1, B0), b"from prod");
    assert_eq!(h.sent(client(1)), b"from prod");
    assert!(log(&h).contains(&Ev::Response(B1, bytes(b"from test"))));
}

#[test]
fn a_connect_failure_is_told_with_its_reason_and_unsent_bytes_can_go_elsewhere() {
    let mut h = primary_then(|ev, c| match ev {
        Ev::ConnectFailed(_, _) => {
            let next = c.open(UP1, Open::primary()).unwrap();
            for b in c.unsent() {
                c.send(next, b);
            }
        }
        Ev::Data(d) => c.forward(d.clone()),
        _ => {}
    });
    h.accept(1);
    h.read(client(1), b"request");
    let cmds = h.handle(fanout_engine::Event::ConnectFailed {
        sock: backend(1, B0),
        reason: Failure::Refused,
    });
    assert_eq!(connects(&cmds), vec![(backend(1, B1), UP1)]);
    assert!(!h.is_closed(client(1)), "a new primary keeps the client");
    h.connected(backend(1, B1));
    assert_eq!(h.sent(backend(1, B1)), b"request");
    assert!(log(&h).contains(&Ev::ConnectFailed(B0, Failure::Refused)));
}

#[test]
fn a_primary_that_cannot_connect_with_no_replacement_closes_the_client() {
    let mut h = Harness::with(
        cfg(),
        script(|ev, c| {
            if *ev == Ev::Connect {
                c.open(UP0, Open::primary()).unwrap();
            }
            Finish::Default
        }),
    );
    h.accept(1);
    h.advance(Duration::from_secs(6));
    assert!(h.is_closed(client(1)));
    assert!(log(&h).contains(&Ev::ConnectFailed(B0, Failure::TimedOut)));
    assert_eq!(h.reports[0].backends[0].outcome, Outcome::ConnectTimeout);
    h.assert_quiescent();
}

fn finishing(verdict: Finish) -> Harness<Script> {
    let mut h = Harness::with(
        cfg(),
        script(move |ev, c| match ev {
            Ev::Connect => {
                c.open(UP0, Open::primary()).unwrap();
                Finish::Default
            }
            Ev::Finish(..) => verdict,
            Ev::Response(_, d) => {
                c.answer(d.clone());
                Finish::Default
            }
            _ => Finish::Default,
        }),
    );
    h.open(1);
    h.read(backend(1, P), b"answer");
    h.eof(backend(1, P));
    h
}

#[test]
fn on_finish_decides_what_the_primarys_eof_does_to_the_client() {
    let mut h = finishing(Finish::Default);
    assert!(!h.is_shut(client(1)), "FIN waits for the queue");
    h.flush_all();
    assert!(h.is_shut(client(1)) && !h.is_closed(client(1)));

    let mut h = finishing(Finish::Keep);
    h.flush_all();
    assert!(!h.is_shut(client(1)), ":keep leaves the client open");

    let mut h = finishing(Finish::Close);
    h.flush_all();
    assert!(h.is_shut(client(1)) && h.is_closed(client(1)));
    assert_eq!(h.sent(client(1)), b"answer", "close after writing");
    assert!(log(&h).contains(&Ev::Finish(B0, End::Eof)));
}

#[test]
fn answers_to_a_client_that_does_not_read_pause_the_client() {
    let cfg = Config {
        high_water: 1000,
        low_water: 100,
        ..cfg()
    };
    let mut h = Harness::with(
        cfg,
        script(|ev, c| {
            if let Ev::Data(d) = ev {
                c.answer(Bytes::from(d.repeat(4)));
            }
            Finish::Default
        }),
    );
    h.accept(1);
    for _ in 0..5 {
        h.read(client(1), &[b'x'; 100]);
    }
    assert!(h.is_paused(client(1)), "its own answers pace it");
    h.flush_some(client(1), 1000);
    assert!(
        h.is_paused(client(1)),
        "hysteresis: still above the low mark"
    );
    h.flush(client(1));
    assert!(!h.is_paused(client(1)));
}

#[test]
fn rerouted_bytes_pace_their_source() {
    // A backend's answers sent back to the same backend: a loop the water marks must bound.
    let mut h = Harness::with(
        Config {
            high_water: 1000,
            low_water: 100,
            ..Config::default()
        },
        script(|ev, c| {
            match ev {
                Ev::Connect => {
                    c.open(UP0, Open::primary()).unwrap();
                }
                Ev::Response(_, d) => c.send(B0, d.clone()),
                _ => {}
            }
            Finish::Default
        }),
    );
    h.open(1);
    for _ in 0..11 {
        h.read(backend(1, P), &[b'y'; 100]);
    }
    assert!(h.is_paused(backend(1, P)));
    h.flush(backend(1, P));
    assert!(!h.is_paused(backend(1, P)));
}

#[test]
fn output_after_an_effect_waits_in_order_behind_it() {
    // A pipelining client: "slow" needs an effect, "fast" is answered at once; the answers
    // must come back in request order.
    let mut h = hooks(|ev, c| match ev {
        Ev::Data(d) if &d[..] == b"slow" => {
            c.effect(EffectRequest::new("lookup", d.clone())).unwrap();
        }
        Ev::Data(d) => c.answer(Bytes::from([&d[..], b"!"].concat())),
        Ev::Effect(_, Ok(r)) => c.answer(r.clone()),
        _ => {}
    });
    h.accept(1);
    h.read(client(1), b"first");
    h.read(client(1), b"slow");
    h.read(client(1), b"fast");
    assert_eq!(h.sent(client(1)), b"first!");
    assert_eq!(h.effects.len(), 1);
    assert_eq!(h.effects[0].2.kind, "lookup");
    let id = h.effects[0].1;
    h.effect_done(id, Ok(bytes(b"SLOW")));
    assert_eq!(h.sent(client(1)), b"first!SLOWfast!");
}

#[test]
fn effects_completing_out_of_order_still_answer_in_request_order() {
    let mut h = hooks(|ev, c| match ev {
        Ev::Data(d) => {
            c.effect(EffectRequest::new("echo", d.clone())).unwrap();
        }
        Ev::Effect(_, Ok(r)) => c.answer(r.clone()),
        _ => {}
    });
    h.accept(1);
    h.read(client(1), b"a");
    h.read(client(1), b"b");
    let (a, b) = (h.effects[0].1, h.effects[1].1);
    h.effect_done(b, Ok(bytes(b"B")));
    assert_eq!(h.sent(client(1)), b"", "b waits for a");
    h.effect_done(a, Ok(bytes(b"A")));
    assert_eq!(h.sent(client(1)), b"AB");
}

#[test]
fn an_effect_times_out_and_a_late_result_is_ignored() {
    let mut h = hooks(|ev, c| match ev {
        Ev::Data(d) => {
            c.effect(EffectRequest::new("slow", d.clone())).unwrap();
        }
        Ev::Effect(_, Err(EffectError::TimedOut)) => c.answer(bytes(b"timeout")),
        Ev::Effect(_, Ok(r)) => c.answer(r.clone()),
        _ => {}
    });
    h.accept(1);
    h.read(client(1), b"x");
    let id = h.effects[0].1;
    h.advance(h.cfg().effect_timeout);
    assert_eq!(h.sent(client(1)), b"timeout");
    h.effect_done(id, Ok(bytes(b"late")));
    assert_eq!(h.sent(client(1)), b"timeout");
    assert_eq!(
        log(&h)
            .iter()
            .filter(|e| matches!(e, Ev::Effect(..)))
            .count(),
        1
    );
}

#[test]
fn no_fin_leaves_while_an_effect_is_pending() {
    // SMTP spam filter: the message is held, the client sends EOF, the verdict arrives after;
    // the backend must get the message before its FIN.
    let mut h = primary_then(|ev, c| match ev {
        Ev::Data(d) => {
            c.hold(d.clone());
            c.effect(EffectRequest::new("verdict", d.clone())).unwrap();
        }
        Ev::Effect(_, Ok(r)) if &r[..] == b"ham" => {
            for b in c.take_held() {
                c.forward(b);
            }
        }
        _ => {}
    });
    h.open(1);
    h.read(client(1), b"message");
    h.eof(client(1));
    h.flush_all();
    assert!(
        !h.is_shut(backend(1, P)),
        "no FIN while the verdict is pending"
    );
    let id = h.effects[0].1;
    h.effect_done(id, Ok(bytes(b"ham")));
    assert_eq!(h.sent(backend(1, P)), b"message");
    h.flush_all();
    assert!(h.is_shut(backend(1, P)));
}

#[test]
fn bypass_routes_skip_the_hooks() {
    let mut h = Harness::with(
        cfg(),
        script(|ev, c| {
            if *ev == Ev::Connect {
                c.open(UP0, Open::primary().relay_client().relay_server())
                    .unwrap();
            }
            Finish::Default
        }),
    );
    h.open(1);
    h.read(client(1), b"up");
    h.read(backend(1, P), b"down");
    assert_eq!(h.sent(backend(1, P)), b"up");
    assert_eq!(h.sent(client(1)), b"down");
    assert!(!log(&h)
        .iter()
        .any(|e| matches!(e, Ev::Data(_) | Ev::Response(..))));
}

#[test]
fn a_panicking_hook_ends_its_own_session_only() {
    let mut h = primary_then(|ev, c| match ev {
        Ev::Data(d) if &d[..] == b"boom" => panic!("hook exploded"),
        Ev::Data(d) => c.forward(d.clone()),
        _ => {}
    });
    h.open(1);
    h.open(2);
    h.read(client(1), b"boom");
    assert!(h.is_closed(client(1)) && h.is_closed(backend(1, P)));
    let report = &h.reports[0];
    assert_eq!(report.backends[0].outcome, Outcome::InterceptorError);
    assert_eq!(
        report.interceptor_error.as_deref(),
        Some("a hook panicked: hook exploded")
    );
    h.read(client(2), b"fine");
    assert_eq!(h.sent(backend(2, P)), b"fine", "the other session goes on");
}

#[test]
fn misuses_end_the_session_with_their_reason() {
    type Act = Box<dyn Fn(&mut Conn<'_>)>;
    let cases: Vec<(&str, Act)> = vec![
        (
            "named backend 7 it never opened",
            Box::new(|c| c.send(BackendId(7), bytes(b"x"))),
        ),
        (
            "opened more backends than max-backends",
            Box::new(|c| {
                for _ in 0..3 {
                    let _ = c.open(UP0, Open::secondary());
                }
            }),
        ),
        (
            "opened a second primary while one is open",
            Box::new(|c| {
                let _ = c.open(UP0, Open::primary());
                let _ = c.open(UP1, Open::primary());
            }),
        ),
        (
            "held more bytes than max-held",
            Box::new(|c| c.hold(Bytes::from(vec![0; 11]))),
        ),
        (
            "had more effects pending than max-effects",
            Box::new(|c| {
                for _ in 0..3 {
                    let _ = c.effect(EffectRequest::new("x", bytes(b"")));
                }
            }),
        ),
    ];
    for (why, act) in cases {
        let cfg = Config {
            max_backends: 2,
            max_held: 10,
            max_effects: 2,
            ..cfg()
        };
        let mut h = Harness::with(
            cfg,
            script(move |ev, c| {
                if let Ev::Data(_) = ev {
                    act(c);
                }
                Finish::Default
            }),
        );
        h.accept(1);
        h.read(client(1), b"go");
        assert!(h.is_closed(client(1)), "{why}");
        assert_eq!(h.reports[0].interceptor_error.as_deref(), Some(why));
        h.assert_quiescent();
    }
}

#[test]
fn writing_to_the_client_after_its_fin_is_a_misuse_not_a_write_after_shutdown() {
    let mut h = primary_then(|ev, c| {
        if let Ev::Data(_) = ev {
            c.answer(bytes(b"late"))
        }
    });
    h.open(1);
    h.eof(backend(1, P));
    h.flush_all();
    assert!(h.is_shut(client(1)));
    // The harness would panic on a write after shutdown; the engine refuses it instead.
    h.read(client(1), b"more");
    assert!(h.is_closed(client(1)));
    assert_eq!(
        h.reports[0].interceptor_error.as_deref(),
        Some("wrote to a socket after asking for its FIN")
    );
}

#[test]
fn hooks_are_called_in_contract_order() {
    let mut h = primary_then(|ev, c| match ev {
        Ev::Data(d) => c.forward(d.clone()),
        Ev::Response(_, d) => c.answer(d.clone()),
        _ => {}
    });
    h.accept(1);
    h.connected(backend(1, P));
    h.exchange(1, b"q", b"a");
    assert_eq!(
        log(&h),
        &[
            Ev::Connect,
            Ev::Connected(B0),
            Ev::Data(bytes(b"q")),
            Ev::Response(B0, bytes(b"a")),
            Ev::ClientEof,
            Ev::Finish(B0, End::Eof),
            Ev::End(vec![Outcome::Ok], None),
        ]
    );
    h.assert_quiescent();
}

#[test]
fn a_backend_opened_after_the_clients_eof_gets_its_fin_after_its_bytes() {
    let mut h = hooks(|ev, c| {
        if *ev == Ev::ClientEof {
            let b = c.open(UP0, Open::primary()).unwrap();
            c.send(b, bytes(b"late request"));
        }
    });
    h.accept(1);
    h.eof(client(1));
    h.connected(backend(1, B0));
    assert_eq!(h.sent(backend(1, B0)), b"late request");
    assert!(
        !h.is_shut(backend(1, B0)),
        "the FIN waits for the bytes to flush"
    );
    h.flush_all();
    assert!(h.is_shut(backend(1, B0)));
}

#[test]
fn answers_from_effects_pace_the_source_that_asked_for_them() {
    let cfg = Config {
        high_water: 1000,
        low_water: 100,
        ..cfg()
    };
    let mut h = Harness::with(
        cfg,
        script(|ev, c| {
            match ev {
                Ev::Data(d) => {
                    c.effect(EffectRequest::new("ask", d.clone())).unwrap();
                }
                Ev::Effect(_, Ok(r)) => c.answer(r.clone()),
                _ => {}
            }
            Finish::Default
        }),
    );
    h.accept(1);
    for _ in 0..5 {
        h.read(client(1), b"ask");
        let id = h.effects[0].1;
        h.effect_done(id, Ok(Bytes::from(vec![b'a'; 300])));
    }
    assert!(h.is_paused(client(1)), "its effects' answers pace it");
    h.flush(client(1));
    assert!(!h.is_paused(client(1)));
}

#[test]
fn close_client_lets_every_backend_finish_with_a_fin() {
    let mut h = primary_then(|ev, c| {
        if let Ev::Data(d) = ev {
            c.forward(d.clone());
            c.answer(bytes(b"bye"));
            c.close_client();
        }
    });
    h.open(1);
    h.read(client(1), b"last words");
    h.flush_all();
    assert!(h.is_closed(client(1)) && h.is_shut(client(1)));
    assert_eq!(h.sent(client(1)), b"bye");
    assert!(
        h.is_shut(backend(1, P)),
        "the primary gets its FIN after its bytes"
    );
    assert_eq!(h.sent(backend(1, P)), b"last words");
    h.eof(backend(1, P));
    h.flush_all();
    assert_eq!(h.reports[0].backends[0].outcome, Outcome::Ok);
    h.assert_quiescent();
}

#[test]
fn a_backend_opened_after_the_client_closed_gets_its_fin_after_its_bytes() {
    // A failover after close_client: the replacement gets the bytes the first never did, then
    // its FIN, although the client is long gone.
    let mut h = primary_then(|ev, c| match ev {
        Ev::Data(d) => {
            c.forward(d.clone());
            c.close_client();
        }
        Ev::ConnectFailed(..) => {
            let next = c.open(UP1, Open::primary()).unwrap();
            for b in c.unsent() {
                c.send(next, b);
            }
        }
        _ => {}
    });
    h.accept(1);
    h.read(client(1), b"request");
    assert!(h.is_closed(client(1)));
    h.handle(fanout_engine::Event::ConnectFailed {
        sock: backend(1, B0),
        reason: Failure::Refused,
    });
    h.connected(backend(1, B1));
    assert_eq!(h.sent(backend(1, B1)), b"request");
    h.flush_all();
    assert!(h.is_shut(backend(1, B1)));
    h.eof(backend(1, B1));
    h.assert_quiescent();
}
