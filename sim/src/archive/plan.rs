//! The archive world's scenarios and the plan each seed draws for one.

use super::store::StorePlan;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// Jobs delayed at least this many seconds are archived.
pub const ARCHIVE_AFTER: u32 = 3;
/// The longest delay a producer asks for, in seconds.
pub const LONGEST_DELAY: u32 = 25;

/// The archive scenarios: the faults `fanout beanstalkd` must survive, one family each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ArchiveScenario {
    /// No fault. Oracles: every job delivered exactly once, none early, far jobs archived
    /// (beanstalkd's peak is below what it would hold without the proxy), answers as
    /// beanstalkd gave them.
    Healthy,
    /// The store fails for 1–3 windows of 0.5–4 s and answers in 50–800 ms; the executor's queue
    /// is small, so effects are refused and jobs stay in beanstalkd. Oracles as healthy, plus:
    /// no client waits longer for an answer than the network costs (a slow store stalls
    /// nobody).
    StoreOutage,
    /// The proxy is killed (every task gone, the store's committed rows kept) 3–8 times, at
    /// random points while producers put (store calls take 10–200 ms, so kills land inside
    /// them), and restarted 0.1–2 s later. Oracles: none lost, none early, duplicates
    /// at most one batch per kill (the named crash windows).
    ProxyKill,
    /// beanstalkd restarts 1–3 times (its jobs kept, as with a binlog, under a new process id).
    /// Oracles: none lost, none early, duplicates at most one batch per restart (window 3).
    ServerRestart,
    /// Two proxies share one store (producers split between them), and each is killed and
    /// restarted 1–3 times: a restarted proxy settles the other's in-flight rows while that one
    /// finishes them, and both claim due rows. Oracles as for kills: each job put back by one
    /// of them, duplicates at most one batch per kill.
    SharedStore,
}

impl ArchiveScenario {
    pub const ALL: [ArchiveScenario; 5] = [
        ArchiveScenario::Healthy,
        ArchiveScenario::StoreOutage,
        ArchiveScenario::ProxyKill,
        ArchiveScenario::ServerRestart,
        ArchiveScenario::SharedStore,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ArchiveScenario::Healthy => "archive-healthy",
            ArchiveScenario::StoreOutage => "archive-store-outage",
            ArchiveScenario::ProxyKill => "archive-proxy-kill",
            ArchiveScenario::ServerRestart => "archive-server-restart",
            ArchiveScenario::SharedStore => "archive-shared-store",
        }
    }

    pub fn from_name(name: &str) -> Option<ArchiveScenario> {
        ArchiveScenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One job a producer puts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedJob {
    pub pri: u32,
    /// Seconds.
    pub delay: u32,
    pub ttr: u32,
    /// Milliseconds the producer waits before sending it.
    pub gap_ms: u64,
}

/// What happens to a host, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// Kill proxy `n` (0-based).
    KillProxy(usize),
    StartProxy(usize),
    RestartServer,
}

/// Everything one run does, drawn from `(scenario, seed)`.
#[derive(Clone, Debug)]
pub struct ArchivePlan {
    pub scenario: ArchiveScenario,
    pub seed: u64,
    /// Per producer, its tube's jobs in order.
    pub producers: Vec<Vec<PlannedJob>>,
    /// Puts a producer sends before it reads their answers.
    pub pipeline: usize,
    pub store: StorePlan,
    /// Proxies sharing the store; producer `i` puts through proxy `i % proxies`.
    pub proxies: usize,
    pub faults: Vec<(Duration, HostFault)>,
    /// Jobs per store transaction.
    pub batch: usize,
    /// The executor's queue (jobs); past it, effects are refused.
    pub queue: usize,
    /// Where the run ends: every job is due, re-injected and taken well before.
    pub horizon: Duration,
}

impl ArchivePlan {
    pub fn new(scenario: ArchiveScenario, seed: u64) -> ArchivePlan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa4c1_1fe5 ^ scenario as u64);
        let producers = (0..rng.random_range(1..=3))
            .map(|_| {
                (0..rng.random_range(15..=40))
                    .map(|_| PlannedJob {
                        pri: rng.random_range(0..=1024),
                        // Two in three far enough to be archived.
                        delay: if rng.random_bool(2.0 / 3.0) {
                            rng.random_range(ARCHIVE_AFTER..=LONGEST_DELAY)
                        } else {
                            rng.random_range(0..ARCHIVE_AFTER)
                        },
                        ttr: rng.random_range(1..=120),
                        gap_ms: rng.random_range(0..=250),
                    })
                    .collect()
            })
            .collect();
        let mut store = StorePlan {
            latency_ms: (1, 20),
            outages: Vec::new(),
        };
        let mut faults = Vec::new();
        let mut queue = 10_000;
        let mut proxies = 1;
        let secs = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| {
            Duration::from_millis((rng.random_range(lo..hi) * 1000.0) as u64)
        };
        match scenario {
            ArchiveScenario::Healthy => {}
            ArchiveScenario::StoreOutage => {
                store.latency_ms = (50, 800);
                queue = rng.random_range(4..=16);
                let mut at = Duration::ZERO;
                for _ in 0..rng.random_range(1..=3) {
                    at += secs(&mut rng, 0.5, 6.0);
                    let end = at + secs(&mut rng, 0.5, 4.0);
                    store.outages.push((at, end));
                    at = end;
                }
            }
            ArchiveScenario::ProxyKill => {
                // Store calls long enough that kills land inside them, while producers put.
                store.latency_ms = (10, 200);
                let mut at = Duration::ZERO;
                for _ in 0..rng.random_range(3..=8) {
                    at += secs(&mut rng, 0.3, 2.5);
                    faults.push((at, HostFault::KillProxy(0)));
                    at += secs(&mut rng, 0.1, 2.0);
                    faults.push((at, HostFault::StartProxy(0)));
                }
            }
            ArchiveScenario::SharedStore => {
                store.latency_ms = (10, 200);
                proxies = 2;
                let mut at = Duration::ZERO;
                for _ in 0..rng.random_range(2..=6) {
                    let which = rng.random_range(0..2);
                    at += secs(&mut rng, 0.3, 2.5);
                    faults.push((at, HostFault::KillProxy(which)));
                    at += secs(&mut rng, 0.1, 2.0);
                    faults.push((at, HostFault::StartProxy(which)));
                }
            }
            ArchiveScenario::ServerRestart => {
                let mut at = Duration::ZERO;
                for _ in 0..rng.random_range(1..=3) {
                    at += secs(&mut rng, 1.0, 8.0);
                    faults.push((at, HostFault::RestartServer));
                }
            }
        }
        let batch = rng.random_range(1..=8);
        let pipeline = rng.random_range(1..=4);
        let last_fault = faults.last().map_or(Duration::ZERO, |(at, _)| *at);
        let last_outage = store.outages.last().map_or(Duration::ZERO, |(_, end)| *end);
        // Producers finish within 40 × 250 ms (plus reconnects); every delay is at most
        // LONGEST_DELAY from then; re-injection and the claims of a killed proxy add seconds.
        let horizon =
            Duration::from_secs(15 + u64::from(LONGEST_DELAY) + 15) + last_fault.max(last_outage);
        ArchivePlan {
            scenario,
            seed,
            producers,
            pipeline,
            store,
            proxies,
            faults,
            batch,
            queue,
            horizon,
        }
    }

    /// Kills and server restarts in the run: each may leave one batch of duplicates.
    pub fn crash_windows(&self) -> usize {
        self.faults
            .iter()
            .filter(|(_, f)| matches!(f, HostFault::KillProxy(_) | HostFault::RestartServer))
            .count()
    }
}
