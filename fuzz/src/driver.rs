//! A model driver for fuzzing: it plays every socket, the clock and the effect executor, feeds the
//! engine only what a real driver could observe, carries out every command on its model of the
//! sockets, and panics the moment the engine breaks a promise of its contract (`engine/src/lib.rs`).
//!
//! It drives any [`Engine<I>`](Engine): what the streams must contain depends on the interceptor,
//! so that part of the oracle is a [`Model`] (relay and duplex: [`Relay`]; the `intercept_events`
//! target's interceptor: its own model). What the driver checks for every engine, after every
//! command or input:
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
//! This is deliberately a separate, leaner model from `engine/tests/support` (a test module, not
//! importable): that one records streams for assertions in hand-written tests; this one checks
//! streams as they are written, so it stays fast on long fuzz inputs.

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

/// Where a socket is in its life, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The engine asked for the connection; the driver has not answered.
    Connecting,
    Open,
    /// Closed by the engine (`Close`) or dropped by the driver (failure).
    Closed,
}

/// The driver's model of one socket.
#[derive(Debug, Clone)]
pub struct Sock {
    pub phase: Phase,
    /// Bytes the driver read from the peer and fed to the engine.
    pub read: u64,
    /// Bytes the engine wrote to it.
    pub written: u64,
    /// Written but not yet flushed.
    pub queued: u64,
    /// Flushed (reported with `Event::Flushed`).
    pub flushed: u64,
    /// The engine sent our FIN.
    pub shut: bool,
    /// The peer sent EOF (fed as `Event::ReadClosed`).
    pub read_closed: bool,
    /// The engine paused reading it.
    pub paused: bool,
    /// The engine resumed reading it in the step being checked (hysteresis: only once what it
    /// feeds is back at the low-water mark).
    pub resumed: std::cell::Cell<bool>,
}

impl Sock {
    fn new(phase: Phase) -> Self {
        Sock {
            phase,
            read: 0,
            written: 0,
            queued: 0,
            flushed: 0,
            shut: false,
            read_closed: false,
            paused: false,
            resumed: std::cell::Cell::new(false),
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// A driver would read from it: open, not paused, no EOF yet.
    pub fn readable(&self) -> bool {
        self.is_open() && !self.paused && !self.read_closed
    }

    /// Finished both ways: our FIN went out with nothing queued, and the peer's EOF was read.
    pub fn finished(&self) -> bool {
        self.shut && self.read_closed && self.queued == 0
    }
}

/// Every socket the driver ever had, by id.
pub type Socks = BTreeMap<SockId, Sock>;

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
    socks: Socks,
    /// The last `ConnId` handed out (they count up from 1, never reused).
    last_conn: u64,
    reports: BTreeMap<ConnId, SessionReport>,
    /// Effects requested and not yet answered, in request order.
    effects: Vec<(ConnId, EffectId)>,
    /// Effects answered (an executor may, wrongly, answer one again).
    answered: Vec<EffectId>,
    accept_paused: bool,
    drain_requested: bool,
    /// `Drain`s sent: a second one ends the drain at once.
    drains: u32,
    drained: bool,
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
            engine,
            model,
            now: Instant::ZERO,
            socks: BTreeMap::new(),
            last_conn: 0,
            reports: BTreeMap::new(),
            effects: Vec::new(),
            answered: Vec::new(),
            accept_paused: false,
            drain_requested: false,
            drains: 0,
            drained: false,
            forcing: Forcing::None,
            last_activity: BTreeMap::new(),
            trace: std::env::var_os("FANOUT_FUZZ_TRACE").is_some(),
        }
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    pub fn sock(&self, sock: SockId) -> Option<&Sock> {
        self.socks.get(&sock)
    }

    /// Sessions with at least one socket not closed, oldest first.
    pub fn live_conns(&self) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = self
            .socks
            .iter()
            .filter(|(_, m)| m.phase != Phase::Closed)
            .map(|(s, _)| s.conn)
            .collect();
        conns.dedup();
        conns
    }

    /// Every socket of session `conn` the driver knows: the client, then its backends in order.
    pub fn socks_of(&self, conn: ConnId) -> Vec<SockId> {
        self.socks
            .range(SockId::client(conn)..=SockId::backend(conn, fanout_engine::BackendId(u16::MAX)))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Every socket the driver ever had that is now closed.
    pub fn closed_socks(&self) -> Vec<SockId> {
        self.socks
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
        self.socks
            .insert(SockId::client(conn), Sock::new(Phase::Open));
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
        self.sock_mut(sock).phase = Phase::Open;
        self.handle(Event::Connected { sock });
    }

    /// Fails a pending connect. Ignored unless `sock` is connecting.
    pub fn connect_failed(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Connecting) {
            return;
        }
        self.sock_mut(sock).phase = Phase::Closed;
        self.handle(Event::ConnectFailed { sock, reason });
    }

    /// Reads `len` bytes (1..=MAX_READ) of `sock`'s peer's [`pattern`]. Ignored unless a driver
    /// would read it.
    pub fn read(&mut self, sock: SockId, len: u64) {
        let Some(m) = self.socks.get(&sock).filter(|m| m.readable()) else {
            return;
        };
        let start = m.read;
        let len = len.clamp(1, MAX_READ);
        let data: Vec<u8> = (start..start + len).map(|o| pattern(sock, o)).collect();
        self.read_data(sock, Bytes::from(data));
    }

    /// Reads `data` (1..=MAX_READ bytes) from `sock`'s peer. Ignored unless a driver would read it.
    pub fn read_data(&mut self, sock: SockId, data: Bytes) {
        if !self.socks.get(&sock).is_some_and(Sock::readable) {
            return;
        }
        assert!(
            !data.is_empty() && data.len() as u64 <= MAX_READ,
            "the driver reads 1..=MAX_READ bytes"
        );
        self.sock_mut(sock).read += data.len() as u64;
        self.handle(Event::Read { sock, data });
    }

    /// Flushes up to `at_most` queued bytes of `sock`. Ignored if nothing is queued.
    pub fn flush(&mut self, sock: SockId, at_most: u64) {
        let Some(m) = self.socks.get_mut(&sock).filter(|m| m.is_open()) else {
            return;
        };
        let n = m.queued.min(at_most);
        if n == 0 {
            return;
        }
        m.queued -= n;
        m.flushed += n;
        self.handle(Event::Flushed { sock, bytes: n });
    }

    /// Flushes every open socket until nothing is queued.
    pub fn flush_all(&mut self) {
        loop {
            let queued: Vec<SockId> = self
                .socks
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
        if !self.socks.get(&sock).is_some_and(Sock::readable) {
            return;
        }
        self.sock_mut(sock).read_closed = true;
        self.handle(Event::ReadClosed { sock });
    }

    /// An established socket fails; the driver drops it. Ignored unless `sock` is open.
    pub fn fail(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Open) {
            return;
        }
        let m = self.sock_mut(sock);
        m.phase = Phase::Closed;
        m.queued = 0;
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
        self.drain_requested = true;
        self.drains += 1;
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
                let m = &self.socks[&sock];
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
        if let Some((sock, m)) = self.socks.iter().find(|(_, m)| m.phase != Phase::Closed) {
            panic!("{sock} never closed: {m:?}");
        }
        if self.config().reports {
            for conn in self.model.served() {
                assert!(self.reports.contains_key(&conn), "no report for {conn:?}");
            }
        }
        assert_eq!(
            self.drained, self.drain_requested,
            "a requested drain must finish"
        );
        self.model.finish(&self.socks);
        self.reports.into_values().collect()
    }

    fn socks_in(&self, phase: Phase) -> Vec<SockId> {
        self.socks
            .iter()
            .filter(|(_, m)| m.phase == phase)
            .map(|(s, _)| *s)
            .collect()
    }

    fn phase(&self, sock: SockId) -> Option<Phase> {
        self.socks.get(&sock).map(|m| m.phase)
    }

    fn sock_mut(&mut self, sock: SockId) -> &mut Sock {
        self.socks
            .get_mut(&sock)
            .unwrap_or_else(|| panic!("the driver has no socket {sock}"))
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
            Event::Drain if self.drains > 1 => Forcing::Any,
            Event::Read { sock, .. } if sock.peer == Peer::Client => Forcing::Secondaries,
            _ => Forcing::None,
        };
        let moved = match &event {
            Event::Accepted { conn, .. } => Some(*conn),
            Event::Read { sock, .. } | Event::Flushed { sock, .. } => self
                .socks
                .get(sock)
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
        self.engine.handle(self.now, event.clone());
        self.model
            .handled(self.now, &event, &self.engine, &self.socks);
        while let Some(cmd) = self.engine.poll_command() {
            if self.trace {
                eprintln!("                    -> {}", brief_command(&cmd));
            }
            self.apply(cmd);
        }
        self.check();
        self.model.check(&self.engine, &self.socks, self.now);
    }

    /// A socket the engine may name in a command other than `Connect` and `Close`: known and open.
    fn open_for_command(&mut self, sock: SockId, what: &str) -> &mut Sock {
        let m = self
            .socks
            .get_mut(&sock)
            .unwrap_or_else(|| panic!("{what} names unknown socket {sock}"));
        assert!(
            m.phase == Phase::Open,
            "{what} names {sock}, which is {m:?}"
        );
        m
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { sock, upstream } => {
                assert!(
                    matches!(sock.peer, Peer::Backend(_)),
                    "connect to a client socket {sock}"
                );
                assert!(
                    self.socks.contains_key(&SockId::client(sock.conn)),
                    "connect for unknown session {sock}"
                );
                assert!(!self.socks.contains_key(&sock), "connect twice: {sock}");
                self.model.connect(&self.socks, sock, upstream);
                self.socks.insert(sock, Sock::new(Phase::Connecting));
            }
            Command::Write { sock, data } => {
                let m = self.open_for_command(sock, "write");
                assert!(!m.shut, "write after shutdown: {sock}");
                assert!(!data.is_empty(), "empty write: {sock}");
                let at = m.written;
                self.model.write(&self.socks, sock, at, &data);
                let m = self.sock_mut(sock);
                m.written += data.len() as u64;
                m.queued += data.len() as u64;
            }
            Command::Shutdown { sock } => {
                let m = self.open_for_command(sock, "shutdown");
                assert!(!m.shut, "shutdown twice: {sock}");
                assert_eq!(m.queued, 0, "shutdown with bytes still queued: {sock}");
                self.model.shutdown(&self.socks, sock);
                self.sock_mut(sock).shut = true;
            }
            Command::Close { sock } => {
                let m = self
                    .socks
                    .get(&sock)
                    .unwrap_or_else(|| panic!("close of unknown socket {sock}"));
                assert!(m.phase != Phase::Closed, "close of closed socket {sock}");
                let m = m.clone();
                self.model.close(&self.socks, sock, &m, self.forcing);
                let m = self.sock_mut(sock);
                m.phase = Phase::Closed;
                m.queued = 0;
            }
            Command::PauseRead { sock } => {
                let m = self.open_for_command(sock, "pause");
                assert!(!m.paused, "pause twice: {sock}");
                assert!(!m.read_closed, "pause after EOF: {sock}");
                m.paused = true;
            }
            Command::ResumeRead { sock } => {
                let m = self.open_for_command(sock, "resume");
                assert!(m.paused, "resume without pause: {sock}");
                m.paused = false;
                m.resumed.set(true);
            }
            Command::PauseAccept => {
                assert!(!self.accept_paused, "pause accept twice");
                self.accept_paused = true;
            }
            Command::ResumeAccept => {
                assert!(self.accept_paused, "resume accept without pause");
                assert!(!self.drain_requested, "resume accept while draining");
                self.accept_paused = false;
            }
            Command::Report(report) => self.check_report(*report),
            Command::Drained => {
                assert!(self.drain_requested, "drained without a drain");
                assert!(!self.drained, "drained twice");
                self.drained = true;
            }
            Command::Effect { conn, id, request } => {
                assert!(
                    self.socks.contains_key(&SockId::client(conn)),
                    "effect for unknown session {conn:?}"
                );
                assert!(
                    !self.effects.iter().any(|&(_, e)| e == id) && !self.answered.contains(&id),
                    "effect {id:?} requested twice"
                );
                self.model.effect(conn, id, &request);
                self.effects.push((conn, id));
            }
        }
    }

    fn check_report(&mut self, report: SessionReport) {
        let conn = report.conn;
        assert!(self.config().reports, "report with reports off");
        for b in &report.backends {
            let sock = SockId::backend(conn, b.backend);
            let m = self
                .socks
                .get(&sock)
                .unwrap_or_else(|| panic!("report lists {sock}, never connected"));
            assert_eq!(m.phase, Phase::Closed, "report while {sock} is open");
            assert_eq!(b.bytes_received, m.read, "{sock}: bytes received");
            assert_eq!(b.bytes_sent, m.flushed, "{sock}: bytes sent");
            if b.outcome == Outcome::IdleTimeout {
                let last = self
                    .last_activity
                    .get(&conn)
                    .copied()
                    .unwrap_or(Instant::ZERO);
                assert!(
                    self.now.saturating_since(last) >= self.config().idle_timeout,
                    "{sock}: idle-timeout at {:?}, but bytes moved at {last:?}, less than the idle timeout before",
                    self.now
                );
            }
        }
        let client = self
            .socks
            .get(&SockId::client(conn))
            .unwrap_or_else(|| panic!("report for unknown {conn:?}"));
        assert_eq!(
            client.phase,
            Phase::Closed,
            "report while the client is open"
        );
        self.model.report(&self.socks, &report);
        assert!(
            self.reports.insert(conn, report).is_none(),
            "{conn:?} reported twice"
        );
    }

    /// Invariants between the engine's state and the driver's, after every input.
    fn check(&self) {
        let cfg = self.engine.config();
        let unflushed: BTreeMap<SockId, u64> = self.engine.unflushed().collect();
        for (&sock, &n) in &unflushed {
            self.model.check_limit(sock, n);
            let m = self
                .socks
                .get(&sock)
                .unwrap_or_else(|| panic!("the engine holds {sock}, unknown to the driver"));
            match m.phase {
                Phase::Open => assert_eq!(n, m.queued, "{sock}: engine and driver disagree"),
                Phase::Closed => assert_eq!(n, 0, "{sock} is closed but holds bytes"),
                Phase::Connecting => {}
            }
        }
        let backlog = |s: SockId| unflushed.get(&s).copied().unwrap_or(0) + self.model.gated(s);
        for (&sock, m) in &self.socks {
            assert_eq!(
                self.engine.knows(sock),
                m.phase != Phase::Closed,
                "{sock}: the engine and the driver disagree whether it is open ({m:?})"
            );
            // Backpressure: a reader is paused by the backlog of what it feeds.
            if !m.is_open() || m.read_closed {
                continue;
            }
            let Some(target) = self.model.pause_target(sock, &backlog) else {
                continue;
            };
            if m.paused {
                assert!(
                    target > cfg.low_water,
                    "{sock} stays paused with {target} bytes queued to its target"
                );
            } else if m.resumed.get() {
                assert!(
                    target <= cfg.low_water,
                    "{sock} resumed with {target} bytes queued to its target, above the low-water mark"
                );
            } else {
                assert!(
                    target <= cfg.high_water,
                    "{sock} is not paused with {target} bytes queued to its target"
                );
            }
        }
        self.socks.values().for_each(|m| m.resumed.set(false));
        let open_clients = self
            .socks
            .iter()
            .filter(|(s, m)| s.peer == Peer::Client && m.phase != Phase::Closed)
            .count();
        assert_eq!(self.engine.open_clients(), open_clients, "open clients");
        assert!(
            open_clients <= cfg.max_connections,
            "{open_clients} clients open, past max_connections of {}",
            cfg.max_connections
        );
        if self.drained {
            assert_eq!(self.engine.session_count(), 0, "drained with sessions left");
        }
    }
}
