//! Fuzz target `intercept_events`: the engine running a routing, answering, holding and
//! effect-requesting interceptor ([`program`]) on arbitrary operation sequences, driven by the
//! model [`Driver`] and checked against the interceptor's model ([`model::Spec`]), then the
//! liveness phase ([`Driver::finish`]).
//!
//! The input decides the limits (a few KiB and seconds; 1–4 backends, held bytes and effects a
//! session), two knobs of the interceptor (open the primary at accept; replace a backend that
//! cannot connect) and up to 4096 operations: accept; a client chunk whose first byte picks the
//! interceptor's action (forward, send to a named backend, answer, hold, release, effect, panic,
//! close, close the client, shut a backend down); backend bytes; connect ok/fail; flush some or
//! all; EOF; reset; an effect's result (ok with 0–4096 bytes, failed, unavailable) for any
//! outstanding effect, in any order, before or after its timeout, or again; clock jumps; drain;
//! late events for closed sockets.
//!
//! Set `FANOUT_FUZZ_DEBUG=1` to print the decoded scenario and `FANOUT_FUZZ_TRACE=1` to print
//! every event and command (useful on a crashing input:
//! `FANOUT_FUZZ_DEBUG=1 cargo +nightly fuzz run intercept_events fuzz/artifacts/intercept_events/crash-...`).
//! The engine bugs this target found are kept as inputs in [`seeds::findings`].

mod encode;
pub mod model;
pub mod program;
mod rules;
pub mod seeds;

pub use encode::encode;

use crate::driver::{pattern, Driver, Stale, MAX_READ};
use crate::engine_events::Reason;
use arbitrary::{Arbitrary, Unstructured};
use fanout_engine::{
    BackendId, Bytes, Config, Conn, ConnId, EffectError, EffectId, EffectResult, End, Engine,
    Failure, Finish, Interceptor, SessionReport, SockId,
};
use model::{Spec, MAX_RESULT};
use program::{Action, Flags, Plan};
use std::cell::RefCell;
use std::time::Duration;

/// Operations per input at most; longer inputs are cut here so one input stays fast.
const MAX_OPS: usize = 4096;

/// A hook call, as the interceptor saw it (its session from its own state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Connect(ConnId),
    Connected(ConnId, BackendId),
    ConnectFailed(ConnId, BackendId, Failure),
    Data(ConnId, Bytes),
    ClientEof(ConnId),
    Response(ConnId, BackendId, Bytes),
    Finish(ConnId, BackendId, End),
    Effect(ConnId, EffectId, EffectResult),
    End(ConnId),
}

/// The interceptor under test: [`program`] run through [`Conn`], logging every hook call for the
/// model to follow.
#[derive(Debug, Default)]
pub struct Fuzzy {
    flags: Flags,
    calls: RefCell<Vec<Call>>,
}

impl Fuzzy {
    pub fn new(flags: Flags) -> Self {
        Fuzzy {
            flags,
            calls: RefCell::default(),
        }
    }

    /// The hook calls since the last time.
    pub fn take_calls(&self) -> Vec<Call> {
        self.calls.take()
    }

    fn log(&mut self, call: Call) {
        self.calls.get_mut().push(call);
    }
}

/// A session's state: its id (so every hook call names the session whose state it got) and the
/// program's plan.
#[derive(Debug)]
pub struct State {
    conn: ConnId,
    plan: Plan,
}

impl Interceptor for Fuzzy {
    type State = State;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> State {
        let id = conn.id();
        self.log(Call::Connect(id));
        State {
            conn: id,
            plan: program::on_connect(self.flags, conn),
        }
    }

    fn on_backend_connected(&mut self, st: &mut State, _: &mut Conn<'_>, b: BackendId) {
        self.log(Call::Connected(st.conn, b));
    }

    fn on_connect_failed(&mut self, st: &mut State, conn: &mut Conn<'_>, b: BackendId, r: Failure) {
        self.log(Call::ConnectFailed(st.conn, b, r));
        program::on_connect_failed(self.flags, &mut st.plan, conn, b);
    }

    fn on_data(&mut self, st: &mut State, conn: &mut Conn<'_>, data: Bytes) {
        self.log(Call::Data(st.conn, data.clone()));
        program::on_data(&mut st.plan, conn, data);
    }

    fn on_client_eof(&mut self, st: &mut State, conn: &mut Conn<'_>) {
        self.log(Call::ClientEof(st.conn));
        program::on_client_eof(&mut st.plan, conn);
    }

    fn on_response(&mut self, st: &mut State, conn: &mut Conn<'_>, b: BackendId, data: Bytes) {
        self.log(Call::Response(st.conn, b, data.clone()));
        program::on_response(conn, b, &data);
    }

    fn on_finish(&mut self, st: &mut State, _: &mut Conn<'_>, b: BackendId, end: End) -> Finish {
        self.log(Call::Finish(st.conn, b, end));
        Finish::Default
    }

    fn on_effect(&mut self, st: &mut State, conn: &mut Conn<'_>, id: EffectId, r: EffectResult) {
        self.log(Call::Effect(st.conn, id, r.clone()));
        program::on_effect(conn, &r);
    }

    fn on_end(&mut self, st: State, _: &SessionReport) {
        self.log(Call::End(st.conn));
    }
}

/// What the fuzzer controls: the limits, the interceptor's knobs and the schedule.
#[derive(Debug, Arbitrary)]
pub struct Scenario {
    pub limits: Limits,
    pub flags: Flags,
    pub ops: Vec<Op>,
}

/// Raw knobs, folded into small valid limits by [`Limits::config`].
#[derive(Debug, Arbitrary)]
pub struct Limits {
    pub max_connections: u8,
    pub high_water: u16,
    pub low_water: u16,
    pub secondary_budget: u16,
    pub max_backends: u8,
    pub max_held: u16,
    pub max_effects: u8,
    pub effect_ms: u16,
    pub connect_ms: u16,
    pub idle_ms: u16,
    pub deadline_ms: u16,
    pub drain_ms: u16,
}

impl Limits {
    /// A valid configuration with every limit small enough to be hit. Reports are on, so that
    /// each session's interceptor error is checked.
    pub fn config(&self) -> Config {
        let high_water = 1 + u64::from(self.high_water) % (8 * 1024);
        let ms = |v: u16, max: u64| Duration::from_millis(1 + u64::from(v) % max);
        Config {
            secondaries: 0,
            max_connections: 1 + usize::from(self.max_connections) % 4,
            high_water,
            low_water: u64::from(self.low_water) % high_water,
            secondary_budget: 1 + u64::from(self.secondary_budget) % (8 * 1024),
            secondary_deadline: ms(self.deadline_ms, 2_000),
            compare_window: 1024,
            connect_timeout: ms(self.connect_ms, 2_000),
            idle_timeout: ms(self.idle_ms, 10_000),
            drain_timeout: Duration::from_millis(u64::from(self.drain_ms) % 5_000),
            reports: true,
            max_backends: 1 + u16::from(self.max_backends) % 4,
            max_held: 1 + u64::from(self.max_held) % (8 * 1024),
            max_effects: 1 + u32::from(self.max_effects) % 4,
            effect_timeout: ms(self.effect_ms, 2_000),
            ..Config::default()
        }
    }
}

/// One step. `conn` picks among the live sessions, `side` among a session's sockets (0 the
/// client, 1.. its backends in order), `backend` among its backends; a step that does not apply
/// to what it picks (a read from a paused socket, a connect answer for an open one) does nothing.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    Accept,
    /// A client chunk: `[action, arg, pattern...]`, 1 + `len % MAX_READ` bytes.
    Chunk {
        conn: u8,
        action: Action,
        arg: u8,
        len: u16,
    },
    Respond {
        conn: u8,
        backend: u8,
        len: u16,
    },
    Connect {
        conn: u8,
        backend: u8,
    },
    ConnectFail {
        conn: u8,
        backend: u8,
        reason: Reason,
    },
    Flush {
        conn: u8,
        side: u8,
        len: u16,
    },
    FlushAll,
    Eof {
        conn: u8,
        side: u8,
    },
    Fail {
        conn: u8,
        side: u8,
        reason: Reason,
    },
    /// The `pick`-th outstanding effect succeeds with `len % (MAX_RESULT + 1)` bytes.
    EffectOk {
        pick: u8,
        len: u16,
    },
    /// The `pick`-th outstanding effect fails, or the executor cannot take it.
    EffectErr {
        pick: u8,
        unavailable: bool,
    },
    /// An effect already answered is answered again.
    EffectAgain {
        pick: u8,
    },
    Advance {
        ms: u16,
    },
    AdvanceToDeadline,
    Drain,
    Stale {
        pick: u16,
        kind: Stale,
    },
}

/// A fresh engine running [`Fuzzy`] under `scenario`'s limits and knobs.
pub fn engine(scenario: &Scenario) -> Engine<Fuzzy> {
    Engine::with_interceptor(scenario.limits.config(), Fuzzy::new(scenario.flags))
        .expect("the fuzz config is valid")
}

/// A driver around `engine` (built by [`engine`], perhaps with a mutant switched on), checked
/// against the model of `scenario`'s interceptor.
pub fn driver_with(scenario: &Scenario, engine: Engine<Fuzzy>) -> Driver<Spec> {
    let model = Spec::new(engine.config().clone(), scenario.flags);
    Driver::with_model(engine, model)
}

/// A driver around a fresh engine for `scenario`.
pub fn driver(scenario: &Scenario) -> Driver<Spec> {
    driver_with(scenario, engine(scenario))
}

/// The target: decodes a [`Scenario`] and runs it.
pub fn run(data: &[u8]) {
    quiet_deliberate_panics();
    let Some(scenario) = decode(data) else {
        return;
    };
    if std::env::var_os("FANOUT_FUZZ_DEBUG").is_some() {
        eprintln!("{scenario:#?}\nconfig: {:#?}", scenario.limits.config());
    }
    run_scenario(&scenario, driver(&scenario));
}

/// The scenario an input stands for, if it decodes.
pub fn decode(data: &[u8]) -> Option<Scenario> {
    Scenario::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Drives `scenario` through `d` (usually [`driver`]`(scenario)`) and checks it. Returns the
/// session reports.
pub fn run_scenario(scenario: &Scenario, mut d: Driver<Spec>) -> Vec<SessionReport> {
    for op in scenario.ops.iter().take(MAX_OPS) {
        step(&mut d, *op);
    }
    d.finish()
}

/// The interceptor's deliberate panic is contained by the engine; keep the panic hook (libFuzzer's
/// aborts the process, the default one prints) from hearing of it. Every other panic still reaches
/// the hook that was installed before.
pub fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&program::MARKER) {
                previous(info);
            }
        }));
    });
}

/// The `conn`-th live session.
fn pick_conn(d: &Driver<Spec>, conn: u8) -> Option<ConnId> {
    let live = d.live_conns();
    (!live.is_empty()).then(|| live[usize::from(conn) % live.len()])
}

/// Socket `side` of the `conn`-th live session (0 the client, then its backends).
fn pick_side(d: &Driver<Spec>, conn: u8, side: u8) -> Option<SockId> {
    let socks = d.socks_of(pick_conn(d, conn)?);
    Some(socks[usize::from(side) % socks.len()])
}

/// Backend `backend` of the `conn`-th live session.
fn pick_backend(d: &Driver<Spec>, conn: u8, backend: u8) -> Option<SockId> {
    let socks = d.socks_of(pick_conn(d, conn)?);
    let backends = &socks[1..];
    (!backends.is_empty()).then(|| backends[usize::from(backend) % backends.len()])
}

/// A client chunk: the action's byte, its argument, then the client's pattern at those offsets.
fn chunk(d: &Driver<Spec>, sock: SockId, action: Action, arg: u8, len: u16) -> Bytes {
    let len = 1 + u64::from(len) % MAX_READ;
    let start = d.sock(sock).map_or(0, |m| m.read);
    (0..len)
        .map(|i| match i {
            0 => action.byte(),
            1 => arg,
            _ => pattern(sock, start + i),
        })
        .collect()
}

fn step(d: &mut Driver<Spec>, op: Op) {
    match op {
        Op::Accept => d.accept(),
        Op::Chunk {
            conn,
            action,
            arg,
            len,
        } => {
            if let Some(conn) = pick_conn(d, conn) {
                let sock = SockId::client(conn);
                let data = chunk(d, sock, action, arg, len);
                d.read_data(sock, data);
            }
        }
        Op::Respond { conn, backend, len } => {
            if let Some(sock) = pick_backend(d, conn, backend) {
                d.read(sock, 1 + u64::from(len) % MAX_READ);
            }
        }
        Op::Connect { conn, backend } => {
            if let Some(sock) = pick_backend(d, conn, backend) {
                d.connected(sock);
            }
        }
        Op::ConnectFail {
            conn,
            backend,
            reason,
        } => {
            if let Some(sock) = pick_backend(d, conn, backend) {
                d.connect_failed(sock, reason.into());
            }
        }
        Op::Flush { conn, side, len } => {
            if let Some(sock) = pick_side(d, conn, side) {
                // 0 flushes everything queued.
                let n = if len == 0 { u64::MAX } else { u64::from(len) };
                d.flush(sock, n);
            }
        }
        Op::FlushAll => d.flush_all(),
        Op::Eof { conn, side } => {
            if let Some(sock) = pick_side(d, conn, side) {
                d.eof(sock);
            }
        }
        Op::Fail { conn, side, reason } => {
            if let Some(sock) = pick_side(d, conn, side) {
                d.fail(sock, reason.into());
            }
        }
        Op::EffectOk { pick, len } => {
            let len = u64::from(len) % (MAX_RESULT + 1);
            let bytes: Bytes = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ pick).collect();
            d.effect_done(usize::from(pick), Ok(bytes));
        }
        Op::EffectErr { pick, unavailable } => {
            let err = if unavailable {
                EffectError::Unavailable("queue full".into())
            } else {
                EffectError::Failed("store refused".into())
            };
            d.effect_done(usize::from(pick), Err(err));
        }
        Op::EffectAgain { pick } => {
            d.effect_again(usize::from(pick), Ok(Bytes::from_static(b"again")));
        }
        Op::Advance { ms } => d.advance(Duration::from_millis(u64::from(ms))),
        Op::AdvanceToDeadline => d.advance_to_deadline(),
        Op::Drain => d.drain(),
        Op::Stale { pick, kind } => {
            let closed = d.closed_socks();
            if !closed.is_empty() {
                let sock = closed[usize::from(pick) % closed.len()];
                d.stale(sock, kind);
            }
        }
    }
}
