//! Scenarios, and the plan every knob of a run is derived from: one seed in, one [`Plan`] out.

use fanout_engine::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// A named family of runs. Each seed picks the numbers within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Many concurrent clients through a relay, nothing going wrong.
    RelayHealthy,
    /// Duplex; the secondary is partitioned from the proxy for a while.
    DuplexPartition,
    /// Duplex; the link to the secondary holds messages, then releases them.
    DuplexHold,
    /// Duplex; the secondary crashes and stays down.
    DuplexCrash,
    /// Duplex; the secondary crashes and comes back.
    DuplexBounce,
    /// Duplex; the secondary reads slowly and never keeps up.
    DuplexSlowReader,
    /// Duplex; the secondary accepts and never reads.
    DuplexNeverReads,
    /// Duplex; the secondary answers with different bytes.
    DuplexGarbage,
    /// Duplex; the link to the secondary has latency spikes.
    DuplexLatency,
    /// Duplex; the secondary resets every connection after reading the request's header.
    DuplexReset,
    /// The primary crashes mid-response, then comes back.
    PrimaryCrash,
    /// Clients shut down their write side right after the request.
    ClientHalfClose,
    /// Clients vanish mid-request.
    ClientVanish,
    /// Clients read slowly: backpressure all the way to the primary.
    SlowClient,
    /// Many short sessions opening and closing while secondary faults come and go.
    Churn,
}

impl Scenario {
    pub const ALL: [Scenario; 15] = [
        Scenario::RelayHealthy,
        Scenario::DuplexPartition,
        Scenario::DuplexHold,
        Scenario::DuplexCrash,
        Scenario::DuplexBounce,
        Scenario::DuplexSlowReader,
        Scenario::DuplexNeverReads,
        Scenario::DuplexGarbage,
        Scenario::DuplexLatency,
        Scenario::DuplexReset,
        Scenario::PrimaryCrash,
        Scenario::ClientHalfClose,
        Scenario::ClientVanish,
        Scenario::SlowClient,
        Scenario::Churn,
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
            Scenario::DuplexGarbage => "duplex-garbage",
            Scenario::DuplexLatency => "duplex-latency",
            Scenario::DuplexReset => "duplex-reset",
            Scenario::PrimaryCrash => "primary-crash",
            Scenario::ClientHalfClose => "client-half-close",
            Scenario::ClientVanish => "client-vanish",
            Scenario::SlowClient => "slow-client",
            Scenario::Churn => "churn",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the run has a secondary (and so a twin run without it to compare against).
    pub fn is_duplex(self) -> bool {
        !matches!(
            self,
            Scenario::RelayHealthy | Scenario::PrimaryCrash | Scenario::SlowClient
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

impl Plan {
    pub fn new(scenario: Scenario, seed: u64) -> Plan {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (scenario as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        use Scenario::*;
        let n_clients = match scenario {
            Churn => rng.random_range(20..=40),
            _ => rng.random_range(1..=12),
        };
        let mut clients = Vec::new();
        for id in 0..n_clients {
            let big = matches!(scenario, SlowClient | DuplexSlowReader);
            let (req_max, resp_max) = match scenario {
                Churn => (2_000, 8_000),
                DuplexNeverReads => (600_000, 100_000),
                _ if big => (160_000, 400_000),
                _ => (64_000, 200_000),
            };
            let request_len = rng.random_range(16..=req_max);
            clients.push(ClientPlan {
                id,
                start_at: ms(&mut rng, 0, if scenario == Churn { 4_000 } else { 500 }),
                request_len,
                response_len: rng.random_range(0..=resp_max),
                chunk: rng.random_range(256..=16_384),
                gap: ms(&mut rng, 0, 20),
                half_close: scenario == ClientHalfClose || rng.random_bool(0.3),
                vanish_after: (scenario == ClientVanish && rng.random_bool(0.6))
                    .then(|| rng.random_range(0..request_len)),
                read_delay: if scenario == SlowClient {
                    ms(&mut rng, 5, 40)
                } else {
                    Duration::ZERO
                },
            });
        }
        let secondary_kind = match scenario {
            DuplexGarbage => SecondaryKind::Garbage,
            DuplexNeverReads => SecondaryKind::NeverReads,
            DuplexSlowReader => SecondaryKind::SlowReader,
            DuplexReset => SecondaryKind::Resets,
            _ => SecondaryKind::Honest,
        };
        let secondaries = if scenario.is_duplex() {
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
            Churn => {
                let mut at = start;
                for _ in 0..rng.random_range(2..=6) {
                    let (on, off) = match rng.random_range(0..3) {
                        0 => (Fault::Partition(s.clone()), Fault::Repair(s.clone())),
                        1 => (Fault::Hold(s.clone()), Fault::Release(s.clone())),
                        _ => (Fault::Crash(s.clone()), Fault::Bounce(s.clone())),
                    };
                    faults.push((at, on));
                    at += ms(&mut rng, 50, 1_000);
                    faults.push((at, off));
                    at += ms(&mut rng, 50, 1_000);
                }
            }
            _ => {}
        }
        let heal_at = faults.last().map(|(t, _)| *t).unwrap_or_default();
        Plan {
            scenario,
            seed,
            cfg: sim_config(secondaries.len() as u16),
            clients,
            secondaries,
            faults,
            heal_at,
            primary_crashes,
        }
    }

    /// The same run without its secondaries: what the client sees must not change.
    pub fn without_secondaries(&self) -> Plan {
        let mut twin = self.clone();
        twin.secondaries.clear();
        twin.cfg.secondaries = 0;
        twin.faults.retain(|(_, f)| !f.names(SECONDARY));
        twin
    }
}

impl Fault {
    fn names(&self, host: &str) -> bool {
        match self {
            Fault::Partition(h)
            | Fault::Repair(h)
            | Fault::Hold(h)
            | Fault::Release(h)
            | Fault::Crash(h)
            | Fault::Bounce(h)
            | Fault::Latency(h, _) => h == host,
        }
    }
}
