//! What the simulation watches at the engine boundary: a digest of every input and output, the
//! invariants that must hold after every step, the reports, and the engine's final state.

use fanout_engine::{
    Command, Config, Engine, Event, Instant, Interceptor, Peer, Role, SessionReport, SockId,
};
use std::collections::BTreeSet;
use xxhash_rust::xxh3::Xxh3Default;

use crate::driver::READ_SIZE;

/// Shared by the proxy host and the runner (turmoil runs every host on one thread).
#[derive(Default)]
pub struct Observer {
    trace: Xxh3Default,
    pub steps: u64,
    /// Invariant violations, in the order seen (the first is the one reported).
    pub violations: Vec<String>,
    pub reports: Vec<SessionReport>,
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
        match event {
            Event::Accepted { .. } => self.accepted += 1,
            Event::Failed { .. } | Event::ConnectFailed { .. } => self.failures += 1,
            _ => {}
        }
        self.steps += 1;
        // The client's address carries turmoil's ephemeral port, which is deterministic too.
        let line = format!("{now:?} {event:?}\n");
        if self.print {
            eprint!("in  {}", abbreviate(&line));
        }
        self.trace.update(line.as_bytes());
    }

    /// Records a command; `known` tells whether the driver holds the socket it names.
    pub fn output(&mut self, cmd: &Command, known: impl Fn(SockId) -> bool) {
        let line = format!("{cmd:?}\n");
        if self.print {
            eprint!("out {}", abbreviate(&line));
        }
        self.trace.update(line.as_bytes());
        if matches!(cmd, Command::PauseRead { .. }) {
            self.pauses += 1;
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
    }

    /// Checked after every step: no socket holds more than the limits allow.
    pub fn after_step<I: Interceptor>(&mut self, engine: &Engine<I>) {
        self.engine_idle = engine.is_idle();
        self.sessions = engine.session_count();
        let Some(cfg) = &self.limits else { return };
        let mut over = Vec::new();
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
        for v in over {
            self.violation(v);
        }
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(what);
        }
    }

    /// The digest of every input and output so far.
    pub fn digest(&self) -> u64 {
        self.trace.digest()
    }
}
