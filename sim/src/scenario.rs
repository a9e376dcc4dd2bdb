//! Scenarios, and the plan every knob of a run is derived from: one seed in, one [`Plan`] out.

use crate::effects::EffectPlan;
use crate::hosts::Pace;
use fanout_engine::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// A named family of runs. Each seed picks the numbers within it; each says which oracles it
/// is meant to stress. New scenarios go last: a plan is seeded by its scenario's place here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Many concurrent clients through a relay, nothing going wrong. Stresses client and
    /// request bytes and the report's digests on the plain path (what `drop-tail-after-eof` breaks).
    RelayHealthy,
    /// Duplex; the secondary is partitioned from the proxy for a while. Stresses isolation and
    /// the report's outcomes for a secondary that times out or detaches.
    DuplexPartition,
    /// Duplex; the link to the secondary holds messages, then releases them. Stresses isolation
    /// (the secondary's backlog must not hold the client) and the secondary's budget (limits).
    DuplexHold,
    /// Duplex; the secondary crashes and stays down. Stresses isolation and quiescence (a dead
    /// secondary's socket and timers must all go).
    DuplexCrash,
    /// Duplex; the secondary crashes and comes back. Stresses isolation and the report.
    DuplexBounce,
    /// Duplex; the secondary reads slowly and never keeps up. Stresses isolation, per byte and
    /// at the client's FIN (`secondary-backpressures-client`, `client-fin-waits-for-secondaries`).
    DuplexSlowReader,
    /// Duplex; the secondary accepts and never reads. Stresses the limits (its budget detaches
    /// it) and isolation.
    DuplexNeverReads,
    /// Duplex; the secondary answers with different bytes. Stresses the report's verdicts and
    /// first differences (`equal-lengths-match`).
    DuplexGarbage,
    /// Duplex; the link to the secondary has latency spikes. Stresses request bytes: client
    /// bytes that arrive while the secondary still connects must reach it in order
    /// (`secondary-loses-pending-request`).
    DuplexLatency,
    /// Duplex; the secondary resets every connection after reading the request's header.
    /// Stresses the report and liveness: a secondary's reset must not end or mark the primary's
    /// leg (`forget-session-on-reset`).
    DuplexReset,
    /// The primary crashes mid-response, then comes back. Stresses client bytes (a prefix of
    /// what the primary sent, never other bytes), liveness and quiescence.
    PrimaryCrash,
    /// Clients shut down their write side right after the request. Stresses half-close
    /// ordering: the FIN must reach the primary, which answers only after it (client bytes).
    ClientHalfClose,
    /// Clients vanish mid-request. Stresses quiescence and the report (`client-gone` or a reset,
    /// every session reported once).
    ClientVanish,
    /// Clients read slowly: backpressure all the way to the primary. Stresses hysteresis and
    /// the limits (`resume-at-high-water`).
    SlowClient,
    /// Many short sessions opening and closing while secondary faults come and go. Stresses the
    /// report (one per session) and quiescence under overlapping faults.
    Churn,
    /// The line rewriter (`interceptor.rs`) answers `ASK` lines from effects that take 1–300 ms
    /// and partly fail; nothing else goes wrong. Pipelined clients, some ending on an `ASK`
    /// line, catch output that overtakes a pending effect and a FIN that leaves before one.
    /// Stresses the rewritten streams and the effect log.
    InterceptEffects,
    /// The line rewriter with effects of which 30–70 % answer after the effect timeout: the
    /// client hears `FAILED` at their place and the late results are ignored. Stresses the
    /// rewritten streams (timers of the effects).
    InterceptEffectTimeout,
    /// The line rewriter's primary crashes while effects are pending, and restarts later.
    /// Stresses the effect log and quiescence (no effect left in flight).
    InterceptBackendCrash,
    /// The line rewriter with clients that send 170–320 KB of lines and stop reading for
    /// 1.5–3 s while the rewritten answers keep coming: the answers must pace the primary, and
    /// the primary the client, or the limits oracle sees the bytes pile up.
    InterceptStalledClient,
    /// Many short line-rewriter sessions with a mirrored secondary while partitions, holds and
    /// crashes of the mirror come and go, effects fail and time out, and some clients vanish.
    /// Stresses isolation with an interceptor, the effect log and quiescence.
    InterceptChurn,
    /// Duplex; 8–24 clients upload at once to a secondary that never reads, with the
    /// secondaries' shared cap (`secondary_memory`) at half a budget to two budgets: the cap
    /// detaches secondaries their budget would have kept. Stresses the limits (the shared cap,
    /// `secondary-memory-unbounded`) and the report (`detached-memory` only where the cap could
    /// have been passed).
    DuplexMemoryCap,
    /// Relay; the primary answers 16–128 bytes at a time, 5–10 ms apart, for 1–4 s, with an
    /// idle timeout of 1 s: sessions stay busy far longer than the idle timeout, so only an idle
    /// timer that counts from the last byte lets them finish. Stresses the client-bytes oracle
    /// (a session cut early leaves its client a short answer) and the report's outcomes.
    SlowBackend,
    /// Duplex; the primary's link holds messages (at most 0.8 s, under the connect timeout) and
    /// has latency spikes (at most 0.4 s). Stresses isolation (the twin keeps the primary's
    /// faults, so every byte must still arrive at the same instant) and the report's digests.
    PrimaryLinkFaults,
    /// Duplex; some clients' links hold messages and have latency spikes. Stresses client bytes
    /// and isolation under faults the proxy cannot see coming.
    ClientLinkFaults,
    /// Duplex with two or three secondaries of mixed kinds (honest, lying, slow, never reading).
    /// Stresses the report (each secondary's verdict against what its own host wrote) and
    /// request bytes (every secondary hears every client byte, in order).
    DuplexSecondaries,
    /// Duplex; 100–110 short sessions at once. Stresses request bytes and the report (every
    /// session paired with its client by address) at scale, and the shared caps.
    ManySessions,
    /// Relay; 10–30 clients at once against `max_connections` of 2–4: the accept gate holds the
    /// rest in the listen queue. Stresses the invariant that no more clients are open than the
    /// limit, and liveness (a gate that never reopens strands clients).
    AcceptGate,
    /// Relay; a drain (SIGTERM) 0.1–1 s into traffic whose answers trickle for up to 4 s, with
    /// a drain timeout of 0.3–3 s and sometimes a second SIGTERM that cuts it short. Clients
    /// keep arriving after it: they are never served and hear a refusal once the proxy has
    /// drained. Stresses the drain oracle (no session cut before the deadline, `Drained` once
    /// the last one ends and no later than the deadline, nobody accepted after the drain) and
    /// client bytes (a session the deadline did not cut gets its whole answer).
    DrainMidTraffic,
    /// Relay; the proxy's loop freezes one to three times for 50 ms–4 s (a VM pause, a SIGSTOP)
    /// while its sockets keep working, so the engine's clock leaps past the connect timeout
    /// between two events and every event queued meanwhile arrives at once. Stresses the
    /// contract's timer rule (`invariant`) and client bytes and the report: nothing the traffic
    /// kept alive may be cut for a timeout, and no answer is lost.
    ProxyStall,
    /// Duplex; the primary reads a part of each request (none of it, some, or all), writes its
    /// whole answer and closes: a reset when request bytes are left unread, as a web server
    /// answering 413 does. Stresses client bytes (a prefix of the answer, all of it when the
    /// primary's leg finished `ok`), request bytes (what the primary read is the request's
    /// start) and the report (reset only for a primary that closed early; the secondary's
    /// verdict against its own host's bytes).
    PrimaryEarlyClose,
    /// Duplex; each client sends 2–8 framed requests back to back on one connection and reads
    /// the answers in order (pipelining), to an honest secondary. Stresses request bytes (every
    /// backend parses each request boundary: a byte lost, doubled or misplaced breaks the next
    /// header), client bytes and the report's verdict over the whole connection.
    PipelinedClients,
}

impl Scenario {
    pub const ALL: [Scenario; 31] = [
        Scenario::RelayHealthy,
        Scenario::DuplexPartition,
        Scenario::DuplexHold,
        Scenario::DuplexCrash,
        Scenario::DuplexBounce,
        Scenario::DuplexSlowReader,
        Scenario::DuplexNeverReads,
        Scenario::DuplexMemoryCap,
        Scenario::DuplexGarbage,
        Scenario::DuplexLatency,
        Scenario::DuplexReset,
        Scenario::PrimaryCrash,
        Scenario::ClientHalfClose,
        Scenario::ClientVanish,
        Scenario::SlowClient,
        Scenario::SlowBackend,
        Scenario::Churn,
        Scenario::InterceptEffects,
        Scenario::InterceptEffectTimeout,
        Scenario::InterceptBackendCrash,
        Scenario::InterceptStalledClient,
        Scenario::InterceptChurn,
        Scenario::PrimaryLinkFaults,
        Scenario::ClientLinkFaults,
        Scenario::DuplexSecondaries,
        Scenario::ManySessions,
        Scenario::AcceptGate,
        Scenario::DrainMidTraffic,
        Scenario::ProxyStall,
        Scenario::PrimaryEarlyClose,
        Scenario::PipelinedClients,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::RelayHealthy => "relay-healthy",
            Scenario::DuplexPartition => "duplex-partition",
            Scenario::DuplexHold => "duplex-hold",
            Scenario::DuplexCrash => "duplex-crash",
            Scenario::DuplexBounce => "duplex-bounce",
            Scenario::DuplexSlowReader => "duplex-slow-reader",
            Scenario::DuplexNeverReads => "duplex-never-reads",
            Scenario::DuplexMemoryCap => "duplex-memory-cap",
            Scenario::DuplexGarbage => "duplex-garbage",
            Scenario::DuplexLatency => "duplex-latency",
            Scenario::DuplexReset => "duplex-reset",
            Scenario::PrimaryCrash => "primary-crash",
            Scenario::ClientHalfClose => "client-half-close",
            Scenario::ClientVanish => "client-vanish",
            Scenario::SlowClient => "slow-client",
            Scenario::SlowBackend => "slow-backend",
            Scenario::Churn => "churn",
            Scenario::InterceptEffects => "intercept-effects",
            Scenario::InterceptEffectTimeout => "intercept-effect-timeout",
            Scenario::InterceptBackendCrash => "intercept-backend-crash",
            Scenario::InterceptStalledClient => "intercept-stalled-client",
            Scenario::InterceptChurn => "intercept-churn",
            Scenario::PrimaryLinkFaults => "primary-link-faults",
            Scenario::ClientLinkFaults => "client-link-faults",
            Scenario::DuplexSecondaries => "duplex-secondaries",
            Scenario::ManySessions => "many-sessions",
            Scenario::AcceptGate => "accept-gate",
            Scenario::DrainMidTraffic => "drain-mid-traffic",
            Scenario::ProxyStall => "proxy-stall",
            Scenario::PrimaryEarlyClose => "primary-early-close",
            Scenario::PipelinedClients => "pipelined-clients",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the run has a secondary (and so a twin run without it to compare against).
    pub fn is_duplex(self) -> bool {
        use Scenario::*;
        match self {
            RelayHealthy | PrimaryCrash | SlowClient | SlowBackend | AcceptGate
            | DrainMidTraffic | ProxyStall => false,
            InterceptChurn => true,
            _ => !self.is_intercept(),
        }
    }

    /// Whether the proxy runs the line rewriter with the effect model (and clients and backends
    /// speak lines) instead of relaying the framed protocol.
    pub fn is_intercept(self) -> bool {
        use Scenario::*;
        matches!(
            self,
            InterceptEffects
                | InterceptEffectTimeout
                | InterceptBackendCrash
                | InterceptStalledClient
                | InterceptChurn
        )
    }
}

/// How a secondary host behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondaryKind {
    /// Answers exactly as the primary does.
    Honest,
    /// Answers the same length with different bytes.
    Garbage,
    /// Accepts and never reads.
    NeverReads,
    /// Reads 64 bytes every 50 ms.
    SlowReader,
    /// Reads the request's header, then drops the connection with bytes unread (a reset).
    Resets,
}

/// A network or host fault, applied by the runner at a point in virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Partition(String),
    Repair(String),
    Hold(String),
    Release(String),
    Crash(String),
    Bounce(String),
    /// Sets the proxy↔host link's maximum latency.
    Latency(String, Duration),
    /// Sets the proxy↔host link's latency, the same for every message: unlike [`Fault::Latency`]
    /// it draws nothing from turmoil's RNG, so a run and its twin without secondaries still
    /// see the same timing (what isolation compares).
    FixedLatency(String, Duration),
}

impl Fault {
    /// The host whose link (or whole self) the fault strikes.
    pub fn host(&self) -> &str {
        match self {
            Fault::Partition(h)
            | Fault::Repair(h)
            | Fault::Hold(h)
            | Fault::Release(h)
            | Fault::Crash(h)
            | Fault::Bounce(h)
            | Fault::Latency(h, _)
            | Fault::FixedLatency(h, _) => h,
        }
    }
}

/// Something that happens to the proxy itself at a point in virtual time (its driver carries
/// it out; see `driver.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The operator's SIGTERM: `Event::Drain`.
    Drain,
    /// The proxy's loop handles nothing for this long while its sockets keep working.
    Stall(Duration),
}

/// One client's script.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub id: u32,
    pub start_at: Duration,
    pub request_len: u32,
    pub response_len: u32,
    /// Bytes per write.
    pub chunk: u32,
    /// Pause between writes.
    pub gap: Duration,
    /// Shut down the write side right after the request.
    pub half_close: bool,
    /// Drop the connection after writing this many request bytes.
    pub vanish_after: Option<u32>,
    /// Pause between reads (a slow reader), each read at most 4 KiB.
    pub read_delay: Duration,
    /// Intercept scenarios: the `\n`-terminated lines the client sends (`request_len` is their
    /// total length, `response_len` unused). Empty in the framed protocol.
    pub lines: Vec<Vec<u8>>,
    /// Intercept scenarios: how long the client reads nothing at first, while it sends.
    pub stall: Duration,
    /// Framed requests sent after the first on the same connection, without waiting for an
    /// answer (pipelining): (request length, response length) each.
    pub more: Vec<(u32, u32)>,
}

impl ClientPlan {
    /// The bytes of every answer the client asked for, together.
    pub fn total_response_len(&self) -> u64 {
        u64::from(self.response_len) + self.more.iter().map(|&(_, r)| u64::from(r)).sum::<u64>()
    }
}

/// Everything a run does, derived from (scenario, seed).
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub seed: u64,
    pub cfg: Config,
    pub clients: Vec<ClientPlan>,
    pub secondaries: Vec<SecondaryKind>,
    /// Faults in time order.
    pub faults: Vec<(Duration, Fault)>,
    /// Every fault is healed by then (the liveness phase follows).
    pub heal_at: Duration,
    /// Whether the primary crashes in this run.
    pub primary_crashes: bool,
    /// Intercept scenarios: the effect model's knobs (the proxy runs the line rewriter).
    pub effects: Option<EffectPlan>,
    /// How the primary paces its answers.
    pub primary_pace: Pace,
    /// The primary answers after reading only part of each request, then closes.
    pub primary_closes_early: bool,
    /// What happens to the proxy itself, in time order.
    pub proxy_events: Vec<(Duration, ProxyEvent)>,
}

fn ms(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// The engine limits the simulation runs with: small enough that faults hit them.
pub fn sim_config(secondaries: u16) -> Config {
    Config {
        secondaries,
        reports: true,
        max_connections: 1000,
        high_water: 32 * 1024,
        low_water: 8 * 1024,
        secondary_budget: 64 * 1024,
        secondary_deadline: Duration::from_secs(2),
        compare_window: 64 * 1024,
        connect_timeout: Duration::from_secs(1),
        // Short, because it is what ends sessions whose peer vanished without a reset reaching
        // the proxy (turmoil does not wake a writer blocked on a socket the peer dropped).
        idle_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

pub const SECONDARY: &str = "secondary1";

/// Most `ASK` lines one client sends: below `Config::max_effects`, so the line rewriter never
/// has to answer `BUSY`.
pub const MAX_ASKS: usize = 40;

impl Plan {
    pub fn new(scenario: Scenario, seed: u64) -> Plan {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (scenario as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if scenario.is_intercept() {
            return Plan::intercept(scenario, seed, &mut rng);
        }
        use Scenario::*;
        let n_clients = match scenario {
            Churn => rng.random_range(20..=40),
            DuplexMemoryCap => rng.random_range(8..=24),
            ManySessions => rng.random_range(100..=110),
            AcceptGate => rng.random_range(10..=30),
            DrainMidTraffic => rng.random_range(4..=16),
            _ => rng.random_range(1..=12),
        };
        let mut clients = Vec::new();
        for id in 0..n_clients {
            let big = matches!(scenario, SlowClient | DuplexSlowReader);
            let (req_max, resp_max) = match scenario {
                Churn | AcceptGate => (2_000, 8_000),
                ManySessions => (1_000, 4_000),
                PipelinedClients => (4_000, 20_000),
                DuplexNeverReads => (600_000, 100_000),
                _ if big => (160_000, 400_000),
                _ => (64_000, 200_000),
            };
            let request_len = match scenario {
                // Past what the secondary's socket takes in (about 128 KiB) and its budget.
                DuplexMemoryCap => rng.random_range(200_000..=600_000),
                _ => rng.random_range(16..=req_max),
            };
            clients.push(ClientPlan {
                id,
                start_at: ms(
                    &mut rng,
                    0,
                    match scenario {
                        Churn => 4_000,
                        DuplexMemoryCap | ManySessions | AcceptGate => 100,
                        _ => 500,
                    },
                ),
                request_len,
                response_len: rng.random_range(0..=resp_max),
                // Uploads of 200-600 KB come in big writes, so they overlap (what the cap is
                // about) within a second of virtual time instead of trickling for many.
                chunk: match scenario {
                    DuplexMemoryCap => rng.random_range(4_096..=16_384),
                    _ => rng.random_range(256..=16_384),
                },
                gap: ms(
                    &mut rng,
                    0,
                    if scenario == DuplexMemoryCap { 5 } else { 20 },
                ),
                half_close: scenario == ClientHalfClose || rng.random_bool(0.3),
                vanish_after: (scenario == ClientVanish && rng.random_bool(0.6))
                    .then(|| rng.random_range(0..request_len)),
                read_delay: if scenario == SlowClient {
                    ms(&mut rng, 5, 40)
                } else {
                    Duration::ZERO
                },
                lines: Vec::new(),
                stall: Duration::ZERO,
                more: Vec::new(),
            });
        }
        if scenario == PipelinedClients {
            for c in &mut clients {
                c.more = (0..rng.random_range(1..=7))
                    .map(|_| (rng.random_range(16..=4_000), rng.random_range(0..=20_000)))
                    .collect();
            }
        }
        let secondary_kind = match scenario {
            DuplexGarbage => SecondaryKind::Garbage,
            DuplexNeverReads | DuplexMemoryCap => SecondaryKind::NeverReads,
            DuplexSlowReader => SecondaryKind::SlowReader,
            DuplexReset => SecondaryKind::Resets,
            _ => SecondaryKind::Honest,
        };
        let secondaries = if scenario == DuplexSecondaries {
            let kinds = [
                SecondaryKind::Honest,
                SecondaryKind::Garbage,
                SecondaryKind::SlowReader,
                SecondaryKind::NeverReads,
            ];
            (0..rng.random_range(2..=3))
                .map(|_| kinds[rng.random_range(0..kinds.len())])
                .collect()
        } else if scenario.is_duplex() {
            vec![secondary_kind]
        } else {
            vec![]
        };
        let s = SECONDARY.to_string();
        let start = ms(&mut rng, 0, 800);
        let end = start + ms(&mut rng, 100, 3_000);
        let mut faults = Vec::new();
        let mut primary_crashes = false;
        match scenario {
            DuplexPartition => {
                faults.push((start, Fault::Partition(s.clone())));
                faults.push((end, Fault::Repair(s.clone())));
            }
            DuplexHold => {
                faults.push((start, Fault::Hold(s.clone())));
                faults.push((end, Fault::Release(s.clone())));
            }
            DuplexCrash => faults.push((start, Fault::Crash(s.clone()))),
            DuplexBounce => {
                faults.push((start, Fault::Crash(s.clone())));
                faults.push((end, Fault::Bounce(s.clone())));
            }
            DuplexLatency => {
                let mut at = start;
                for _ in 0..rng.random_range(1..=4) {
                    faults.push((at, Fault::Latency(s.clone(), ms(&mut rng, 50, 2_000))));
                    at += ms(&mut rng, 50, 800);
                    faults.push((at, Fault::Latency(s.clone(), Duration::from_millis(1))));
                    at += ms(&mut rng, 50, 800);
                }
            }
            PrimaryCrash => {
                primary_crashes = true;
                faults.push((start, Fault::Crash("primary".into())));
                faults.push((end, Fault::Bounce("primary".into())));
            }
            Churn => faults = secondary_churn(&mut rng, start),
            PrimaryLinkFaults => {
                let p = "primary".to_string();
                faults.push((start, Fault::Hold(p.clone())));
                let released = start + ms(&mut rng, 50, 800);
                faults.push((released, Fault::Release(p.clone())));
                let spike = released + ms(&mut rng, 0, 300);
                faults.push((spike, Fault::FixedLatency(p.clone(), ms(&mut rng, 20, 400))));
                let calm = spike + ms(&mut rng, 50, 800);
                faults.push((calm, Fault::FixedLatency(p, Duration::from_millis(1))));
            }
            ClientLinkFaults => {
                for c in clients
                    .iter()
                    .filter(|_| rng.random_bool(0.5))
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
                {
                    let h = format!("client{c}");
                    let at = ms(&mut rng, 0, 800);
                    let (on, off) = if rng.random_bool(0.5) {
                        (Fault::Hold(h.clone()), Fault::Release(h.clone()))
                    } else {
                        (
                            Fault::FixedLatency(h.clone(), ms(&mut rng, 20, 400)),
                            Fault::FixedLatency(h.clone(), Duration::from_millis(1)),
                        )
                    };
                    faults.push((at, on));
                    faults.push((at + ms(&mut rng, 50, 800), off));
                }
                faults.sort_by_key(|(t, _)| *t);
            }
            _ => {}
        }
        let heal_at = faults.last().map(|(t, _)| *t).unwrap_or_default();
        let mut cfg = sim_config(secondaries.len() as u16);
        if scenario == DuplexMemoryCap {
            cfg.secondary_memory = cfg.secondary_budget * rng.random_range(1..=4) / 2;
        }
        if scenario == AcceptGate {
            cfg.max_connections = rng.random_range(2..=4);
        }
        let mut primary_pace = Pace::default();
        if scenario == SlowBackend {
            cfg.idle_timeout = Duration::from_secs(1);
            primary_pace = Pace {
                bytes: rng.random_range(16..=128),
                gap: ms(&mut rng, 5, 10),
            };
            for c in &mut clients {
                let writes = rng.random_range(200..=400);
                c.response_len = primary_pace.bytes * writes;
            }
        }
        let mut proxy_events = Vec::new();
        if scenario == DrainMidTraffic {
            cfg.drain_timeout = ms(&mut rng, 300, 3_000);
            primary_pace = Pace {
                bytes: rng.random_range(64..=1_024),
                gap: Duration::from_millis(5),
            };
            let drain_at = ms(&mut rng, 100, 1_000);
            proxy_events.push((drain_at, ProxyEvent::Drain));
            // Most clients are served before the drain; the rest arrive during it.
            for c in &mut clients {
                c.start_at = if rng.random_bool(0.75) {
                    ms(&mut rng, 0, drain_at.as_millis() as u64)
                } else {
                    drain_at + ms(&mut rng, 5, 500)
                };
            }
            if rng.random_bool(0.3) {
                let again = drain_at + ms(&mut rng, 50, cfg.drain_timeout.as_millis() as u64);
                proxy_events.push((again, ProxyEvent::Drain));
            }
        }
        if scenario == ProxyStall {
            let mut at = ms(&mut rng, 0, 1_000);
            for _ in 0..rng.random_range(1..=3) {
                let length = ms(&mut rng, 50, 4_000);
                proxy_events.push((at, ProxyEvent::Stall(length)));
                at += length + ms(&mut rng, 50, 1_000);
            }
        }
        Plan {
            scenario,
            seed,
            cfg,
            clients,
            secondaries,
            faults,
            heal_at,
            primary_crashes,
            effects: None,
            primary_pace,
            primary_closes_early: scenario == PrimaryEarlyClose,
            proxy_events,
        }
    }

    /// The plan of an intercept scenario: line clients, echo backends, the effect model.
    fn intercept(scenario: Scenario, seed: u64, rng: &mut ChaCha8Rng) -> Plan {
        use Scenario::*;
        let n_clients = match scenario {
            InterceptChurn => rng.random_range(20..=40),
            InterceptStalledClient => rng.random_range(1..=4),
            _ => rng.random_range(1..=12),
        };
        let mut clients = Vec::new();
        for id in 0..n_clients {
            let stalls = scenario == InterceptStalledClient && (id == 0 || rng.random_bool(0.5));
            let (n_lines, word_max) = match scenario {
                InterceptChurn => (rng.random_range(1..=20), 24),
                _ if stalls => (rng.random_range(800..=1_500), 400),
                _ => (rng.random_range(1..=120), 120),
            };
            let ask_per_mille = rng.random_range(0..=400);
            let last_asks = rng.random_bool(0.5);
            let lines = line_script(rng, id, n_lines, word_max, ask_per_mille, last_asks);
            let request_len: usize = lines.iter().map(Vec::len).sum();
            let churn = scenario == InterceptChurn;
            clients.push(ClientPlan {
                id,
                start_at: ms(rng, 0, if churn { 4_000 } else { 500 }),
                request_len: request_len as u32,
                response_len: 0,
                chunk: if stalls {
                    rng.random_range(4_096..=16_384)
                } else {
                    rng.random_range(16..=4_096)
                },
                gap: ms(rng, 0, if stalls { 5 } else { 20 }),
                half_close: rng.random_bool(0.5),
                vanish_after: (churn && rng.random_bool(0.2))
                    .then(|| rng.random_range(0..request_len as u32)),
                read_delay: if scenario == InterceptStalledClient {
                    ms(rng, 0, 5)
                } else {
                    Duration::ZERO
                },
                lines,
                stall: if stalls {
                    ms(rng, 1_500, 3_000)
                } else {
                    Duration::ZERO
                },
                more: Vec::new(),
            });
        }
        let mut cfg = sim_config(0);
        cfg.effect_timeout = Duration::from_secs(1);
        let span = |lo, hi| (Duration::from_millis(lo), Duration::from_millis(hi));
        let mut effects = EffectPlan {
            latency: span(1, 300),
            fail_per_mille: rng.random_range(0..=300),
            slow_per_mille: 0,
            slow_by: span(0, 1_500),
            timeout: cfg.effect_timeout,
        };
        let mut secondaries = Vec::new();
        let mut faults = Vec::new();
        let mut primary_crashes = false;
        let start = ms(rng, 100, 800);
        match scenario {
            InterceptEffectTimeout => {
                effects.fail_per_mille = rng.random_range(0..=100);
                effects.slow_per_mille = rng.random_range(300..=700);
            }
            InterceptBackendCrash => {
                effects.latency = span(20, 800);
                effects.slow_per_mille = rng.random_range(0..=100);
                primary_crashes = true;
                faults.push((start, Fault::Crash("primary".into())));
                faults.push((start + ms(rng, 100, 3_000), Fault::Bounce("primary".into())));
            }
            InterceptStalledClient => {
                effects.latency = span(1, 100);
                effects.fail_per_mille = rng.random_range(0..=100);
            }
            InterceptChurn => {
                effects.fail_per_mille = rng.random_range(0..=200);
                effects.slow_per_mille = rng.random_range(0..=200);
                secondaries.push(SecondaryKind::Honest);
                faults = secondary_churn(rng, start);
            }
            _ => {}
        }
        cfg.secondaries = secondaries.len() as u16;
        let heal_at = faults.last().map(|(t, _)| *t).unwrap_or_default();
        Plan {
            scenario,
            seed,
            cfg,
            clients,
            secondaries,
            faults,
            heal_at,
            primary_crashes,
            effects: Some(effects),
            primary_pace: Pace::default(),
            primary_closes_early: false,
            proxy_events: Vec::new(),
        }
    }

    /// Whether the operator asks the proxy to drain during the run.
    pub fn drains(&self) -> bool {
        self.proxy_events
            .iter()
            .any(|(_, e)| *e == ProxyEvent::Drain)
    }

    /// The same run without its secondaries: what the client sees must not change.
    pub fn without_secondaries(&self) -> Plan {
        let mut twin = self.clone();
        twin.secondaries.clear();
        twin.cfg.secondaries = 0;
        let secondary =
            |f: &Fault| (1..=self.secondaries.len()).any(|i| f.names(&format!("secondary{i}")));
        twin.faults.retain(|(_, f)| !secondary(f));
        twin
    }
}

/// Partitions, holds and crashes of the secondary, one after another from `start`.
fn secondary_churn(rng: &mut ChaCha8Rng, start: Duration) -> Vec<(Duration, Fault)> {
    let s = SECONDARY.to_string();
    let mut faults = Vec::new();
    let mut at = start;
    for _ in 0..rng.random_range(2..=6) {
        let (on, off) = match rng.random_range(0..3) {
            0 => (Fault::Partition(s.clone()), Fault::Repair(s.clone())),
            1 => (Fault::Hold(s.clone()), Fault::Release(s.clone())),
            _ => (Fault::Crash(s.clone()), Fault::Bounce(s.clone())),
        };
        faults.push((at, on));
        at += ms(rng, 50, 1_000);
        faults.push((at, off));
        at += ms(rng, 50, 1_000);
    }
    faults
}

/// A line client's script: `n` lines, about `ask_per_mille` of them `ASK c<id>.<k>.<word>` (at
/// most [`MAX_ASKS`], the last one too when `last_asks`), the others `put c<id> n<k> <word>`,
/// words of lower-case letters so the rewrite shows. Every line names its client and its index,
/// so bytes of another session or a misplaced answer cannot pass for the right ones.
fn line_script(
    rng: &mut ChaCha8Rng,
    id: u32,
    n: usize,
    word_max: usize,
    ask_per_mille: u32,
    last_asks: bool,
) -> Vec<Vec<u8>> {
    let word = |rng: &mut ChaCha8Rng, max: usize| -> String {
        let len = rng.random_range(1..=max);
        (0..len)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect()
    };
    let mut asks = 0;
    (0..n)
        .map(|k| {
            let ask = asks < MAX_ASKS
                && (rng.random_range(0..1000) < ask_per_mille || (last_asks && k + 1 == n));
            if ask {
                asks += 1;
                format!("ASK c{id}.{k}.{}\n", word(rng, 12)).into_bytes()
            } else {
                format!("put c{id} n{k} {}\n", word(rng, word_max)).into_bytes()
            }
        })
        .collect()
}

impl Fault {
    /// Whether the fault strikes host `host` (or its link to the proxy).
    pub fn names(&self, host: &str) -> bool {
        self.host() == host
    }
}
