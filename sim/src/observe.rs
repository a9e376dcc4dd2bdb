//! What the simulation watches at the engine boundary: a digest of every input and output, the
//! invariants that must hold after every step, the reports, and the engine's final state.

use fanout_engine::capture::{Encoder, OutputDigest, Record};
use fanout_engine::{
    Command, Config, Engine, Event, Instant, Interceptor, Peer, Role, SessionReport, SockId,
};
use std::collections::{BTreeMap, BTreeSet};
use xxhash_rust::xxh3::Xxh3Default;

use crate::driver::READ_SIZE;

/// Shared by the proxy host and the runner (turmoil runs every host on one thread).
#[derive(Default)]
pub struct Observer {
    /// Every input, encoded as a capture records it (`enc` reuses one buffer).
    trace: Xxh3Default,
    enc: Encoder,
    /// Every output, as a capture's `Outputs` digest counts it.
    outputs: OutputDigest,
    pub steps: u64,
    /// Invariant violations, in the order seen (the first is the one reported).
    pub violations: Vec<String>,
    pub reports: Vec<SessionReport>,
    /// When each of `reports` was emitted (the instant of the input that caused it).
    pub report_times: Vec<Instant>,
    /// The instant of every `Event::Drain` fed, and of the `Drained` command, if any.
    pub drains: Vec<Instant>,
    pub drained_at: Option<Instant>,
    /// The instant of the input being handled.
    now: Option<Instant>,
    /// The longest the engine's clock leapt between two inputs while it held sessions.
    pub longest_gap: std::time::Duration,
    /// Bytes the engine was fed from each session's client.
    pub client_read: BTreeMap<fanout_engine::ConnId, u64>,
    pub accepted: u64,
    /// `Failed` and `ConnectFailed` events seen: how often faults reached the engine.
    pub failures: u64,
    /// `PauseRead` commands: how often backpressure engaged.
    pub pauses: u64,
    /// The most unflushed bytes any client socket held after a step.
    pub peak_client_unflushed: u64,
    /// The engine's state after its last step.
    pub engine_idle: bool,
    pub sessions: usize,
    limits: Option<Config>,
    /// Sockets seen over their limit (each is reported once).
    over_limit: BTreeSet<SockId>,
    /// Bytes a client socket may hold on top of one read past the high-water mark: answers
    /// written by `on_effect`, which no route paces (see [`Observer::with_effect_answers`]).
    effect_allowance: u64,
    /// `SIM_TRACE=1`: print every input and output to stderr.
    print: bool,
    /// Every socket the engine named a secondary (learned after each step).
    secondaries: BTreeSet<SockId>,
    /// Unflushed bytes of every secondary together after the last step.
    secondaries_held: u64,
    /// Bytes the step being handled may add to them: a client read goes to every secondary
    /// (to its queue, or to its pending list while it connects), and writes to secondaries.
    step_read: u64,
    step_written: u64,
    /// Secondaries the engine closed, and whether what the secondaries held could have passed
    /// `secondary_memory` at that point of the step: a `detached-memory` needs it.
    pub secondaries_closed: BTreeMap<SockId, bool>,
    /// The secondaries were seen over the cap (reported once).
    over_cap_seen: bool,
    /// More clients were seen open than `max_connections` (reported once).
    over_gate_seen: bool,
    /// Sockets paused by a `PauseRead` and not yet resumed or closed.
    paused: BTreeSet<SockId>,
    /// Sockets resumed by the step being handled: checked against the low-water mark after it.
    step_resumed: Vec<SockId>,
    /// Water-mark violations (the hysteresis oracle): a resume before the destinations it
    /// paused for drained to the low-water mark, a pause of a paused socket, a resume of one
    /// that was not paused.
    pub flow_violations: Vec<String>,
}

/// Shortens a trace line whose payload is long.
fn abbreviate(line: &str) -> String {
    if line.len() <= 200 {
        return line.to_string();
    }
    let cut = (0..=160)
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    format!("{} …({} bytes)\n", &line[..cut], line.len())
}

impl Observer {
    pub fn new(cfg: &Config) -> Self {
        Observer {
            limits: Some(cfg.clone()),
            engine_idle: true,
            print: std::env::var_os("SIM_TRACE").is_some(),
            ..Observer::default()
        }
    }

    /// For an interceptor whose effects each write at most `longest` bytes to the client: a
    /// client socket may also hold the answers of `max_effects` pending effects. Those answers
    /// have no source to pause (the effect's result is not a read), so the water marks bound
    /// everything but them, and `max_effects` bounds them.
    pub fn with_effect_answers(mut self, longest: u64) -> Self {
        let max_effects = self.limits.as_ref().map_or(0, |c| u64::from(c.max_effects));
        self.effect_allowance = max_effects * longest;
        self
    }

    pub fn input(&mut self, now: Instant, event: &Event) {
        if let Some(last) = self.now.filter(|_| self.sessions > 0) {
            self.longest_gap = self.longest_gap.max(now.saturating_since(last));
        }
        self.now = Some(now);
        match event {
            Event::Accepted { .. } => self.accepted += 1,
            Event::Drain => self.drains.push(now),
            Event::Failed { .. } | Event::ConnectFailed { .. } => self.failures += 1,
            _ => {}
        }
        self.step_written = 0;
        self.step_resumed.clear();
        self.step_read = match event {
            Event::Read { sock, data } if sock.peer == Peer::Client => data.len() as u64,
            _ => 0,
        };
        if let Event::Read { sock, .. } = event {
            if sock.peer == Peer::Client {
                *self.client_read.entry(sock.conn).or_default() += self.step_read;
            }
        }
        self.steps += 1;
        // The client's address carries turmoil's ephemeral port, which is deterministic too.
        if self.print {
            eprint!("in  {}", abbreviate(&format!("{now:?} {event:?}\n")));
        }
        let event = event.clone(); // cheap: a read's bytes are reference counted
        if let Ok(bytes) = self.enc.record(&Record::Input { at: now, event }) {
            self.trace.update(bytes);
        }
    }

    /// Records a command; `known` tells whether the driver holds the socket it names.
    pub fn output(&mut self, cmd: &Command, known: impl Fn(SockId) -> bool) {
        if self.print {
            eprint!("out {}", abbreviate(&format!("{cmd:?}\n")));
        }
        self.outputs.update(cmd);
        match cmd {
            Command::PauseRead { sock } => {
                self.pauses += 1;
                if !self.paused.insert(*sock) {
                    self.flow_violation(format!("{sock} paused twice without a resume"));
                }
            }
            Command::ResumeRead { sock } => {
                if !self.paused.remove(sock) {
                    self.flow_violation(format!("{sock} resumed while not paused"));
                }
                self.step_resumed.push(*sock);
            }
            Command::Close { sock } => {
                self.paused.remove(sock);
            }
            Command::Drained => self.drained_at = self.now,
            _ => {}
        }
        match cmd {
            Command::Write { sock, data } if self.secondaries.contains(sock) => {
                self.step_written += data.len() as u64;
            }
            Command::Close { sock } if self.secondaries.contains(sock) => {
                let cap = self
                    .limits
                    .as_ref()
                    .map_or(u64::MAX, |c| c.secondary_memory);
                let most = self.secondaries_held
                    + self.step_written
                    + self.step_read * self.secondaries_per_session();
                self.secondaries_closed.insert(*sock, most > cap);
            }
            _ => {}
        }
        let named = match cmd {
            Command::Write { sock, .. }
            | Command::Shutdown { sock }
            | Command::Close { sock }
            | Command::PauseRead { sock }
            | Command::ResumeRead { sock } => Some(*sock),
            _ => None,
        };
        if let Some(sock) = named {
            if !known(sock) {
                self.violation(format!("command names an unknown connection: {cmd:?}"));
            }
        }
    }

    pub fn report(&mut self, report: SessionReport) {
        self.reports.push(report);
        self.report_times.push(self.now.unwrap_or_default());
    }

    /// Secondaries a client read may be written to, at most (the plan's, else the engine's
    /// backend limit).
    fn secondaries_per_session(&self) -> u64 {
        self.limits.as_ref().map_or(0, |c| match c.secondaries {
            0 => u64::from(c.max_backends),
            n => u64::from(n),
        })
    }

    /// Checked after every step: no socket holds more than the limits allow, and the
    /// secondaries together no more than `secondary_memory`, as the engine says.
    pub fn after_step<I: Interceptor>(&mut self, engine: &Engine<I>) {
        self.engine_idle = engine.is_idle();
        self.sessions = engine.session_count();
        let Some(cfg) = &self.limits else { return };
        let mut over = Vec::new();
        let mut held = 0;
        for (sock, unflushed) in engine.unflushed() {
            if engine.role(sock) == Some(Role::Secondary) {
                self.secondaries.insert(sock);
                held += unflushed;
            }
        }
        self.secondaries_held = held;
        if held > cfg.secondary_memory && !self.over_cap_seen {
            self.over_cap_seen = true;
            over.push(format!(
                "buffered bytes over the limit: the secondaries hold {held} together, cap {}",
                cfg.secondary_memory
            ));
        }
        if engine.secondary_held() != held {
            over.push(format!(
                "the engine counts {} bytes held for secondaries, they hold {held}",
                engine.secondary_held()
            ));
        }
        for (sock, unflushed) in engine.unflushed() {
            if sock.peer == Peer::Client {
                self.peak_client_unflushed = self.peak_client_unflushed.max(unflushed);
            }
            let limit = match (sock.peer, engine.role(sock)) {
                (Peer::Backend(_), Some(Role::Secondary)) => cfg.secondary_budget,
                (Peer::Backend(_), _) => cfg.high_water + READ_SIZE as u64,
                (Peer::Client, _) => cfg.high_water + READ_SIZE as u64 + self.effect_allowance,
            };
            // Each socket's first overrun: which sockets pile up says which route went unpaced.
            if unflushed > limit && self.over_limit.insert(sock) {
                over.push(format!(
                    "buffered bytes over the limit: {sock} holds {unflushed}, limit {limit}"
                ));
            }
        }
        if engine.open_clients() > cfg.max_connections && !self.over_gate_seen {
            self.over_gate_seen = true;
            over.push(format!(
                "{} clients open, past max_connections of {}",
                engine.open_clients(),
                cfg.max_connections
            ));
        }
        let low_water = cfg.low_water;
        for v in over {
            self.violation(v);
        }
        self.check_resumes(engine, low_water);
    }

    /// Hysteresis: a socket resumed in this step fed destinations that now hold at most the
    /// low-water mark. A client's reads feed its session's backends that are not secondaries;
    /// a backend's reads feed the client. (Bytes held behind effects count too but are not
    /// visible here, so this can only miss a resume, never invent one.)
    fn check_resumes<I: Interceptor>(&mut self, engine: &Engine<I>, low_water: u64) {
        for sock in std::mem::take(&mut self.step_resumed) {
            let worst = engine
                .unflushed()
                .filter(|(d, _)| d.conn == sock.conn && *d != sock)
                .filter(|(d, _)| match sock.peer {
                    Peer::Client => engine.role(*d).is_some_and(|r| r != Role::Secondary),
                    Peer::Backend(_) => d.peer == Peer::Client,
                })
                .max_by_key(|(_, n)| *n);
            if let Some((dest, n)) = worst.filter(|(_, n)| *n > low_water) {
                self.flow_violation(format!(
                    "{sock} resumed while {dest} still holds {n} bytes, above the low-water mark of {low_water}"
                ));
            }
        }
    }

    fn flow_violation(&mut self, what: String) {
        if self.flow_violations.len() < 16 {
            self.flow_violations.push(what);
        }
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(what);
        }
    }

    /// The digest of every input and output so far.
    /// The run's digest: of every input, and of every output in order.
    pub fn digest(&self) -> u64 {
        let mut both = self.trace.clone();
        both.update(&self.outputs.value().to_le_bytes());
        both.update(&self.outputs.count().to_le_bytes());
        both.digest()
    }
}
