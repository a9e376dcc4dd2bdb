//! A model driver for engine tests: feeds events at a virtual `now`, drains every command, and
//! keeps what a real driver would (per-socket queues, what each socket was sent, pauses), while
//! the engine's contract checker (`fanout_engine::contract`, the one every harness runs) checks
//! every event and command, and the limits are checked after every input.

#![allow(dead_code)] // each test file uses a different part of the harness

use fanout_engine::contract::{Checker, Pacing, Relay, Unpaced};
use fanout_engine::{
    BackendId, Bytes, Command, Config, ConnId, EffectId, EffectRequest, Engine, Event, Failure,
    Instant, Interceptor, Passthrough, Role, SessionReport, SockId,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub const P: BackendId = BackendId(0);
pub const S1: BackendId = BackendId(1);
pub const S2: BackendId = BackendId(2);

pub fn client(conn: u64) -> SockId {
    SockId::client(ConnId(conn))
}

pub fn backend(conn: u64, b: BackendId) -> SockId {
    SockId::backend(ConnId(conn), b)
}

#[derive(Default, Debug)]
pub struct SockModel {
    /// Everything the engine asked to write, in order.
    pub sent: Vec<u8>,
    /// Bytes written but not yet flushed.
    pub queued: u64,
    pub connecting: bool,
    pub open: bool,
    pub shut: bool,
    /// The peer sent EOF: a driver reads nothing more from it.
    pub read_closed: bool,
    pub closed: bool,
    pub paused: bool,
}

pub struct Harness<I: Interceptor = Passthrough> {
    pub engine: Engine<I>,
    pub now: Instant,
    pub socks: BTreeMap<SockId, SockModel>,
    pub reports: Vec<SessionReport>,
    pub accept_paused: bool,
    pub drained: bool,
    /// Every command ever emitted, in order.
    pub log: Vec<Command>,
    /// Effects requested and not yet answered, in request order.
    pub effects: Vec<(ConnId, EffectId, EffectRequest)>,
    /// The driver-side contract, checked on every event and command.
    pub checker: Checker,
    /// Which reader each backlog paces (relay and duplex: [`Relay`]; an interceptor's routes
    /// are unknown here, so only pairing is checked for it).
    pacing: Box<dyn Pacing>,
}

impl Harness {
    pub fn new(cfg: Config) -> Self {
        let pacing = Box::new(Relay::new(&cfg, MAX_READ));
        Harness {
            pacing,
            ..Harness::with(cfg, Passthrough)
        }
    }
}

impl<I: Interceptor> Harness<I> {
    pub fn with(cfg: Config, hooks: I) -> Self {
        Harness {
            checker: Checker::new(&cfg),
            pacing: Box::new(Unpaced),
            engine: Engine::with_interceptor(cfg, hooks).expect("valid config"),
            now: Instant::ZERO,
            socks: BTreeMap::new(),
            reports: Vec::new(),
            accept_paused: false,
            drained: false,
            log: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub fn cfg(&self) -> &Config {
        self.engine.config()
    }

    /// Feeds `event` and drains the commands it caused, checking each against the contract.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        self.checker
            .event(self.now, &event)
            .unwrap_or_else(|v| panic!("{v}"));
        self.engine.handle(self.now, event);
        let mut cmds = Vec::new();
        while let Some(cmd) = self.engine.poll_command() {
            self.checker.command(&cmd).unwrap_or_else(|v| panic!("{v}"));
            self.apply(&cmd);
            cmds.push(cmd);
        }
        self.log.extend(cmds.iter().cloned());
        self.checker
            .settled(&self.engine, &*self.pacing)
            .unwrap_or_else(|v| panic!("{v}"));
        self.check_limits();
        cmds
    }

    fn apply(&mut self, cmd: &Command) {
        match cmd {
            Command::Connect { sock, .. } => {
                self.socks.entry(*sock).or_default().connecting = true;
            }
            Command::Write { sock, data } => {
                let m = self.sock_mut(sock);
                m.sent.extend_from_slice(data);
                m.queued += data.len() as u64;
            }
            Command::Shutdown { sock } => {
                self.sock_mut(sock).shut = true;
            }
            Command::Close { sock } => {
                let m = self.socks.entry(*sock).or_default();
                m.closed = true;
                m.open = false;
                m.connecting = false;
                m.queued = 0;
            }
            Command::PauseRead { sock } => {
                self.sock_mut(sock).paused = true;
            }
            Command::ResumeRead { sock } => {
                self.sock_mut(sock).paused = false;
            }
            Command::PauseAccept => self.accept_paused = true,
            Command::ResumeAccept => self.accept_paused = false,
            Command::Report(r) => self.reports.push((**r).clone()),
            Command::Drained => self.drained = true,
            Command::Effect { conn, id, request } => {
                self.effects.push((*conn, *id, (**request).clone()));
            }
        }
    }

    fn sock_mut(&mut self, sock: &SockId) -> &mut SockModel {
        let m = self
            .socks
            .get_mut(sock)
            .unwrap_or_else(|| panic!("command names unknown socket {sock}"));
        assert!(!m.closed, "command names closed socket {sock}");
        m
    }

    /// No socket's unflushed bytes exceed what the limits allow, and the secondaries' together
    /// stay within the engine-wide cap, as the engine counts them.
    fn check_limits(&self) {
        let cfg = self.engine.config();
        let secondaries: u64 = self
            .engine
            .unflushed()
            .filter(|&(sock, _)| self.engine.role(sock) == Some(Role::Secondary))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            self.engine.secondary_held(),
            secondaries,
            "the engine's count of bytes held for secondaries"
        );
        assert!(
            secondaries <= cfg.secondary_memory,
            "secondaries hold {secondaries} bytes, cap {}",
            cfg.secondary_memory
        );
        for (sock, unflushed) in self.engine.unflushed() {
            let limit = match self.engine.role(sock) {
                Some(Role::Secondary) => cfg.secondary_budget,
                // One read may land on top of the high-water mark before the pause takes effect;
                // the test drivers read at most `MAX_READ` at a time.
                _ => cfg.high_water + MAX_READ,
            };
            assert!(
                unflushed <= limit,
                "{sock} holds {unflushed} unflushed bytes, limit {limit}"
            );
        }
    }

    // ---- conveniences ---------------------------------------------------------------------

    pub fn accept(&mut self, conn: u64) -> Vec<Command> {
        self.socks.entry(client(conn)).or_default().open = true;
        self.handle(Event::Accepted {
            conn: ConnId(conn),
            client: format!("127.0.0.1:{}", 40000 + conn),
        })
    }

    pub fn connected(&mut self, sock: SockId) -> Vec<Command> {
        let m = self.socks.entry(sock).or_default();
        assert!(m.connecting, "{sock} was not asked to connect");
        m.connecting = false;
        m.open = true;
        self.handle(Event::Connected { sock })
    }

    /// Accepts `conn` and connects every backend the engine asks for.
    pub fn open(&mut self, conn: u64) {
        let cmds = self.accept(conn);
        for cmd in cmds {
            if let Command::Connect { sock, .. } = cmd {
                self.connected(sock);
            }
        }
    }

    pub fn read(&mut self, sock: SockId, data: &[u8]) -> Vec<Command> {
        self.handle(Event::Read {
            sock,
            data: Bytes::copy_from_slice(data),
        })
    }

    pub fn eof(&mut self, sock: SockId) -> Vec<Command> {
        self.socks.entry(sock).or_default().read_closed = true;
        self.handle(Event::ReadClosed { sock })
    }

    pub fn fail(&mut self, sock: SockId, reason: Failure) -> Vec<Command> {
        if let Some(m) = self.socks.get_mut(&sock) {
            m.closed = true;
            m.open = false;
        }
        self.handle(Event::Failed { sock, reason })
    }

    /// Flushes everything queued on `sock`.
    pub fn flush(&mut self, sock: SockId) -> Vec<Command> {
        self.flush_some(sock, u64::MAX)
    }

    pub fn flush_some(&mut self, sock: SockId, at_most: u64) -> Vec<Command> {
        let m = self.socks.get_mut(&sock).expect("known socket");
        let n = m.queued.min(at_most);
        if n == 0 {
            return Vec::new();
        }
        m.queued -= n;
        self.handle(Event::Flushed { sock, bytes: n })
    }

    /// Flushes every open socket until nothing is queued.
    pub fn flush_all(&mut self) {
        loop {
            let queued: Vec<SockId> = self
                .socks
                .iter()
                .filter(|(_, m)| m.queued > 0 && !m.closed)
                .map(|(s, _)| *s)
                .collect();
            if queued.is_empty() {
                return;
            }
            for sock in queued {
                self.flush(sock);
            }
        }
    }

    /// Answers the effect `id` (which must be pending).
    pub fn effect_done(
        &mut self,
        id: EffectId,
        result: fanout_engine::EffectResult,
    ) -> Vec<Command> {
        let at = self
            .effects
            .iter()
            .position(|(_, e, _)| *e == id)
            .expect("a pending effect");
        self.effects.remove(at);
        self.handle(Event::EffectDone { id, result })
    }

    /// Moves the clock and fires any deadline that passed.
    pub fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now = self.now + by;
        let mut cmds = Vec::new();
        while self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            cmds.extend(self.handle(Event::Timeout));
        }
        cmds
    }

    pub fn sent(&self, sock: SockId) -> &[u8] {
        self.socks.get(&sock).map(|m| &m.sent[..]).unwrap_or(&[])
    }

    pub fn is_closed(&self, sock: SockId) -> bool {
        self.socks.get(&sock).is_some_and(|m| m.closed)
    }

    pub fn is_shut(&self, sock: SockId) -> bool {
        self.socks.get(&sock).is_some_and(|m| m.shut)
    }

    pub fn is_paused(&self, sock: SockId) -> bool {
        self.socks.get(&sock).is_some_and(|m| m.paused)
    }

    /// The engine holds nothing: no session, timer or queued command; and by the contract,
    /// every socket was closed, every session reported (with reports on), a drain finished.
    pub fn assert_quiescent(&self) {
        assert!(self.engine.is_idle(), "engine not idle: {:?}", self.engine);
        self.checker.finish().unwrap_or_else(|v| panic!("{v}"));
    }

    /// Runs a normal request/response exchange on `conn` and closes it both ways.
    pub fn exchange(&mut self, conn: u64, request: &[u8], response: &[u8]) {
        self.read(client(conn), request);
        self.flush_all();
        self.read(backend(conn, P), response);
        self.flush_all();
        self.eof(client(conn));
        self.flush_all();
        self.eof(backend(conn, P));
        self.flush_all();
    }
}

/// The largest single read the tests feed.
pub const MAX_READ: u64 = 64 * 1024;

pub fn relay() -> Config {
    Config::default()
}

pub fn duplex(secondaries: u16) -> Config {
    Config {
        secondaries,
        reports: true,
        ..Config::default()
    }
}

/// Cuts `data` at the given points (each taken modulo its length + 1), for split-invariance properties.
pub fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::new();
    let mut last = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        if c > last {
            parts.push(data[last..c].to_vec());
            last = c;
        }
    }
    parts
}
