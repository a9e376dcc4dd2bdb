//! The engine's benchmark scenarios, shared by `benches/engine.rs` (criterion, and the
//! allocations-per-message line it prints first) and `tests/allocations.rs` (which pins those
//! allocations), each including this file with `#[path]`.
//!
//! A real `Engine<Passthrough>` is driven exactly as the io driver drives it: every input goes
//! through [`Engine::handle`] at an explicit `now`, `poll_command` is drained to `None` after
//! each, every `Command::Write` is taken as written at once and answered, after the drain, with
//! an `Event::Flushed` of its bytes, `Command::Connect` is answered with `Event::Connected`, and
//! a deadline returned by `poll_timeout` that has passed is fed as `Event::Timeout` before the
//! next input. Virtual time advances one microsecond per input. Read data is a shared `Bytes`
//! split off a `BytesMut`, as the io driver's reads are, so handing it on is a reference count.
//!
//! The sessions a scenario runs over are accepted and connected when it is built, outside any
//! measurement; a [`Run::step`] is one unit of its traffic (a message, a bulk read, a whole
//! connection), round-robin over the sessions.

#![allow(dead_code)] // the bench and the test each use a different part

use bytes::{Bytes, BytesMut};
use fanout_engine::contract::{Checker, Relay};
use fanout_engine::{BackendId, Command, Config, ConnId, Engine, Event, Instant, SockId};
use std::collections::VecDeque;
use std::time::Duration;

/// Sessions a scenario's traffic is spread over.
pub const SESSIONS: u64 = 64;
/// A keep-alive request, client to backends.
pub const REQUEST: usize = 100;
/// Its response, from the primary (and, in duplex, the same bytes from the secondary).
pub const RESPONSE: usize = 300;
/// One bulk read from the primary.
pub const BULK: usize = 64 * 1024;
/// Virtual time between two inputs.
pub const TICK: Duration = Duration::from_micros(1);
/// What the driver says a client's address is (the one string it allocates per connection).
pub const CLIENT_ADDR: &str = "127.0.0.1:40000";

const PRIMARY: BackendId = BackendId(0);
const SECONDARY: BackendId = BackendId(1);

/// What a [`Run`] exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// relay, keep-alive: client reads 100 B → primary write; primary reads 300 B → client
    /// write; both flushed. A step is one message (request and response).
    Relay,
    /// duplex with one secondary: the same, the request also written to the secondary and
    /// flushed, and the secondary's read of the same 300 B digested and compared.
    Duplex,
    /// relay, bulk: the primary reads 64 KiB → client write, flushed. A step is one read.
    RelayBulk,
    /// relay, a whole connection: accepted, its primary connected, one relay message, EOF from
    /// the client and then from the primary, every socket closed. A step is one connection.
    RelayLifecycle,
    /// The same in duplex (the secondary connected, reading its answer, EOF, closed; the
    /// session's report).
    DuplexLifecycle,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Relay,
        Scenario::Duplex,
        Scenario::RelayBulk,
        Scenario::RelayLifecycle,
        Scenario::DuplexLifecycle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Relay => "relay",
            Scenario::Duplex => "duplex",
            Scenario::RelayBulk => "relay_bulk_64k",
            Scenario::RelayLifecycle => "relay_lifecycle",
            Scenario::DuplexLifecycle => "duplex_lifecycle",
        }
    }

    /// What one step is.
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::Relay | Scenario::Duplex => "message",
            Scenario::RelayBulk => "64 KiB read",
            Scenario::RelayLifecycle | Scenario::DuplexLifecycle => "connection",
        }
    }

    /// `Engine::handle` calls per step (timeouts aside: none falls due in a run of minutes).
    pub fn events_per_step(self) -> u64 {
        match self {
            // Read, Flushed; Read, Flushed.
            Scenario::Relay => 4,
            // Read, Flushed ×2; Read, Flushed; Read (secondary).
            Scenario::Duplex => 6,
            // Read, Flushed.
            Scenario::RelayBulk => 2,
            // Accepted, Connected, the 4 of a message, ReadClosed ×2.
            Scenario::RelayLifecycle => 8,
            // Accepted, Connected ×2, the 6 of a message, ReadClosed ×3.
            Scenario::DuplexLifecycle => 12,
        }
    }

    fn secondaries(self) -> u16 {
        match self {
            Scenario::Duplex | Scenario::DuplexLifecycle => 1,
            _ => 0,
        }
    }

    /// The engine's configuration: relay's defaults, or duplex's (one secondary, reports on).
    pub fn config(self) -> Config {
        let secondaries = self.secondaries();
        Config {
            secondaries,
            reports: secondaries > 0,
            ..Config::default()
        }
    }
}

/// What the driver saw and did, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `Engine::handle` calls (timeouts included).
    pub events: u64,
    pub timeouts: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub connects: u64,
    pub shutdowns: u64,
    pub closes: u64,
    /// `PauseRead`, `ResumeRead`, `PauseAccept`, `ResumeAccept`.
    pub pauses: u64,
    pub reports: u64,
    /// Anything else (`Drained`, `Effect`): never expected here.
    pub other: u64,
}

impl Counts {
    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            events: self.events - earlier.events,
            timeouts: self.timeouts - earlier.timeouts,
            writes: self.writes - earlier.writes,
            write_bytes: self.write_bytes - earlier.write_bytes,
            connects: self.connects - earlier.connects,
            shutdowns: self.shutdowns - earlier.shutdowns,
            closes: self.closes - earlier.closes,
            pauses: self.pauses - earlier.pauses,
            reports: self.reports - earlier.reports,
            other: self.other - earlier.other,
        }
    }
}

/// A model of the io driver around one engine (see the module documentation).
pub struct Driver {
    pub engine: Engine,
    pub now: Instant,
    pub counts: Counts,
    /// Writes carried out during the last drain, to be reported flushed after it.
    flushes: VecDeque<(SockId, u64)>,
    /// Backends the engine asked to connect, to be answered `Connected`.
    connects: Vec<SockId>,
    /// The engine's contract, checked on every event and command (tests only).
    checker: Option<Box<(Checker, Relay)>>,
}

impl Driver {
    pub fn new(cfg: Config) -> Driver {
        Driver {
            engine: Engine::new(cfg).expect("a valid config"),
            now: Instant::ZERO,
            counts: Counts::default(),
            flushes: VecDeque::new(),
            connects: Vec::new(),
            checker: None,
        }
    }

    /// A driver that runs every event and command through `fanout_engine::contract`.
    pub fn checked(cfg: Config) -> Driver {
        let checker = Checker::new(&cfg);
        let pacing = Relay::new(&cfg, BULK as u64);
        Driver {
            checker: Some(Box::new((checker, pacing))),
            ..Driver::new(cfg)
        }
    }

    /// One event from the world, as the io driver's loop turn: passed deadlines first, then the
    /// event, then the `Flushed` of every write its commands asked for (and of any those ask for).
    pub fn feed(&mut self, event: Event) {
        self.now = self.now + TICK;
        while self.engine.poll_timeout().is_some_and(|at| at <= self.now) {
            self.counts.timeouts += 1;
            self.input(Event::Timeout);
        }
        self.input(event);
        while let Some((sock, bytes)) = self.flushes.pop_front() {
            self.now = self.now + TICK;
            self.input(Event::Flushed { sock, bytes });
        }
    }

    /// Accepts client `conn` and connects every backend its session opens.
    pub fn open(&mut self, conn: ConnId) {
        self.feed(Event::Accepted {
            conn,
            client: CLIENT_ADDR.to_string(),
        });
        // Answered in the order asked; `Connected` asks for no further connect in relay/duplex.
        for i in 0..self.connects.len() {
            let sock = self.connects[i];
            self.feed(Event::Connected { sock });
        }
        self.connects.clear();
    }

    /// `Engine::handle`, then every command carried out, in order.
    fn input(&mut self, event: Event) {
        self.counts.events += 1;
        if let Some(c) = &mut self.checker {
            c.0.event(self.now, &event)
                .unwrap_or_else(|v| panic!("{v}"));
        }
        self.engine.handle(self.now, event);
        while let Some(cmd) = self.engine.poll_command() {
            if let Some(c) = &mut self.checker {
                c.0.command(&cmd).unwrap_or_else(|v| panic!("{v}"));
            }
            let n = &mut self.counts;
            match cmd {
                Command::Write { sock, data } => {
                    n.writes += 1;
                    n.write_bytes += data.len() as u64;
                    self.flushes.push_back((sock, data.len() as u64));
                }
                Command::Connect { sock, .. } => {
                    n.connects += 1;
                    self.connects.push(sock);
                }
                Command::Shutdown { .. } => n.shutdowns += 1,
                Command::Close { sock } => {
                    n.closes += 1;
                    // What was queued for it is discarded with it.
                    self.flushes.retain(|&(s, _)| s != sock);
                }
                Command::PauseRead { .. }
                | Command::ResumeRead { .. }
                | Command::PauseAccept
                | Command::ResumeAccept => n.pauses += 1,
                Command::Report(_) => n.reports += 1,
                Command::Drained | Command::Effect { .. } => n.other += 1,
            }
        }
        if let Some(c) = &mut self.checker {
            let (checker, pacing) = &mut **c;
            checker
                .settled(&self.engine, pacing)
                .unwrap_or_else(|v| panic!("{v}"));
        }
    }

    /// With the contract checked: the run is over (every session ended), so nothing may be left.
    pub fn finish(&self) {
        assert!(
            self.engine.is_idle(),
            "the engine holds something: {:?}",
            self.engine
        );
        if let Some(c) = &self.checker {
            c.0.finish().unwrap_or_else(|v| panic!("{v}"));
        }
    }
}

/// Read data as the io driver makes it: split off a `BytesMut` and frozen (shared).
fn payload(len: usize, seed: u8) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    buf.extend((0..len).map(|i| seed.wrapping_add((i % 251) as u8)));
    buf.split().freeze()
}

/// A scenario ready to step: its engine, its sessions accepted and connected.
pub struct Run {
    pub scenario: Scenario,
    pub driver: Driver,
    /// The long-lived sessions are `1..=sessions`; lifecycle connections count up after them.
    sessions: u64,
    next: u64,
    next_conn: u64,
    request: Bytes,
    response: Bytes,
    /// The same bytes as `response`, in a buffer of their own (a secondary's own read).
    secondary_response: Bytes,
    bulk: Bytes,
}

impl Run {
    pub fn new(scenario: Scenario, sessions: u64) -> Run {
        Run::with(scenario, sessions, Driver::new(scenario.config()))
    }

    /// The same run with every event and command checked against the engine's contract.
    pub fn checked(scenario: Scenario, sessions: u64) -> Run {
        Run::with(scenario, sessions, Driver::checked(scenario.config()))
    }

    fn with(scenario: Scenario, sessions: u64, mut driver: Driver) -> Run {
        assert!(sessions > 0);
        for conn in 1..=sessions {
            driver.open(ConnId(conn));
        }
        let bulk = if scenario == Scenario::RelayBulk {
            payload(BULK, 3)
        } else {
            Bytes::new()
        };
        Run {
            scenario,
            driver,
            sessions,
            next: 0,
            next_conn: sessions + 1,
            request: payload(REQUEST, 1),
            response: payload(RESPONSE, 2),
            secondary_response: payload(RESPONSE, 2),
            bulk,
        }
    }

    /// One unit of the scenario's traffic ([`Scenario::unit`]).
    pub fn step(&mut self) {
        match self.scenario {
            Scenario::Relay | Scenario::Duplex => {
                let conn = self.next_session();
                self.exchange(conn);
            }
            Scenario::RelayBulk => {
                let conn = self.next_session();
                self.driver.feed(Event::Read {
                    sock: SockId::backend(conn, PRIMARY),
                    data: self.bulk.clone(),
                });
            }
            Scenario::RelayLifecycle | Scenario::DuplexLifecycle => {
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                self.driver.open(conn);
                self.exchange(conn);
                self.close(conn);
            }
        }
    }

    /// Ends every long-lived session as a lifecycle step ends its connection: EOF from the
    /// client, then from each backend.
    pub fn close_all(&mut self) {
        for conn in 1..=self.sessions {
            self.close(ConnId(conn));
        }
    }

    fn next_session(&mut self) -> ConnId {
        self.next = self.next % self.sessions + 1;
        ConnId(self.next)
    }

    /// One keep-alive message on `conn`: the request in, the response out.
    fn exchange(&mut self, conn: ConnId) {
        let d = &mut self.driver;
        d.feed(Event::Read {
            sock: SockId::client(conn),
            data: self.request.clone(),
        });
        d.feed(Event::Read {
            sock: SockId::backend(conn, PRIMARY),
            data: self.response.clone(),
        });
        if self.scenario.secondaries() > 0 {
            d.feed(Event::Read {
                sock: SockId::backend(conn, SECONDARY),
                data: self.secondary_response.clone(),
            });
        }
    }

    fn close(&mut self, conn: ConnId) {
        let d = &mut self.driver;
        d.feed(Event::ReadClosed {
            sock: SockId::client(conn),
        });
        for b in 0..=self.scenario.secondaries() {
            d.feed(Event::ReadClosed {
                sock: SockId::backend(conn, BackendId(b)),
            });
        }
    }
}
