//! The driver side of the engine's contract, checked: one [`Checker`] that every harness runs
//! (the fuzzer's model driver, the simulator's turmoil driver, capture replay and the engine's
//! own test support), so a promise of `lib.rs` broken under any of them is caught by the same
//! rule with the same words.
//!
//! The checker sees what a driver sees and nothing else: every event it feeds
//! ([`Checker::event`]), every command it carries out ([`Checker::command`]) and, once the
//! commands of an input are drained, the engine's getters ([`Checker::settled`]). From those alone
//! it keeps its own view of every socket ([`Sock`]) and checks, each as one [`Rule`]:
//!
//! - **Known sockets only** ([`Rule::UnknownSocket`], [`Rule::ClosedSocket`], [`Rule::Connect`]):
//!   `Connect` once per backend of an accepted session; every other socket command only on a
//!   socket the driver holds, never after `Close` or after the driver reported it failed.
//! - **Writes** ([`Rule::Write`], [`Rule::WriteAfterFin`]): never empty, never before the
//!   connect completed, never after the socket's `Shutdown`.
//! - **FIN only over an empty queue** ([`Rule::FinOverQueue`], [`Rule::FinTwice`]).
//! - **Pause/resume pairing** ([`Rule::PausePairing`], [`Rule::AcceptPairing`]): they
//!   alternate; no pause after EOF; accepting is not resumed during a drain.
//! - **Limits and water marks with their hysteresis** ([`Rule::Limit`], [`Rule::WaterMarks`]):
//!   what decides a reader's pause is interceptor knowledge, given by a [`Pacing`] ([`Relay`]
//!   for relay and duplex): a reader is paused while its target's backlog is above
//!   `high_water` and reads again only once it is at or below `low_water`.
//! - **Accounting** ([`Rule::Accounting`]): the engine's unflushed bytes, open clients and
//!   known sockets agree with what the driver was told.
//! - **Timers** ([`Rule::Timer`]): `now` never goes backwards, and a `Timeout` is fed only
//!   with cause (the engine asked for a deadline) and no earlier than that deadline.
//! - **Reports** ([`Rule::Report`]): only with reports on, only once the session's sockets are
//!   all closed, with the byte counts the driver saw, each session once.
//! - **Drain and effects** ([`Rule::Drain`], [`Rule::Effect`]).
//! - **No leaks** ([`Checker::finish`], [`Rule::Leak`]): at the end every socket is closed,
//!   every session the engine took on was reported, a requested drain finished.
//!
//! What the streams must *contain* (which bytes, which FIN when, which outcome) depends on the
//! interceptor and is left to each harness's own model. Pure code: no I/O, no clock,
//! deterministic; nothing in the `fanout` binary's event loop calls it.

use crate::command::Command;
use crate::config::Config;
use crate::effect::EffectId;
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{BackendId, ConnId, Peer, SockId};
use crate::intercept::Interceptor;
use crate::report::{Role, SessionReport};
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One promise of the contract. A [`Violation`] names the rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// A command names a socket the driver never had, or a session it never accepted.
    UnknownSocket,
    /// A command names a socket that is not open: after `Close`, after the driver reported it
    /// failed, or (any command but `Write` and `Close`) while it is still connecting.
    ClosedSocket,
    /// `Connect` for a client socket, or twice for one backend.
    Connect,
    /// `Write` of nothing, or before the socket's connect completed.
    Write,
    /// `Write` after the socket's `Shutdown`.
    WriteAfterFin,
    /// `Shutdown` while written bytes are not yet flushed.
    FinOverQueue,
    /// `Shutdown` twice.
    FinTwice,
    /// `PauseRead` twice or after EOF; `ResumeRead` without a pause.
    PausePairing,
    /// `PauseAccept` twice; `ResumeAccept` without a pause or during a drain.
    AcceptPairing,
    /// A reader paused at or below the low mark, or reading above the high mark.
    WaterMarks,
    /// A socket holds more unflushed bytes than its limit.
    Limit,
    /// The engine and the driver disagree on unflushed bytes, open clients or open sockets.
    Accounting,
    /// Time went backwards, or `Timeout` was fed with no deadline or before it.
    Timer,
    /// A report with reports off, twice, while a socket is open, or with wrong byte counts.
    Report,
    /// `Drained` without a drain, twice, or with sessions left; a session cut `drain-timeout`
    /// before the drain's deadline.
    Drain,
    /// An effect for an unknown session, or an effect id twice.
    Effect,
    /// At the end: a socket left open, a session unreported, a drain unfinished.
    Leak,
    /// `Spliced` from a socket that is not open, at EOF or paused, or into a destination that is
    /// not open, shut down, or has bytes of the engine's unflushed (spliced bytes would overtake
    /// them).
    Splice,
}

/// A broken promise: which rule, and what happened in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "contract ({:?}): {}", self.rule, self.what)
    }
}

impl std::error::Error for Violation {}

fn fail(rule: Rule, what: String) -> Result<(), Violation> {
    Err(Violation { rule, what })
}

/// Where a socket is in its life, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The engine asked for the connection; the driver has not answered.
    Connecting,
    Open,
    /// Closed by the engine (`Close`) or dropped by the driver (a failure).
    Closed,
}

/// The driver's view of one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sock {
    pub phase: Phase,
    /// Bytes read from the peer and fed to the engine.
    pub read: u64,
    /// Bytes the engine wrote to it.
    pub written: u64,
    /// Written but not yet flushed.
    pub queued: u64,
    /// Flushed (`Event::Flushed`).
    pub flushed: u64,
    /// The engine sent our FIN.
    pub shut: bool,
    /// The peer's EOF was fed (`Event::ReadClosed`).
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

/// Which reader each socket's backlog paces, and how much a socket may hold: knowledge of the
/// interceptor's routes that the water-mark and limit rules need.
pub trait Pacing {
    /// The backlog that decides whether reader `sock` must be paused (above the high mark) or may
    /// read (at or below the low mark), given each socket's backlog; `None` if nothing paces it.
    fn target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64>;

    /// Bytes for `sock` the engine holds back (behind a pending effect) on top of its unflushed
    /// ones; they count against the water marks.
    fn gated(&self, sock: SockId) -> u64 {
        let _ = sock;
        0
    }

    /// The most unflushed bytes `sock` (of role `role`) may hold; `None`: no limit checked here.
    fn limit(&self, sock: SockId, role: Option<Role>) -> Option<u64> {
        let _ = (sock, role);
        None
    }
}

/// No pacing known: only pairing is checked, not the water marks (an interceptor whose routes
/// the harness does not model).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpaced;

impl Pacing for Unpaced {
    fn target(&self, _: SockId, _: &dyn Fn(SockId) -> u64) -> Option<u64> {
        None
    }
}

/// Relay and duplex (`Passthrough`): the client is paced by the primary's backlog and the primary
/// by the client's; a secondary paces nobody and holds at most its budget; the client and the
/// primary hold at most the high-water mark plus one read (`max_read`, the driver's largest).
#[derive(Debug, Clone)]
pub struct Relay {
    pub high_water: u64,
    pub secondary_budget: u64,
    pub max_read: u64,
}

impl Relay {
    pub fn new(cfg: &Config, max_read: u64) -> Self {
        Relay {
            high_water: cfg.high_water,
            secondary_budget: cfg.secondary_budget,
            max_read,
        }
    }
}

impl Pacing for Relay {
    fn target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64> {
        match sock.peer {
            Peer::Client => Some(backlog(SockId::backend(sock.conn, BackendId::PRIMARY))),
            Peer::Backend(b) if b.is_primary() => Some(backlog(SockId::client(sock.conn))),
            Peer::Backend(_) => None,
        }
    }

    fn limit(&self, sock: SockId, role: Option<Role>) -> Option<u64> {
        Some(match (sock.peer, role) {
            (Peer::Backend(_), Some(Role::Secondary)) => self.secondary_budget,
            _ => self.high_water + self.max_read,
        })
    }
}

/// The checker. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Checker {
    high_water: u64,
    low_water: u64,
    reports_on: bool,
    socks: Socks,
    /// The sockets not closed, and those closed by the event being handled: what the checks
    /// after each input look at, so their cost does not grow with the run.
    live: BTreeSet<SockId>,
    closed_now: Vec<SockId>,
    /// Sessions the engine took on (kept past their accept) and not yet reported.
    unreported: BTreeSet<ConnId>,
    reported: BTreeSet<ConnId>,
    /// Every effect id ever requested.
    effects_seen: BTreeSet<EffectId>,
    accept_paused: bool,
    drains: u32,
    drained: bool,
    /// How long a drain may take (`Config::drain_timeout`), and when the running drain's
    /// deadline is: the first `Drain` plus that, or a second `Drain`'s instant.
    drain_timeout: std::time::Duration,
    drain_deadline: Option<Instant>,
    /// The instant of the last event, and the deadline the engine gave after it.
    now: Option<Instant>,
    deadline: Option<Instant>,
    /// The session accepted by the event being handled, if any.
    accepting: Option<ConnId>,
    /// Readers paused or resumed by the commands of the event being handled.
    toggled: BTreeSet<SockId>,
}

impl Checker {
    /// A checker for an engine built with `cfg`, before its first event.
    pub fn new(cfg: &Config) -> Self {
        Checker {
            high_water: cfg.high_water,
            low_water: cfg.low_water,
            reports_on: cfg.reports,
            socks: BTreeMap::new(),
            live: BTreeSet::new(),
            closed_now: Vec::new(),
            unreported: BTreeSet::new(),
            reported: BTreeSet::new(),
            effects_seen: BTreeSet::new(),
            accept_paused: false,
            drains: 0,
            drained: false,
            drain_timeout: cfg.drain_timeout,
            drain_deadline: None,
            now: None,
            deadline: None,
            accepting: None,
            toggled: BTreeSet::new(),
        }
    }

    /// The driver's view of every socket it had.
    pub fn socks(&self) -> &Socks {
        &self.socks
    }

    pub fn sock(&self, sock: SockId) -> Option<&Sock> {
        self.socks.get(&sock)
    }

    /// Drains requested so far (a second one ends the drain at once).
    pub fn drains(&self) -> u32 {
        self.drains
    }

    /// Whether the engine said `Drained`.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Whether accepting is paused by the engine.
    pub fn accept_paused(&self) -> bool {
        self.accept_paused
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// The driver feeds `event` at `now` (call it before or after `Engine::handle`, but before
    /// carrying out the commands it caused). Checks time and timers; updates the view of the
    /// socket it names. Events for sockets already closed change nothing (the engine ignores
    /// them too).
    pub fn event(&mut self, now: Instant, event: &Event) -> Result<(), Violation> {
        let last = self.now.replace(now.max(self.now.unwrap_or(now)));
        self.accepting = None;
        self.toggled.clear();
        self.closed_now.clear();
        if let Some(last) = last.filter(|&last| now < last) {
            return fail(
                Rule::Timer,
                format!("time went backwards: {now:?} after {last:?}"),
            );
        }
        match event {
            Event::Accepted { conn, .. } => {
                let sock = SockId::client(*conn);
                if let std::collections::btree_map::Entry::Vacant(e) = self.socks.entry(sock) {
                    e.insert(Sock::new(Phase::Open));
                    self.live.insert(sock);
                    self.accepting = Some(*conn);
                }
            }
            Event::Connected { sock } => {
                if let Some(m) = self.socks.get_mut(sock) {
                    if m.phase == Phase::Connecting {
                        m.phase = Phase::Open;
                    }
                }
            }
            Event::ConnectFailed { sock, .. } => {
                if self.phase(*sock) == Some(Phase::Connecting) {
                    self.close(*sock);
                }
            }
            Event::Read { sock, data } => {
                if let Some(m) = self.open_mut(*sock) {
                    m.read += data.len() as u64;
                }
            }
            Event::ReadClosed { sock } => {
                if let Some(m) = self.open_mut(*sock) {
                    m.read_closed = true;
                }
            }
            Event::Flushed { sock, bytes } => {
                if let Some(m) = self.open_mut(*sock) {
                    let n = (*bytes).min(m.queued);
                    m.queued -= n;
                    m.flushed += n;
                }
            }
            Event::Failed { sock, .. } => {
                if self.phase(*sock).is_some_and(|p| p != Phase::Closed) {
                    self.close(*sock);
                }
            }
            Event::Timeout => match self.deadline {
                None => {
                    return fail(
                        Rule::Timer,
                        format!("Timeout fed at {now:?} with no deadline pending"),
                    )
                }
                Some(at) if now < at => {
                    return fail(
                        Rule::Timer,
                        format!("Timeout fed at {now:?}, before the deadline {at:?}"),
                    )
                }
                Some(_) => {}
            },
            Event::Drain => {
                self.drains += 1;
                self.drain_deadline = Some(match self.drain_deadline {
                    None => now + self.drain_timeout,
                    Some(_) => now,
                });
            }
            Event::EffectDone { .. } => {}
            Event::Spliced { sock, bytes } => self.spliced(*sock, *bytes)?,
        }
        Ok(())
    }

    /// `bytes` moved from `sock` to the one socket a splice grant can name (a grant needs a
    /// session with one backend: backend 0 for the client, the client for it): both counted as
    /// if read and flushed.
    fn spliced(&mut self, sock: SockId, bytes: u64) -> Result<(), Violation> {
        let dest = match sock.peer {
            Peer::Client => SockId::backend(sock.conn, BackendId(0)),
            Peer::Backend(_) => SockId::client(sock.conn),
        };
        let from_ok = self
            .sock(sock)
            .is_some_and(|m| m.phase == Phase::Open && !m.read_closed && !m.paused);
        let to_ok = self
            .sock(dest)
            .is_some_and(|m| m.phase == Phase::Open && m.queued == 0 && !m.shut);
        if !from_ok || !to_ok {
            return fail(
                Rule::Splice,
                format!("{bytes} bytes spliced from {sock} to {dest} without a grant"),
            );
        }
        if let Some(m) = self.open_mut(sock) {
            m.read += bytes;
        }
        if let Some(m) = self.open_mut(dest) {
            m.written += bytes;
            m.flushed += bytes;
        }
        Ok(())
    }

    fn phase(&self, sock: SockId) -> Option<Phase> {
        self.socks.get(&sock).map(|m| m.phase)
    }

    /// The socket is gone: closed by the engine or dropped by the driver.
    fn close(&mut self, sock: SockId) {
        if let Some(m) = self.socks.get_mut(&sock) {
            m.phase = Phase::Closed;
            m.queued = 0;
            self.live.remove(&sock);
            self.closed_now.push(sock);
        }
    }

    fn open_mut(&mut self, sock: SockId) -> Option<&mut Sock> {
        self.socks.get_mut(&sock).filter(|m| m.is_open())
    }

    // ---- outputs ---------------------------------------------------------------------------

    /// Checks and records one command the engine emitted ([`Checker::check_command`], then
    /// [`Checker::apply_command`]).
    pub fn command(&mut self, cmd: &Command) -> Result<(), Violation> {
        self.check_command(cmd)?;
        self.apply_command(cmd);
        Ok(())
    }

    /// Checks `cmd` against the view before it; changes nothing (a harness's own model may look
    /// at the view before the command is applied).
    pub fn check_command(&self, cmd: &Command) -> Result<(), Violation> {
        match cmd {
            Command::Connect { sock, .. } => {
                if sock.peer == Peer::Client {
                    return fail(Rule::Connect, format!("connect to a client socket {sock}"));
                }
                if !self.socks.contains_key(&SockId::client(sock.conn)) {
                    return fail(
                        Rule::UnknownSocket,
                        format!("connect for a session never accepted: {sock}"),
                    );
                }
                if self.socks.contains_key(sock) {
                    return fail(Rule::Connect, format!("connect twice: {sock}"));
                }
            }
            Command::Write { sock, data } => {
                let m = self.named(*sock, "Write", true)?;
                if m.phase == Phase::Connecting {
                    return fail(Rule::Write, format!("write before connect: {sock}"));
                }
                if m.shut {
                    return fail(Rule::WriteAfterFin, format!("write after FIN: {sock}"));
                }
                if data.is_empty() {
                    return fail(Rule::Write, format!("empty write: {sock}"));
                }
            }
            Command::Shutdown { sock } => {
                let m = self.named(*sock, "Shutdown", false)?;
                if m.shut {
                    return fail(Rule::FinTwice, format!("shutdown twice: {sock}"));
                }
                if m.queued > 0 {
                    return fail(
                        Rule::FinOverQueue,
                        format!("FIN with {} bytes still queued: {sock}", m.queued),
                    );
                }
            }
            Command::Close { sock } => {
                self.named(*sock, "Close", true)?;
            }
            Command::PauseRead { sock } => {
                let m = self.named(*sock, "PauseRead", false)?;
                if m.paused {
                    return fail(Rule::PausePairing, format!("pause twice: {sock}"));
                }
                if m.read_closed {
                    return fail(Rule::PausePairing, format!("pause after EOF: {sock}"));
                }
            }
            Command::ResumeRead { sock } => {
                let m = self.named(*sock, "ResumeRead", false)?;
                if !m.paused {
                    return fail(Rule::PausePairing, format!("resume without pause: {sock}"));
                }
            }
            Command::PauseAccept => {
                if self.accept_paused {
                    return fail(Rule::AcceptPairing, "pause accept twice".into());
                }
            }
            Command::ResumeAccept => {
                if !self.accept_paused {
                    return fail(Rule::AcceptPairing, "resume accept without pause".into());
                }
                if self.drains > 0 {
                    return fail(Rule::AcceptPairing, "resume accept while draining".into());
                }
            }
            Command::Report(report) => self.check_report(report)?,
            Command::Drained => {
                if self.drains == 0 {
                    return fail(Rule::Drain, "drained without a drain".into());
                }
                if self.drained {
                    return fail(Rule::Drain, "drained twice".into());
                }
            }
            Command::Effect { conn, id, .. } => {
                if !self.socks.contains_key(&SockId::client(*conn)) {
                    return fail(
                        Rule::UnknownSocket,
                        format!("effect for a session never accepted: {conn:?}"),
                    );
                }
                if self.effects_seen.contains(id) {
                    return fail(Rule::Effect, format!("effect {id:?} requested twice"));
                }
            }
        }
        Ok(())
    }

    /// The socket a command names: known, not closed, and open unless `connecting_ok`.
    fn named(&self, sock: SockId, what: &str, connecting_ok: bool) -> Result<&Sock, Violation> {
        let Some(m) = self.socks.get(&sock) else {
            return Err(Violation {
                rule: Rule::UnknownSocket,
                what: format!("{what} names {sock}, which the driver never had"),
            });
        };
        if m.phase == Phase::Closed || (m.phase == Phase::Connecting && !connecting_ok) {
            return Err(Violation {
                rule: Rule::ClosedSocket,
                what: format!("{what} names {sock}, which is {:?}", m.phase),
            });
        }
        Ok(m)
    }

    fn check_report(&self, report: &SessionReport) -> Result<(), Violation> {
        let conn = report.conn;
        if !self.reports_on {
            return fail(
                Rule::Report,
                format!("report for {conn:?} with reports off"),
            );
        }
        if self.reported.contains(&conn) {
            return fail(Rule::Report, format!("{conn:?} reported twice"));
        }
        let client = SockId::client(conn);
        match self.socks.get(&client) {
            None => return fail(Rule::Report, format!("report for {conn:?}, never accepted")),
            Some(m) if m.phase != Phase::Closed => {
                return fail(Rule::Report, format!("report while {client} is open"))
            }
            Some(_) => {}
        }
        for b in &report.backends {
            let sock = SockId::backend(conn, b.backend);
            let Some(m) = self.socks.get(&sock) else {
                return fail(
                    Rule::Report,
                    format!("report lists {sock}, never connected"),
                );
            };
            if m.phase != Phase::Closed {
                return fail(Rule::Report, format!("report while {sock} is open"));
            }
            if (b.bytes_received, b.bytes_sent) != (m.read, m.flushed) {
                return fail(
                    Rule::Report,
                    format!(
                        "{sock}: the report counts {} bytes received and {} sent, the driver \
                         read {} and flushed {}",
                        b.bytes_received, b.bytes_sent, m.read, m.flushed
                    ),
                );
            }
        }
        if let Some((sock, _)) = self.socks_of(conn).find(|(_, m)| m.phase != Phase::Closed) {
            return fail(Rule::Report, format!("report while {sock} is open"));
        }
        let cut = report
            .backends
            .iter()
            .any(|b| b.outcome == crate::report::Outcome::DrainTimeout);
        let due = self.drain_deadline.filter(|&at| self.now >= Some(at));
        if cut && due.is_none() {
            return fail(
                Rule::Drain,
                format!(
                    "{conn:?} cut drain-timeout at {:?}, before the drain's deadline {:?}",
                    self.now, self.drain_deadline
                ),
            );
        }
        Ok(())
    }

    fn socks_of(&self, conn: ConnId) -> impl Iterator<Item = (&SockId, &Sock)> {
        self.socks
            .range(SockId::client(conn)..=SockId::backend(conn, BackendId(u16::MAX)))
    }

    /// Records `cmd` (checked or not) in the view.
    pub fn apply_command(&mut self, cmd: &Command) {
        match cmd {
            Command::Connect { sock, .. } => {
                if let std::collections::btree_map::Entry::Vacant(e) = self.socks.entry(*sock) {
                    e.insert(Sock::new(Phase::Connecting));
                    self.live.insert(*sock);
                }
            }
            Command::Write { sock, data } => {
                if let Some(m) = self.socks.get_mut(sock) {
                    m.written += data.len() as u64;
                    m.queued += data.len() as u64;
                }
            }
            Command::Shutdown { sock } => {
                if let Some(m) = self.socks.get_mut(sock) {
                    m.shut = true;
                }
            }
            Command::Close { sock } => self.close(*sock),
            Command::PauseRead { sock } => {
                if let Some(m) = self.socks.get_mut(sock) {
                    m.paused = true;
                    self.toggled.insert(*sock);
                }
            }
            Command::ResumeRead { sock } => {
                if let Some(m) = self.socks.get_mut(sock) {
                    m.paused = false;
                    self.toggled.insert(*sock);
                }
            }
            Command::PauseAccept => self.accept_paused = true,
            Command::ResumeAccept => self.accept_paused = false,
            Command::Report(report) => {
                self.reported.insert(report.conn);
                self.unreported.remove(&report.conn);
            }
            Command::Drained => self.drained = true,
            Command::Effect { id, .. } => {
                self.effects_seen.insert(*id);
            }
        }
    }

    // ---- after the commands of an input ----------------------------------------------------

    /// Every command of the last input is carried out: checks the engine's state against the
    /// view (accounting, limits, water marks by `pacing`) and takes the engine's next deadline.
    pub fn settled<I: Interceptor>(
        &mut self,
        engine: &Engine<I>,
        pacing: &dyn Pacing,
    ) -> Result<(), Violation> {
        self.deadline = engine.poll_timeout();
        if let Some(conn) = self.accepting.take() {
            // Taken on unless refused at once (closed in its accept, with no report).
            if engine.knows(SockId::client(conn)) && !self.reported.contains(&conn) {
                self.unreported.insert(conn);
            }
        }
        let unflushed: BTreeMap<SockId, u64> = engine.unflushed().collect();
        for (&sock, &n) in &unflushed {
            let Some(m) = self.socks.get(&sock) else {
                return fail(
                    Rule::Accounting,
                    format!("the engine holds {sock}, unknown to the driver"),
                );
            };
            match m.phase {
                Phase::Open if n != m.queued => {
                    return fail(
                        Rule::Accounting,
                        format!(
                            "{sock}: the engine counts {n} bytes unflushed, the driver {}",
                            m.queued
                        ),
                    )
                }
                Phase::Closed if n > 0 => {
                    return fail(
                        Rule::Accounting,
                        format!("{sock} is closed but the engine holds {n} bytes for it"),
                    )
                }
                _ => {}
            }
            if let Some(limit) = pacing.limit(sock, engine.role(sock)) {
                if n > limit {
                    return fail(
                        Rule::Limit,
                        format!("{sock} holds {n} unflushed bytes, limit {limit}"),
                    );
                }
            }
        }
        let backlog = |s: SockId| unflushed.get(&s).copied().unwrap_or(0) + pacing.gated(s);
        if let Some(sock) = self.closed_now.iter().find(|&&s| engine.knows(s)) {
            return fail(
                Rule::Accounting,
                format!("{sock} is closed, but the engine still counts it open"),
            );
        }
        let mut open_clients = 0;
        for &sock in &self.live {
            let m = &self.socks[&sock];
            if !engine.knows(sock) {
                return fail(
                    Rule::Accounting,
                    format!("{sock} is open, but the engine no longer knows it ({m:?})"),
                );
            }
            if sock.peer == Peer::Client {
                open_clients += 1;
            }
            if !m.is_open() || m.read_closed {
                continue;
            }
            let Some(target) = pacing.target(sock, &backlog) else {
                continue;
            };
            // The hysteresis: a reader is paused only above the high mark and resumed only at
            // or below the low one; between the two it keeps its state.
            if self.toggled.contains(&sock) && !m.paused && target > self.low_water {
                return fail(
                    Rule::WaterMarks,
                    format!("{sock} resumed with {target} bytes queued to its target"),
                );
            }
            if m.paused && target <= self.low_water {
                return fail(
                    Rule::WaterMarks,
                    format!("{sock} stays paused with {target} bytes queued to its target"),
                );
            }
            if !m.paused && target > self.high_water {
                return fail(
                    Rule::WaterMarks,
                    format!("{sock} is not paused with {target} bytes queued to its target"),
                );
            }
        }
        if engine.open_clients() != open_clients {
            return fail(
                Rule::Accounting,
                format!(
                    "the engine counts {} open clients, the driver {open_clients}",
                    engine.open_clients()
                ),
            );
        }
        if self.drained && engine.session_count() > 0 {
            return fail(
                Rule::Drain,
                format!("drained with {} sessions left", engine.session_count()),
            );
        }
        Ok(())
    }

    /// At the end of a run, the engine idle: every socket closed, every session the engine took
    /// on reported once (with reports on), a requested drain finished.
    pub fn finish(&self) -> Result<(), Violation> {
        if let Some(sock) = self.live.first() {
            let m = &self.socks[sock];
            return fail(Rule::Leak, format!("{sock} never closed: {m:?}"));
        }
        if self.reports_on {
            if let Some(conn) = self.unreported.first() {
                return fail(Rule::Leak, format!("{conn:?} was never reported"));
            }
        }
        if self.drains > 0 && !self.drained {
            return fail(Rule::Leak, "a requested drain never finished".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
