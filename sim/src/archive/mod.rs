//! The archive world: `fanout beanstalkd`'s logic (the engine's [`fanout_engine::archive`]) under
//! faults, against a beanstalkd model and a store model, judged by its own oracles.
//!
//! - `plan.rs`: the scenarios and what a seed draws for one;
//! - `beanstalkd.rs`: the beanstalkd model (a turmoil host) and the archiver's client of it;
//! - `store.rs`: the store model (rows that outlive every host; latency and outages);
//! - `world.rs`: the hosts and the run;
//! - `oracle.rs`: what every run must show.

pub mod beanstalkd;
pub mod oracle;
pub mod plan;
pub mod store;
pub mod world;

pub use oracle::Failure;
pub use plan::{ArchivePlan, ArchiveScenario};

/// One run's verdict.
#[derive(Debug)]
pub struct ArchiveRun {
    pub failures: Vec<Failure>,
    pub digest: u64,
    /// Puts sent, jobs delivered, jobs archived, re-injected.
    pub puts: usize,
    pub delivered: usize,
    pub archived: u64,
    pub reinjected: u64,
    pub peak_in_server: usize,
}

/// Runs `scenario` with `seed` and checks every oracle.
pub fn run(scenario: ArchiveScenario, seed: u64) -> ArchiveRun {
    let plan = ArchivePlan::new(scenario, seed);
    let o = world::simulate(&plan);
    ArchiveRun {
        failures: oracle::check(&plan, &o),
        digest: o.digest,
        puts: o.puts.len(),
        delivered: o.deliveries.len(),
        archived: o.archived,
        reinjected: o.reinjected,
        peak_in_server: o.peak_in_server,
    }
}

/// The command that reproduces one archive run.
pub fn repro(scenario: ArchiveScenario, seed: u64) -> String {
    format!(
        "cargo run --release -p fanout-sim -- archive --seed {seed} --scenario {}",
        scenario.name()
    )
}
