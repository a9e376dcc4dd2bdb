//! A model driver for fuzzing: it plays every socket, the clock and the effect executor, feeds the
//! engine only what a real driver could observe, carries out every command on its model of the
//! sockets, and panics the moment the engine breaks a promise of its contract (`engine/src/lib.rs`).
//!
//! It drives any [`Engine<I>`](Engine): what the streams must contain depends on the interceptor,
//! so that part of the oracle is a [`Model`] (relay and duplex: [`Relay`]; the `intercept_events`
//! target's interceptor: its own model). The driver-side contract, the same for every engine and
//! every harness, is checked by the engine's [`Checker`] (`fanout_engine::contract`), which
//! also keeps the driver's view of every socket ([`Socks`]); what it checks, after every command
//! or input:
//!
//! - **Commands name known sockets**: `Connect` only for an accepted session's backend, once;
//!   `Write`, `Shutdown`, `PauseRead`, `ResumeRead` only on an open socket; nothing after `Close`
//!   or after the driver reported the socket failed; `Effect` only for an accepted session, each
//!   id once.
//! - **Writes**: never empty, never before connect or after `Shutdown`; their bytes are checked
//!   by the model ([`Model::write`]) against the stream the socket must receive, in order.
//! - **FIN**: `Shutdown` only with nothing queued (and what the model requires).
//! - **Orderly close**: a socket closed before it finished both ways (our FIN sent with nothing
//!   queued, the peer's EOF read) only when the model allows it ([`Model::close`]).
//! - **Limits**: no socket holds more than the model's limit; a reader is paused while what it
//!   feeds is above the high-water mark and resumed once it is at or below the low mark
//!   ([`Model::pause_target`]); pause and resume alternate and never follow EOF.
//! - **Accounting**: the engine's unflushed bytes, open clients and known sockets agree with the
//!   driver's; reports count the bytes each backend sent and was sent, once per session.
//! - **No leaks**: [`Driver::finish`] answers every effect and lets every peer finish; the engine
//!   must then be idle without waiting for any deadline, and still after a day of virtual time;
//!   every socket must be closed, every served session reported, and a requested drain finished.
//!
//! The [`Model`] adds what depends on the interceptor: the bytes each stream carries, when a FIN
//! or an abrupt close is due, the report's outcomes, which reader each backlog paces, and each
//! socket's limit.

use fanout_engine::contract::{Checker, Pacing, Violation};
use fanout_engine::{
    Bytes, Command, Config, ConnId, EffectId, EffectRequest, EffectResult, Engine, Event, Failure,
    Instant, Interceptor, Outcome, Passthrough, Peer, SessionReport, SockId, UpstreamId,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::relay::{pattern, Relay};

/// The largest single read the driver feeds. The primary's and client's queues may exceed the high
/// water mark by at most this much (the read that crossed it).
pub const MAX_READ: u64 = 4096;

/// Timer firings in one `advance` above which the engine is taken to be spinning.
const MAX_FIRINGS: usize = 100_000;

pub use fanout_engine::contract::{Phase, Sock, Socks};

/// An event for a socket the engine already closed: a real driver may deliver one that was in
/// flight when the engine closed it. The engine must ignore it.
#[derive(Debug, Clone, Copy, arbitrary::Arbitrary)]
pub enum Stale {
    Read,
    ReadClosed,
    Flushed,
    Failed,
    Connected,
}

/// What the event being handled allows the engine to close abruptly, by the driver's generic
/// rule (a [`Model`] may allow more, or less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forcing {
    /// Nothing: every socket must finish both ways before it closes.
    None,
    /// A client read may push a secondary past its budget.
    Secondaries,
    /// A deadline, a failure, a refused accept or a second drain may cut any socket off.
    Any,
}

/// The part of the oracle that depends on the interceptor: what each socket must receive, when a
/// FIN or an abrupt close is due, what a report says, and the limits. The driver calls it as it
/// carries out every command; each method panics on a broken promise.
pub trait Model {
    /// The interceptor the engine runs.
    type Hooks: Interceptor;

    /// The engine handled `event` at `now`; none of the commands it caused is carried out yet
    /// (`socks` is the driver's view from before them). A model that follows the interceptor's
    /// hook calls replays them here.
    fn handled(
        &mut self,
        now: Instant,
        event: &Event,
        engine: &Engine<Self::Hooks>,
        socks: &Socks,
    ) {
        let _ = (now, event, engine, socks);
    }

    /// `Command::Connect { sock, upstream }` (the driver checked `sock` is a new backend of an
    /// accepted session).
    fn connect(&mut self, socks: &Socks, sock: SockId, upstream: UpstreamId);

    /// `Command::Write` of `data` at offset `at` of `sock`'s stream (not empty, socket open).
    fn write(&mut self, socks: &Socks, sock: SockId, at: u64, data: &[u8]);

    /// `Command::Shutdown` (the driver checked nothing is queued and no FIN went before).
    fn shutdown(&mut self, socks: &Socks, sock: SockId);

    /// `Command::Close` of `sock`, which is `m` and not yet closed; `forcing` is the driver's
    /// rule for the event being handled.
    fn close(&mut self, socks: &Socks, sock: SockId, m: &Sock, forcing: Forcing);

    /// `Command::Effect` (the driver checked the session was accepted and the id is new).
    fn effect(&mut self, conn: ConnId, id: EffectId, request: &EffectRequest) {
        let _ = request;
        panic!("{conn:?} requested effect {id:?}, but this interceptor requests none");
    }

    /// `Command::Report` (the driver checked the counts of every backend it lists).
    fn report(&mut self, socks: &Socks, report: &SessionReport);

    /// Panics if `sock`, holding `unflushed` bytes (handed to the driver, or waiting for its
    /// connect), is past its limit.
    fn check_limit(&self, sock: SockId, unflushed: u64);

    /// Bytes for `sock` the engine holds back (behind a pending effect) on top of its unflushed
    /// ones: they count against the water marks.
    fn gated(&self, sock: SockId) -> u64 {
        let _ = sock;
        0
    }

    /// The backlog that decides whether reader `sock` must be paused (above the high mark) or may
    /// read (at or below the low mark), given each socket's backlog; `None` if nothing paces it.
    fn pause_target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64>;

    /// After every input, once its commands are carried out: the model's own invariants.
    fn check(&mut self, engine: &Engine<Self::Hooks>, socks: &Socks, now: Instant) {
        let _ = (engine, socks, now);
    }

    /// Sessions the engine took on (each must be reported once, when reports are on).
    fn served(&self) -> Vec<ConnId>;

    /// At the end of [`Driver::finish`], the engine idle: promises about the whole run.
    fn finish(&mut self, socks: &Socks) {
        let _ = socks;
    }
}

/// The model driver. See the [module documentation](self).
#[derive(Debug)]
pub struct Driver<M: Model = Relay> {
    engine: Engine<M::Hooks>,
    model: M,
    now: Instant,
    /// The contract checker, and with it the driver's view of every socket.
    checker: Checker,
    /// The last `ConnId` handed out (they count up from 1, never reused).
    last_conn: u64,
    reports: BTreeMap<ConnId, SessionReport>,
    /// Effects requested and not yet answered, in request order.
    effects: Vec<(ConnId, EffectId)>,
    /// Effects answered (an executor may, wrongly, answer one again).
    answered: Vec<EffectId>,
    /// What the event being handled allows the engine to close abruptly.
    forcing: Forcing,
    /// When bytes last moved on an open socket of each session (accept, a read, a flush): an
    /// `idle-timeout` needs `idle_timeout` of nothing since.
    last_activity: BTreeMap<ConnId, Instant>,
    /// Print every input and command (`FANOUT_FUZZ_TRACE=1`).
    trace: bool,
}

/// An event for the trace, with byte payloads as their length.
fn brief_event(event: &Event) -> String {
    match event {
        Event::Read { sock, data } => format!("Read {sock}: {} bytes", data.len()),
        Event::EffectDone {
            id,
            result: Ok(data),
        } => {
            format!("EffectDone {id:?}: Ok({} bytes)", data.len())
        }
        other => format!("{other:?}"),
    }
}

/// A command for the trace, with byte payloads as their length.
fn brief_command(cmd: &Command) -> String {
    match cmd {
        Command::Write { sock, data } => format!("Write {sock}: {} bytes", data.len()),
        Command::Effect { conn, id, request } => format!(
            "Effect {conn:?} {id:?}: {} with {} bytes",
            request.kind,
            request.payload.len()
        ),
        other => format!("{other:?}"),
    }
}

impl Driver<Relay> {
    /// Relay or duplex (the engine's `Passthrough`) under `cfg`.
    pub fn new(cfg: Config) -> Self {
        Driver::with_engine(Engine::new(cfg).expect("the fuzz config is valid"))
    }

    /// Drives a relay/duplex engine the caller built (the mutant self-test switches a deliberate
    /// bug on).
    pub fn with_engine(engine: Engine<Passthrough>) -> Self {
        let model = Relay::new(engine.config().clone());
        Driver::with_model(engine, model)
    }
}

impl<M: Model> Driver<M> {
    /// Drives `engine`, whose interceptor `model` describes.
    pub fn with_model(engine: Engine<M::Hooks>, model: M) -> Self {
        Driver {
            checker: Checker::new(engine.config()),
            engine,
            model,
            now: Instant::ZERO,
            last_conn: 0,
            reports: BTreeMap::new(),
            effects: Vec::new(),
            answered: Vec::new(),
            forcing: Forcing::None,
            last_activity: BTreeMap::new(),
            trace: std::env::var_os("FANOUT_FUZZ_TRACE").is_some(),
        }
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    pub fn sock(&self, sock: SockId) -> Option<&Sock> {
        self.checker.sock(sock)
    }

    fn socks(&self) -> &Socks {
        self.checker.socks()
    }

    /// Sessions with at least one socket not closed, oldest first.
    pub fn live_conns(&self) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = self
            .socks()
            .iter()
            .filter(|(_, m)| m.phase != Phase::Closed)
            .map(|(s, _)| s.conn)
            .collect();
        conns.dedup();
        conns
    }

    /// Every socket of session `conn` the driver knows: the client, then its backends in order.
    pub fn socks_of(&self, conn: ConnId) -> Vec<SockId> {
        self.socks()
            .range(SockId::client(conn)..=SockId::backend(conn, fanout_engine::BackendId(u16::MAX)))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Every socket the driver ever had that is now closed.
    pub fn closed_socks(&self) -> Vec<SockId> {
        self.socks()
            .iter()
            .filter(|(_, m)| m.phase == Phase::Closed)
            .map(|(s, _)| *s)
            .collect()
    }

    // ---- inputs: each feeds one event a real driver could observe ---------------------------

    /// A new client connects.
    pub fn accept(&mut self) {
        self.last_conn += 1;
        let conn = ConnId(self.last_conn);
        self.handle(Event::Accepted {
            conn,
            client: format!("10.0.0.1:{}", self.last_conn),
        });
    }

    /// Answers a pending connect. Ignored unless `sock` is connecting.
    pub fn connected(&mut self, sock: SockId) {
        if self.phase(sock) != Some(Phase::Connecting) {
            return;
        }
        self.handle(Event::Connected { sock });
    }

    /// Fails a pending connect. Ignored unless `sock` is connecting.
    pub fn connect_failed(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Connecting) {
            return;
        }
        self.handle(Event::ConnectFailed { sock, reason });
    }

    /// Reads `len` bytes (1..=MAX_READ) of `sock`'s peer's [`pattern`]. Ignored unless a driver
    /// would read it.
    pub fn read(&mut self, sock: SockId, len: u64) {
        let Some(m) = self.sock(sock).filter(|m| m.readable()) else {
            return;
        };
        let start = m.read;
        let len = len.clamp(1, MAX_READ);
        let data: Vec<u8> = (start..start + len).map(|o| pattern(sock, o)).collect();
        self.read_data(sock, Bytes::from(data));
    }

    /// Reads `data` (1..=MAX_READ bytes) from `sock`'s peer. Ignored unless a driver would read it.
    pub fn read_data(&mut self, sock: SockId, data: Bytes) {
        if !self.sock(sock).is_some_and(Sock::readable) {
            return;
        }
        assert!(
            !data.is_empty() && data.len() as u64 <= MAX_READ,
            "the driver reads 1..=MAX_READ bytes"
        );
        self.handle(Event::Read { sock, data });
    }

    /// Flushes up to `at_most` queued bytes of `sock`. Ignored if nothing is queued.
    pub fn flush(&mut self, sock: SockId, at_most: u64) {
        let Some(m) = self.sock(sock).filter(|m| m.is_open()) else {
            return;
        };
        let n = m.queued.min(at_most);
        if n == 0 {
            return;
        }
        self.handle(Event::Flushed { sock, bytes: n });
    }

    /// Flushes every open socket until nothing is queued.
    pub fn flush_all(&mut self) {
        loop {
            let queued: Vec<SockId> = self
                .socks()
                .iter()
                .filter(|(_, m)| m.is_open() && m.queued > 0)
                .map(|(s, _)| *s)
                .collect();
            if queued.is_empty() {
                return;
            }
            for sock in queued {
                self.flush(sock, u64::MAX);
            }
        }
    }

    /// The peer of `sock` sends EOF. Ignored unless a driver would read it.
    pub fn eof(&mut self, sock: SockId) {
        if !self.sock(sock).is_some_and(Sock::readable) {
            return;
        }
        self.handle(Event::ReadClosed { sock });
    }

    /// An established socket fails; the driver drops it. Ignored unless `sock` is open.
    pub fn fail(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Open) {
            return;
        }
        self.handle(Event::Failed { sock, reason });
    }

    /// Delivers an event for a socket already closed. Ignored unless `sock` is closed.
    pub fn stale(&mut self, sock: SockId, kind: Stale) {
        if self.phase(sock) != Some(Phase::Closed) {
            return;
        }
        let event = match kind {
            Stale::Read => Event::Read {
                sock,
                data: Bytes::from_static(b"late"),
            },
            Stale::ReadClosed => Event::ReadClosed { sock },
            Stale::Flushed => Event::Flushed { sock, bytes: 1 },
            Stale::Failed => Event::Failed {
                sock,
                reason: Failure::Reset,
            },
            Stale::Connected => Event::Connected { sock },
        };
        self.handle(event);
    }

    /// The executor finishes the `pick`-th unanswered effect (modulo their number) with `result`.
    /// The engine may have given up on it already (timed out, session gone): it must then ignore
    /// the result.
    pub fn effect_done(&mut self, pick: usize, result: EffectResult) {
        if self.effects.is_empty() {
            return;
        }
        let (_, id) = self.effects.remove(pick % self.effects.len());
        self.answered.push(id);
        self.handle(Event::EffectDone { id, result });
    }

    /// A confused executor answers the `pick`-th answered effect again. The engine must ignore it.
    pub fn effect_again(&mut self, pick: usize, result: EffectResult) {
        if self.answered.is_empty() {
            return;
        }
        let id = self.answered[pick % self.answered.len()];
        self.handle(Event::EffectDone { id, result });
    }

    /// Stop accepting and finish the open sessions; called again, close them at once.
    pub fn drain(&mut self) {
        self.handle(Event::Drain);
    }

    /// Moves the clock forward by `by`, firing every deadline on the way at its own instant.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        let mut firings = 0;
        while let Some(at) = self.engine.poll_timeout().filter(|&at| at <= target) {
            firings += 1;
            assert!(
                firings < MAX_FIRINGS,
                "the engine keeps scheduling deadlines at or before {at:?}"
            );
            self.now = self.now.max(at);
            self.handle(Event::Timeout);
        }
        self.now = target;
    }

    /// Moves the clock to the next deadline, if any, and fires it.
    pub fn advance_to_deadline(&mut self) {
        if let Some(at) = self.engine.poll_timeout() {
            self.advance(at.saturating_since(self.now));
        }
    }

    // ---- liveness -----------------------------------------------------------------------------

    /// The liveness phase: every effect is answered, every pending connect succeeds, every peer
    /// finishes (EOF on every socket once its queue is flushed); the engine must then hold
    /// nothing, and still nothing once time passed beyond every deadline, and every promise about
    /// the whole run must hold. Returns every session report, in session order.
    pub fn finish(mut self) -> Vec<SessionReport> {
        for _ in 0..4 {
            while !self.effects.is_empty() {
                self.effect_done(0, Ok(Bytes::from_static(b"done")));
            }
            let connecting: Vec<SockId> = self.socks_in(Phase::Connecting);
            for sock in connecting {
                self.connected(sock);
            }
            self.flush_all();
            for sock in self.socks_in(Phase::Open) {
                let m = &self.socks()[&sock];
                assert!(
                    !m.paused || m.read_closed,
                    "{sock} is still paused with every queue flushed"
                );
                self.eof(sock);
                self.flush_all();
            }
        }
        // Every effect answered, every peer finished and every byte flushed: every socket
        // finished both ways, so every session ends by itself, without waiting for a deadline.
        assert!(
            self.engine.is_idle(),
            "engine holds state after every peer finished and every queue drained: {:?}",
            self.engine
        );
        assert!(self.effects.is_empty(), "effects requested during liveness");
        // And time passing changes nothing (no timer outlived its session).
        let far = Duration::from_secs(24 * 3600);
        self.advance(far);
        self.flush_all();
        self.advance(far);
        assert!(
            self.engine.is_idle(),
            "engine holds state after every peer finished and every deadline passed: {:?}",
            self.engine
        );
        assert_eq!(self.engine.open_clients(), 0);
        self.checker.finish().unwrap_or_else(broken);
        if self.config().reports {
            for conn in self.model.served() {
                assert!(self.reports.contains_key(&conn), "no report for {conn:?}");
            }
        }
        self.model.finish(self.checker.socks());
        self.reports.into_values().collect()
    }

    fn socks_in(&self, phase: Phase) -> Vec<SockId> {
        self.socks()
            .iter()
            .filter(|(_, m)| m.phase == phase)
            .map(|(s, _)| *s)
            .collect()
    }

    fn phase(&self, sock: SockId) -> Option<Phase> {
        self.sock(sock).map(|m| m.phase)
    }

    // ---- the engine boundary ----------------------------------------------------------------

    /// Feeds `event`, carries out every command it caused, then checks the invariants.
    fn handle(&mut self, event: Event) {
        // Only a deadline, a failure, a refused accept or a second drain (the drain deadline
        // brought to now) may cut a socket off; otherwise a socket closes once it finished both
        // ways, or (a secondary) when a client read overran its budget.
        self.forcing = match &event {
            Event::Timeout
            | Event::Failed { .. }
            | Event::ConnectFailed { .. }
            | Event::Accepted { .. } => Forcing::Any,
            Event::Drain if self.checker.drains() >= 1 => Forcing::Any,
            Event::Read { sock, .. } if sock.peer == Peer::Client => Forcing::Secondaries,
            _ => Forcing::None,
        };
        let moved = match &event {
            Event::Accepted { conn, .. } => Some(*conn),
            Event::Read { sock, .. } | Event::Flushed { sock, .. } => self
                .sock(*sock)
                .is_some_and(|m| m.phase != Phase::Closed)
                .then_some(sock.conn),
            _ => None,
        };
        if let Some(conn) = moved {
            self.last_activity.insert(conn, self.now);
        }
        if self.trace {
            eprintln!("{:>14} ns  <- {}", self.now.as_nanos(), brief_event(&event));
        }
        self.checker.event(self.now, &event).unwrap_or_else(broken);
        self.engine.handle(self.now, event.clone());
        self.model
            .handled(self.now, &event, &self.engine, self.checker.socks());
        while let Some(cmd) = self.engine.poll_command() {
            if self.trace {
                eprintln!("                    -> {}", brief_command(&cmd));
            }
            self.apply(cmd);
        }
        self.check();
        self.model
            .check(&self.engine, self.checker.socks(), self.now);
    }

    /// Checks `cmd` against the contract, lets the model check it against the streams, and
    /// carries it out.
    fn apply(&mut self, cmd: Command) {
        self.checker.check_command(&cmd).unwrap_or_else(broken);
        let socks = self.checker.socks();
        match &cmd {
            Command::Connect { sock, upstream } => self.model.connect(socks, *sock, *upstream),
            Command::Write { sock, data } => {
                let at = socks[sock].written;
                self.model.write(socks, *sock, at, data);
            }
            Command::Shutdown { sock } => self.model.shutdown(socks, *sock),
            Command::Close { sock } => {
                let m = socks[sock].clone();
                self.model.close(socks, *sock, &m, self.forcing);
            }
            Command::Report(report) => {
                self.model.report(socks, report);
                self.check_idle_cause(report);
                self.reports.insert(report.conn, (**report).clone());
            }
            Command::Effect { conn, id, request } => {
                self.model.effect(*conn, *id, request);
                self.effects.push((*conn, *id));
            }
            Command::PauseRead { .. }
            | Command::ResumeRead { .. }
            | Command::PauseAccept
            | Command::ResumeAccept
            | Command::Drained => {}
        }
        self.checker.apply_command(&cmd);
    }

    /// After every input: the contract's invariants between the engine's state and the
    /// driver's, then each socket's limit by the model.
    fn check(&mut self) {
        let pacing = ModelPacing(&self.model);
        self.checker
            .settled(&self.engine, &pacing)
            .unwrap_or_else(broken);
        for (sock, n) in self.engine.unflushed() {
            self.model.check_limit(sock, n);
        }
        let open_clients = self
            .checker
            .socks()
            .iter()
            .filter(|(s, m)| s.peer == Peer::Client && m.phase != Phase::Closed)
            .count();
        let max = self.config().max_connections;
        assert!(
            open_clients <= max,
            "{open_clients} clients open, past max_connections of {max}"
        );
    }

    /// An `idle-timeout` outcome needs `idle_timeout` with no bytes moving in its session.
    fn check_idle_cause(&self, report: &SessionReport) {
        let last = self
            .last_activity
            .get(&report.conn)
            .copied()
            .unwrap_or(Instant::ZERO);
        for b in report.backends.iter() {
            if b.outcome == Outcome::IdleTimeout {
                assert!(
                    self.now.saturating_since(last) >= self.config().idle_timeout,
                    "backend {:?} of {:?}: idle-timeout at {:?}, but bytes moved at {last:?}, less than the idle timeout before",
                    b.backend,
                    report.conn,
                    self.now
                );
            }
        }
    }
}

/// A broken promise of the contract ends the run.
fn broken(v: Violation) {
    panic!("{v}")
}

/// The model's knowledge of which reader each backlog paces, for the contract's water marks.
struct ModelPacing<'a, M>(&'a M);

impl<M: Model> Pacing for ModelPacing<'_, M> {
    fn target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64> {
        self.0.pause_target(sock, backlog)
    }

    fn gated(&self, sock: SockId) -> u64 {
        self.0.gated(sock)
    }
}
