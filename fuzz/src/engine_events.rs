//! Fuzz target `engine_events`: an arbitrary configuration and operation sequence, decoded from
//! the input with `arbitrary`, driven into the engine by the model [`Driver`], then the liveness
//! phase ([`Driver::finish`]).
//!
//! Structured input reaches far deeper than raw bytes would: every operation names a live session
//! and socket by index, so almost every input byte turns into an event the engine acts on, and
//! the limits are small (a few KiB, a few seconds at most) so water marks, budgets and every
//! deadline are hit within a short input.
//!
//! Set `FANOUT_FUZZ_DEBUG=1` to print the decoded scenario (useful on a crashing input:
//! `FANOUT_FUZZ_DEBUG=1 cargo +nightly fuzz run engine_events fuzz/artifacts/engine_events/crash-...`).

pub mod seeds;

use crate::driver::{Driver, Stale, MAX_READ};
use arbitrary::{Arbitrary, Unstructured};
use fanout_engine::{BackendId, Config, ConnId, Failure, SessionReport, SockId};
use std::time::Duration;

/// Operations per input at most; longer inputs are cut here so one input stays fast.
const MAX_OPS: usize = 4096;

/// What the fuzzer controls: the limits and the schedule.
#[derive(Debug, Arbitrary)]
pub struct Scenario {
    pub limits: Limits,
    pub ops: Vec<Op>,
}

/// Relay, or duplex with one or two secondaries.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Mode {
    Relay,
    Duplex1,
    Duplex2,
}

/// Raw knobs, folded into small valid limits by [`Limits::config`].
#[derive(Debug, Arbitrary)]
pub struct Limits {
    pub mode: Mode,
    pub reports: bool,
    pub max_connections: u8,
    pub high_water: u16,
    pub low_water: u16,
    pub secondary_budget: u16,
    pub compare_window: u16,
    pub connect_ms: u16,
    pub idle_ms: u16,
    pub deadline_ms: u16,
    pub drain_ms: u16,
}

impl Limits {
    /// A valid configuration with every limit small enough to be hit.
    pub fn config(&self) -> Config {
        let secondaries = match self.mode {
            Mode::Relay => 0,
            Mode::Duplex1 => 1,
            Mode::Duplex2 => 2,
        };
        let high_water = 1 + u64::from(self.high_water) % (8 * 1024);
        let ms = |v: u16, max: u64| Duration::from_millis(1 + u64::from(v) % max);
        // The budget takes the low 13 bits; the top 3 pick the secondaries' shared cap, so an
        // input recorded before the cap existed decodes as it did (and half of them meet one):
        // about half a budget, one, one and a half, or two, or else the default (never reached).
        let secondary_budget = 1 + u64::from(self.secondary_budget) % (8 * 1024);
        let secondary_memory = match self.secondary_budget >> 13 {
            k @ 4..=7 => secondary_budget * u64::from(k - 3) / 2 + 1,
            _ => Config::default().secondary_memory,
        };
        Config {
            secondaries,
            max_connections: 1 + usize::from(self.max_connections) % 4,
            high_water,
            low_water: u64::from(self.low_water) % high_water,
            secondary_budget,
            secondary_memory,
            secondary_deadline: ms(self.deadline_ms, 2_000),
            compare_window: u64::from(self.compare_window) % (8 * 1024),
            connect_timeout: ms(self.connect_ms, 2_000),
            idle_timeout: ms(self.idle_ms, 10_000),
            drain_timeout: Duration::from_millis(u64::from(self.drain_ms) % 5_000),
            reports: self.reports || secondaries > 0,
            ..Config::default()
        }
    }
}

/// Why a socket failed (mirrors [`Failure`], which does not derive `Arbitrary`).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Reason {
    Refused,
    Reset,
    TimedOut,
    Unreachable,
    Other,
}

impl From<Reason> for Failure {
    fn from(r: Reason) -> Failure {
        match r {
            Reason::Refused => Failure::Refused,
            Reason::Reset => Failure::Reset,
            Reason::TimedOut => Failure::TimedOut,
            Reason::Unreachable => Failure::Unreachable,
            Reason::Other => Failure::Other,
        }
    }
}

/// One step. `conn` picks among the live sessions, `side` among a session's sockets (0 the
/// client, 1 the primary, 2.. the secondaries); a step that does not apply to the socket it picks
/// (a read from a paused socket, a connect answer for an open one) does nothing.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    Accept,
    Connect { conn: u8, side: u8 },
    ConnectFail { conn: u8, side: u8, reason: Reason },
    Read { conn: u8, side: u8, len: u16 },
    Flush { conn: u8, side: u8, len: u16 },
    FlushAll,
    Eof { conn: u8, side: u8 },
    Fail { conn: u8, side: u8, reason: Reason },
    Advance { ms: u16 },
    AdvanceToDeadline,
    Drain,
    Stale { pick: u16, kind: Stale },
}

/// The target: decodes a [`Scenario`] and runs it.
pub fn run(data: &[u8]) {
    let Some(scenario) = decode(data) else {
        return;
    };
    if std::env::var_os("FANOUT_FUZZ_DEBUG").is_some() {
        eprintln!("{scenario:#?}\nconfig: {:#?}", scenario.limits.config());
    }
    run_scenario(&scenario, Driver::new(scenario.limits.config()));
}

/// The scenario an input stands for, if it decodes.
pub fn decode(data: &[u8]) -> Option<Scenario> {
    Scenario::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Drives `scenario` through `d` (a driver around a fresh engine built from the scenario's
/// limits) and checks it. Returns the session reports (for corpus statistics).
pub fn run_scenario(scenario: &Scenario, mut d: Driver) -> Vec<SessionReport> {
    for op in scenario.ops.iter().take(MAX_OPS) {
        step(&mut d, *op);
    }
    d.finish()
}

/// Picks socket `side` of the `conn`-th live session.
fn pick(d: &Driver, conn: u8, side: u8) -> Option<SockId> {
    let live = d.live_conns();
    if live.is_empty() {
        return None;
    }
    let conn: ConnId = live[usize::from(conn) % live.len()];
    match u16::from(side) % (d.config().secondaries + 2) {
        0 => Some(SockId::client(conn)),
        b => Some(SockId::backend(conn, BackendId(b - 1))),
    }
}

fn step(d: &mut Driver, op: Op) {
    match op {
        Op::Accept => d.accept(),
        Op::Connect { conn, side } => {
            if let Some(sock) = pick(d, conn, side) {
                d.connected(sock);
            }
        }
        Op::ConnectFail { conn, side, reason } => {
            if let Some(sock) = pick(d, conn, side) {
                // The pick uses `side` modulo 2–4; its top bit turns `Other` into a driver out
                // of descriptors, so inputs recorded before that reason existed decode as they did.
                let reason = match reason {
                    Reason::Other if side >= 0x80 => Failure::NoDescriptors,
                    r => r.into(),
                };
                d.connect_failed(sock, reason);
            }
        }
        Op::Read { conn, side, len } => {
            if let Some(sock) = pick(d, conn, side) {
                d.read(sock, 1 + u64::from(len) % MAX_READ);
            }
        }
        Op::Flush { conn, side, len } => {
            if let Some(sock) = pick(d, conn, side) {
                // 0 flushes everything queued.
                let n = if len == 0 { u64::MAX } else { u64::from(len) };
                d.flush(sock, n);
            }
        }
        Op::FlushAll => d.flush_all(),
        Op::Eof { conn, side } => {
            if let Some(sock) = pick(d, conn, side) {
                d.eof(sock);
            }
        }
        Op::Fail { conn, side, reason } => {
            if let Some(sock) = pick(d, conn, side) {
                d.fail(sock, reason.into());
            }
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
