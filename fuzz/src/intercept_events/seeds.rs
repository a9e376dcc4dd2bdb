//! Hand-made seed inputs of `intercept_events`, each a schedule that reaches one behaviour of the
//! programmable layer. They are committed as `corpus/intercept_events/seed-NAME` (written by
//! `cargo run -p fanout-fuzz --example intercept_seeds -- fuzz/corpus/intercept_events`); the
//! corpus test keeps them there, and the first three are what catches the three mutants of the
//! programmable layer (`tests/mutants.rs`).

use super::program::{Action, Flags};
use super::{Limits, Op, Scenario};
use crate::driver::Stale;
use crate::engine_events::Reason;

/// Roomy limits: 4 connections, 4 KiB / 1 KiB water marks, 8 KiB budget and held bytes, 4
/// backends and 4 effects a session, 1 s timeouts (idle 10 s).
fn limits() -> Limits {
    Limits {
        max_connections: 3,
        high_water: 4095,
        low_water: 1024,
        secondary_budget: 8191,
        max_backends: 3,
        max_held: 8191,
        max_effects: 3,
        effect_ms: 999,
        connect_ms: 999,
        idle_ms: 9999,
        deadline_ms: 999,
        drain_ms: 1000,
    }
}

/// A client chunk of `len` bytes (1..=4096) to the `conn`-th live session.
fn chunk(conn: u8, action: Action, arg: u8, len: u16) -> Op {
    Op::Chunk {
        conn,
        action,
        arg,
        len: len - 1,
    }
}

fn respond(conn: u8, backend: u8, len: u16) -> Op {
    Op::Respond {
        conn,
        backend,
        len: len - 1,
    }
}

fn connect(conn: u8, backend: u8) -> Op {
    Op::Connect { conn, backend }
}

fn eof(conn: u8, side: u8) -> Op {
    Op::Eof { conn, side }
}

fn ok(pick: u8, len: u16) -> Op {
    Op::EffectOk { pick, len }
}

/// `Send` argument: name `name`, opened as a primary or a secondary.
fn to(name: u8, primary: bool) -> u8 {
    name | if primary { 0x80 } else { 0 }
}

const EAGER: Flags = Flags {
    eager: true,
    failover: false,
};
const LAZY: Flags = Flags {
    eager: false,
    failover: false,
};

/// Every seed, by name.
pub fn seeds() -> Vec<(&'static str, Scenario)> {
    use Action::*;
    vec![
        (
            // An answer issued while an effect is pending must wait behind the effect's own.
            "effect-before-answer",
            Scenario {
                limits: limits(),
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Effect, 0, 15),
                    chunk(0, Answer, 0, 7),
                    Op::FlushAll,
                    ok(0, 5),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // A client that never reads its answers is paused by them (256-byte high mark).
            "client-stops-reading",
            Scenario {
                limits: Limits {
                    high_water: 255,
                    low_water: 16,
                    ..limits()
                },
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Answer, 0, 300),
                    chunk(0, Answer, 0, 300),
                    chunk(0, Answer, 0, 300),
                    Op::Flush {
                        conn: 0,
                        side: 0,
                        len: 100,
                    },
                    chunk(0, Answer, 0, 300),
                    Op::FlushAll,
                    chunk(0, Answer, 0, 300),
                ],
            },
        ),
        (
            // The client's EOF while an effect is pending: no FIN before the effect's output.
            "eof-while-effect-pending",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    connect(0, 0),
                    chunk(0, Forward, 0, 10),
                    Op::FlushAll,
                    chunk(0, Effect, 0, 10),
                    eof(0, 0),
                    Op::FlushAll,
                    ok(0, 12),
                    Op::FlushAll,
                    respond(0, 0, 40),
                    eof(0, 1),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // Effects completing out of order: answers still in request order.
            "effects-out-of-order",
            Scenario {
                limits: limits(),
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Effect, 0, 4),
                    chunk(0, Effect, 0, 5),
                    chunk(0, Answer, 0, 6),
                    chunk(0, Effect, 0, 7),
                    ok(1, 30),
                    Op::FlushAll,
                    Op::EffectErr {
                        pick: 1,
                        unavailable: true,
                    },
                    ok(0, 20),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // An effect that times out is answered "<timed out>"; its late result is ignored.
            "effect-timeout-late-result",
            Scenario {
                limits: limits(),
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Effect, 0, 9),
                    chunk(0, Answer, 0, 9),
                    Op::AdvanceToDeadline,
                    Op::FlushAll,
                    ok(0, 10),
                    Op::EffectAgain { pick: 0 },
                    chunk(0, Effect, 0, 9),
                    Op::EffectErr {
                        pick: 0,
                        unavailable: false,
                    },
                    Op::EffectAgain { pick: 1 },
                ],
            },
        ),
        (
            // Backends opened by the first chunk naming them, mid-session: a primary whose
            // responses are rewritten, then a secondary; forward reaches both.
            "lazy-routing",
            Scenario {
                limits: limits(),
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Send, to(0, true), 20),
                    connect(0, 0),
                    respond(0, 0, 30),
                    chunk(0, Send, to(1, false), 25),
                    chunk(0, Forward, 0, 40),
                    connect(0, 1),
                    respond(0, 1, 50),
                    Op::FlushAll,
                    eof(0, 0),
                    Op::FlushAll,
                    respond(0, 0, 10),
                    eof(0, 1),
                    eof(0, 2),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // Hold, then release behind a pending verdict (an SMTP filter's shape).
            "hold-release-behind-effect",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    chunk(0, Hold, 0, 100),
                    chunk(0, Hold, 0, 200),
                    chunk(0, Effect, 0, 8),
                    chunk(0, Release, 0, 2),
                    connect(0, 0),
                    ok(0, 3),
                    Op::FlushAll,
                    respond(0, 0, 5),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // Every misuse, one session each: too many backends, a second primary, an unknown
            // backend, too much held, too many effects; other sessions go on.
            "misuses",
            Scenario {
                limits: Limits {
                    max_backends: 1,
                    max_held: 299,
                    max_effects: 0,
                    ..limits()
                },
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    chunk(0, Send, to(0, true), 10),
                    chunk(0, Send, to(1, false), 10),
                    chunk(0, Send, to(2, false), 10),
                    Op::Accept,
                    chunk(0, Send, to(0, true), 10),
                    chunk(0, Send, to(1, true), 10),
                    Op::Accept,
                    chunk(0, Shutdown, 3, 10),
                    Op::Accept,
                    chunk(0, Hold, 0, 200),
                    chunk(0, Hold, 0, 200),
                    Op::Accept,
                    chunk(0, Effect, 0, 10),
                    chunk(0, Effect, 0, 10),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // Answering the client after its FIN is a misuse, not a write after shutdown.
            "answer-after-fin",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    connect(0, 0),
                    respond(0, 0, 10),
                    eof(0, 1),
                    Op::FlushAll,
                    chunk(0, Answer, 0, 10),
                ],
            },
        ),
        (
            // A panicking hook ends its session only; close and close_client end others.
            "panic-close-close-client",
            Scenario {
                limits: limits(),
                flags: LAZY,
                ops: vec![
                    Op::Accept,
                    Op::Accept,
                    Op::Accept,
                    chunk(1, Send, to(0, true), 5),
                    connect(1, 0),
                    chunk(0, Panic, 0, 5),
                    chunk(0, Forward, 0, 5),
                    chunk(1, Answer, 0, 5),
                    chunk(1, CloseClient, 0, 5),
                    chunk(0, Close, 0, 5),
                    Op::FlushAll,
                    Op::Stale {
                        pick: 0,
                        kind: Stale::Read,
                    },
                ],
            },
        ),
        (
            // A refused primary is replaced, and the new one gets what the first never did.
            "failover",
            Scenario {
                limits: limits(),
                flags: Flags {
                    failover: true,
                    ..EAGER
                },
                ops: vec![
                    Op::Accept,
                    chunk(0, Forward, 0, 30),
                    chunk(0, Send, to(1, false), 20),
                    Op::ConnectFail {
                        conn: 0,
                        backend: 0,
                        reason: Reason::Refused,
                    },
                    connect(0, 2),
                    respond(0, 2, 10),
                    Op::AdvanceToDeadline,
                    connect(0, 3),
                    Op::FlushAll,
                ],
            },
        ),
        (
            // A secondary past its budget is detached; the primary goes on.
            "secondary-over-budget",
            Scenario {
                limits: Limits {
                    secondary_budget: 99,
                    ..limits()
                },
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    chunk(0, Send, to(1, false), 60),
                    chunk(0, Forward, 0, 60),
                    connect(0, 0),
                    Op::FlushAll,
                    respond(0, 0, 10),
                ],
            },
        ),
        (
            // Shut a backend down, then send to it: a misuse once its FIN went out.
            "shutdown-then-send",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    connect(0, 0),
                    chunk(0, Forward, 0, 10),
                    chunk(0, Shutdown, 0, 10),
                    chunk(0, Forward, 0, 10),
                    Op::FlushAll,
                    chunk(0, Forward, 0, 10),
                    chunk(0, Send, 0, 10),
                ],
            },
        ),
        (
            // Draining with sessions whose connects time out and whose effects are pending.
            "drain-timeouts",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    Op::Accept,
                    chunk(1, Effect, 0, 10),
                    Op::Drain,
                    Op::Advance { ms: 500 },
                    connect(1, 0),
                    Op::AdvanceToDeadline,
                    Op::AdvanceToDeadline,
                    Op::Fail {
                        conn: 0,
                        side: 1,
                        reason: Reason::Reset,
                    },
                    Op::AdvanceToDeadline,
                ],
            },
        ),
        (
            // A second drain while sessions are open, mid-connect and behind an effect: the
            // drain deadline comes at once.
            "drain-twice",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![
                    Op::Accept,
                    Op::Accept,
                    connect(0, 0),
                    chunk(0, Forward, 0, 10),
                    chunk(1, Effect, 0, 10),
                    Op::Drain,
                    Op::Drain,
                    Op::Accept,
                    Op::AdvanceToDeadline,
                ],
            },
        ),
    ]
}

/// Inputs on which the engine once broke its contract (found by this target, since fixed): each
/// with the failure it showed. `tests/findings.rs` keeps them as regression tests.
pub fn findings() -> Vec<(&'static str, Scenario, &'static str)> {
    use Action::*;
    let mut effects = vec![Op::Accept];
    for _ in 0..8 {
        effects.push(chunk(0, Effect, 0, 10));
        effects.push(ok(0, 4096));
    }
    vec![
        (
            // close_client closes the client after its FIN, but the primary never gets a FIN:
            // once it sent EOF the session lingers until the idle timeout.
            "close-client-leaves-backend-open",
            Scenario {
                limits: limits(),
                flags: EAGER,
                ops: vec![Op::Accept, connect(0, 0), chunk(0, CloseClient, 0, 1)],
            },
            "engine holds state after every peer finished and every queue drained",
        ),
        (
            // The client's EOF makes every backend open at that moment want a FIN; one opened
            // later (here the replacement of a refused primary) never gets one, and the session
            // lingers until the idle timeout.
            "backend-opened-after-client-eof-never-gets-fin",
            Scenario {
                limits: limits(),
                flags: Flags {
                    failover: true,
                    ..EAGER
                },
                ops: vec![
                    Op::Accept,
                    chunk(0, Forward, 0, 10),
                    eof(0, 0),
                    Op::ConnectFail {
                        conn: 0,
                        backend: 0,
                        reason: Reason::Refused,
                    },
                ],
            },
            "engine holds state after every peer finished and every queue drained",
        ),
        (
            // What on_effect writes records no route, so a client whose requests are all answered
            // by effects is never paused: 10-byte requests, 4 KiB answers, a client that never
            // reads, and the proxy buffers without bound (24 KiB here, past the 20 KiB bound).
            "effect-answers-escape-flow-control",
            Scenario {
                limits: Limits {
                    high_water: 255,
                    low_water: 16,
                    ..limits()
                },
                flags: LAZY,
                ops: effects,
            },
            "conn 1 client holds 24576 bytes (unflushed and behind effects), limit 20736",
        ),
    ]
}
