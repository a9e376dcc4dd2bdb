//! A model driver for fuzzing: it plays every socket and the clock, feeds the engine only what a
//! real driver could observe, carries out every command on its model of the sockets, and panics
//! the moment the engine breaks a promise of its contract (`engine/src/lib.rs`).
//!
//! What it checks, after every command or input:
//!
//! - **Commands name known sockets**: `Connect` only for an accepted session's configured backend,
//!   once; `Write`, `Shutdown`, `PauseRead`, `ResumeRead` only on an open socket; nothing after
//!   `Close` or after the driver reported the socket failed.
//! - **Writes**: never empty, never before connect or after `Shutdown`, and byte for byte the
//!   stream they come from, in order (a backend gets exactly the client's bytes; the client
//!   exactly the primary's). Read data is a keyed pattern so any loss, duplication or reordering
//!   shows.
//! - **FIN**: `Shutdown` only with nothing queued, and only once the whole source stream went out.
//! - **Orderly close**: the engine closes a socket that has not finished both ways (our FIN sent
//!   with nothing queued, the peer's EOF read) only when a deadline, a failure or a refused accept
//!   forces it, or a client read pushes a secondary past its budget. A response's tail is never
//!   dropped on the floor.
//! - **Limits**: a secondary never holds more than its budget; the primary and client never more
//!   than the high-water mark plus one read. A reader is paused while its target is above the high
//!   mark and resumed once it is at or below the low mark.
//! - **Accounting**: the engine's unflushed bytes, open clients and known sockets agree with the
//!   driver's; reports count the bytes each backend sent and was sent.
//! - **No leaks**: [`Driver::finish`] lets every peer finish; the engine must then be idle without
//!   waiting for any deadline, and still after a day of virtual time; every socket must be
//!   closed, every served session reported, and a requested drain finished.
//!
//! This is deliberately a separate, leaner model from `engine/tests/support` (a test module, not
//! importable): that one records streams for assertions in hand-written tests; this one checks
//! streams against a pattern so it stays fast on long fuzz inputs.

use fanout_engine::{
    BackendId, Bytes, Command, Config, ConnId, Engine, Event, Failure, Instant, Peer,
    SessionReport, SockId,
};
use std::collections::BTreeMap;
use std::time::Duration;

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
        }
    }

    fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// A driver would read from it: open, not paused, no EOF yet.
    fn readable(&self) -> bool {
        self.is_open() && !self.paused && !self.read_closed
    }
}

/// The byte at `offset` of the stream `sock`'s peer sends. Backends of a session send the same
/// response except backend 2, which differs from offset 100 on, so duplex comparisons see both
/// matches and differences.
pub fn pattern(sock: SockId, offset: u64) -> u8 {
    let (stream, salt) = match sock.peer {
        Peer::Client => (sock.conn.0 * 2, 0),
        Peer::Backend(b) => (
            sock.conn.0 * 2 + 1,
            if b.0 == 2 && offset >= 100 { 0x5a } else { 0 },
        ),
    };
    let x = (stream << 40 ^ offset).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) ^ salt
}

/// Which stream the engine writes to `sock`: the client's to a backend, the primary's to the
/// client.
fn source(sock: SockId) -> SockId {
    match sock.peer {
        Peer::Client => SockId::backend(sock.conn, BackendId::PRIMARY),
        Peer::Backend(_) => SockId::client(sock.conn),
    }
}

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

/// The model driver. See the [module documentation](self).
#[derive(Debug)]
pub struct Driver {
    engine: Engine,
    now: Instant,
    socks: BTreeMap<SockId, Sock>,
    /// The last `ConnId` handed out (they count up from 1, never reused).
    last_conn: u64,
    /// Sessions the engine took (asked to connect their primary).
    served: Vec<ConnId>,
    reports: BTreeMap<ConnId, SessionReport>,
    accept_paused: bool,
    drain_requested: bool,
    drained: bool,
    /// What the event being handled allows the engine to close abruptly.
    forcing: Forcing,
}

/// Which sockets the event being handled may close before they finished both ways.
#[derive(Debug, Clone, Copy)]
enum Forcing {
    None,
    Secondaries,
    Any,
}

impl Driver {
    pub fn new(cfg: Config) -> Self {
        Driver::with_engine(Engine::new(cfg).expect("the fuzz config is valid"))
    }

    /// Drives an engine the caller built (the mutant self-test switches a deliberate bug on).
    pub fn with_engine(engine: Engine) -> Self {
        Driver {
            engine,
            now: Instant::ZERO,
            socks: BTreeMap::new(),
            last_conn: 0,
            served: Vec::new(),
            reports: BTreeMap::new(),
            accept_paused: false,
            drain_requested: false,
            drained: false,
            forcing: Forcing::None,
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
        self.model(sock).phase = Phase::Open;
        self.handle(Event::Connected { sock });
    }

    /// Fails a pending connect. Ignored unless `sock` is connecting.
    pub fn connect_failed(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Connecting) {
            return;
        }
        self.model(sock).phase = Phase::Closed;
        self.handle(Event::ConnectFailed { sock, reason });
    }

    /// Reads `len` bytes (1..=MAX_READ) from `sock`'s peer. Ignored unless a driver would read it.
    pub fn read(&mut self, sock: SockId, len: u64) {
        if !self.socks.get(&sock).is_some_and(Sock::readable) {
            return;
        }
        let len = len.clamp(1, MAX_READ);
        let m = self.model(sock);
        let start = m.read;
        m.read += len;
        let data: Vec<u8> = (start..start + len).map(|o| pattern(sock, o)).collect();
        self.handle(Event::Read {
            sock,
            data: Bytes::from(data),
        });
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
        self.model(sock).read_closed = true;
        self.handle(Event::ReadClosed { sock });
    }

    /// An established socket fails; the driver drops it. Ignored unless `sock` is open.
    pub fn fail(&mut self, sock: SockId, reason: Failure) {
        if self.phase(sock) != Some(Phase::Open) {
            return;
        }
        let m = self.model(sock);
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

    /// Stop accepting and finish the open sessions.
    pub fn drain(&mut self) {
        self.drain_requested = true;
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

    /// The liveness phase: every pending connect succeeds, every peer finishes (EOF on every
    /// socket once its queue is flushed); the engine must then hold nothing, and still nothing
    /// once time passed beyond every deadline, and every promise about the whole run must hold. Returns every
    /// session report, in session order.
    pub fn finish(mut self) -> Vec<SessionReport> {
        for _ in 0..4 {
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
        // Every peer finished and every byte was flushed: every socket finished both ways, so
        // every session ends by itself, without waiting for a deadline.
        assert!(
            self.engine.is_idle(),
            "engine holds state after every peer finished and every queue drained: {:?}",
            self.engine
        );
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
            for conn in &self.served {
                assert!(self.reports.contains_key(conn), "no report for {conn:?}");
            }
        }
        assert_eq!(
            self.drained, self.drain_requested,
            "a requested drain must finish"
        );
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

    fn model(&mut self, sock: SockId) -> &mut Sock {
        self.socks
            .get_mut(&sock)
            .unwrap_or_else(|| panic!("the driver has no socket {sock}"))
    }

    // ---- the engine boundary ----------------------------------------------------------------

    /// Feeds `event`, carries out every command it caused, then checks the invariants.
    fn handle(&mut self, event: Event) {
        // Only a deadline, a failure or a refused accept may cut a socket off; otherwise a socket
        // closes once it finished both ways, or (a secondary) when a client read overran its budget.
        self.forcing = match &event {
            Event::Timeout
            | Event::Failed { .. }
            | Event::ConnectFailed { .. }
            | Event::Accepted { .. } => Forcing::Any,
            Event::Read { sock, .. } if sock.peer == Peer::Client => Forcing::Secondaries,
            _ => Forcing::None,
        };
        self.engine.handle(self.now, event);
        while let Some(cmd) = self.engine.poll_command() {
            self.apply(cmd);
        }
        self.check();
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
                let Peer::Backend(b) = sock.peer else {
                    panic!("connect to a client socket {sock}");
                };
                assert_eq!(
                    upstream.0, b.0,
                    "relay/duplex connect backend i to upstream i"
                );
                assert!(
                    b.0 <= self.config().secondaries,
                    "connect to unconfigured backend {sock}"
                );
                assert!(
                    self.socks.contains_key(&SockId::client(sock.conn)),
                    "connect for unknown session {sock}"
                );
                assert!(!self.socks.contains_key(&sock), "connect twice: {sock}");
                self.socks.insert(sock, Sock::new(Phase::Connecting));
                if b.is_primary() {
                    self.served.push(sock.conn);
                }
            }
            Command::Write { sock, data } => {
                let from = self.socks.get(&source(sock)).map_or(0, |m| m.read);
                let m = self.open_for_command(sock, "write");
                assert!(!m.shut, "write after shutdown: {sock}");
                assert!(!data.is_empty(), "empty write: {sock}");
                let start = m.written;
                m.written += data.len() as u64;
                m.queued += data.len() as u64;
                assert!(
                    m.written <= from,
                    "{sock} was written {} bytes, its source sent only {from}",
                    m.written
                );
                let src = source(sock);
                if let Some(i) =
                    (0..data.len()).find(|&i| data[i] != pattern(src, start + i as u64))
                {
                    panic!(
                        "{sock} got the wrong byte at offset {}: not what {src} sent",
                        start + i as u64
                    );
                }
            }
            Command::Shutdown { sock } => {
                let from = self.socks.get(&source(sock)).map_or(0, |m| m.read);
                let m = self.open_for_command(sock, "shutdown");
                assert!(!m.shut, "shutdown twice: {sock}");
                assert_eq!(m.queued, 0, "shutdown with bytes still queued: {sock}");
                assert_eq!(
                    m.written, from,
                    "FIN to {sock} before all of its source's bytes"
                );
                m.shut = true;
            }
            Command::Close { sock } => {
                let m = self
                    .socks
                    .get_mut(&sock)
                    .unwrap_or_else(|| panic!("close of unknown socket {sock}"));
                assert!(m.phase != Phase::Closed, "close of closed socket {sock}");
                let secondary = matches!(sock.peer, Peer::Backend(b) if !b.is_primary());
                let forced = match self.forcing {
                    Forcing::Any => true,
                    Forcing::Secondaries => secondary,
                    Forcing::None => false,
                };
                assert!(
                    forced || (m.shut && m.read_closed && m.queued == 0),
                    "{sock} closed before it finished both ways, with nothing forcing it: {m:?}"
                );
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
            Command::Effect { .. } => panic!("relay and duplex request no effects"),
        }
    }

    fn check_report(&mut self, report: SessionReport) {
        let conn = report.conn;
        assert!(self.config().reports, "report with reports off");
        assert!(self.served.contains(&conn), "report for unserved {conn:?}");
        let secondaries = usize::from(self.config().secondaries);
        assert_eq!(report.backends.len(), 1 + secondaries, "{conn:?}");
        let mut primary_received = None;
        for (i, b) in report.backends.iter().enumerate() {
            assert_eq!(
                usize::from(b.backend.0),
                i,
                "{conn:?}: backends out of order"
            );
            let sock = SockId::backend(conn, b.backend);
            let m = self.socks.get(&sock).expect("every backend was connected");
            assert_eq!(m.phase, Phase::Closed, "report while {sock} is open");
            assert_eq!(b.bytes_received, m.read, "{sock}: bytes received");
            assert_eq!(b.bytes_sent, m.flushed, "{sock}: bytes sent");
            if i == 0 {
                assert_eq!(b.matches_primary, None);
                primary_received = Some(b.bytes_received);
            } else if b.matches_primary == Some(true) {
                assert_eq!(
                    Some(b.bytes_received),
                    primary_received,
                    "{sock} matches the primary with another length"
                );
                assert!(
                    b.backend.0 != 2 || b.bytes_received <= 100,
                    "{sock} matches the primary though its bytes differ"
                );
            }
        }
        let client = &self.socks[&SockId::client(conn)];
        assert_eq!(
            client.phase,
            Phase::Closed,
            "report while the client is open"
        );
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
            let limit = match sock.peer {
                Peer::Backend(b) if !b.is_primary() => cfg.secondary_budget,
                _ => cfg.high_water + MAX_READ,
            };
            assert!(
                n <= limit,
                "{sock} holds {n} unflushed bytes, limit {limit}"
            );
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
        for (&sock, m) in &self.socks {
            assert_eq!(
                self.engine.knows(sock),
                m.phase != Phase::Closed,
                "{sock}: the engine and the driver disagree whether it is open ({m:?})"
            );
            // Backpressure: the client is paused by the primary's queue and vice versa.
            let is_reader =
                matches!(sock.peer, Peer::Client) || sock.peer == Peer::Backend(BackendId::PRIMARY);
            if is_reader && m.is_open() && !m.read_closed {
                let target = unflushed.get(&source(sock)).copied().unwrap_or(0);
                if m.paused {
                    assert!(
                        target > cfg.low_water,
                        "{sock} stays paused with {target} bytes queued to its target"
                    );
                } else {
                    assert!(
                        target <= cfg.high_water,
                        "{sock} is not paused with {target} bytes queued to its target"
                    );
                }
            }
        }
        let open_clients = self
            .socks
            .iter()
            .filter(|(s, m)| s.peer == Peer::Client && m.phase != Phase::Closed)
            .count();
        assert_eq!(self.engine.open_clients(), open_clients, "open clients");
        if self.drained {
            assert_eq!(self.engine.session_count(), 0, "drained with sessions left");
        }
    }
}
