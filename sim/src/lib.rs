//! # fanout-sim: the engine on turmoil, under faults
//!
//! The same [`fanout_engine::Engine`] the production binary runs, driven by turmoil's simulated
//! network and virtual clock instead of mio and real sockets (`driver.rs`), with any interceptor
//! and an effect model standing in for the effect executor (`effects.rs`). Around it: simulated
//! clients and backends (`hosts.rs`; the line clients and echo service of the intercept scenarios
//! in `line_hosts.rs`, their interceptor in `interceptor.rs`), scenarios whose every knob comes
//! from one seed (`scenario.rs`), the run loop that injects faults and then heals them
//! (`run.rs`), what is watched at the engine boundary (`observe.rs`) and the properties checked
//! on every seed (`oracle.rs`).
//!
//! A run is reproducible from `(scenario, seed)`: [`run::run`] returns the digest of every engine
//! input and output, identical for the same pair in any process.

pub mod archive;
pub mod conn;
pub mod driver;
pub mod effects;
pub mod evidence;
pub mod hosts;
pub mod interceptor;
pub mod line_hosts;
#[cfg(feature = "sim-mutants")]
pub mod mutants;
pub mod observe;
pub mod oracle;
pub mod replay;
pub mod run;
pub mod scenario;

pub use run::{repro, run, RunResult};

/// Seeds per scenario that `cargo test` and `fanout-sim mutants` run by default.
pub const DEFAULT_SEEDS: u64 = 8;

/// The seeds a `cargo test` of the simulator runs: exactly `SIM_SEED` when set, else
/// `0..SIM_SEEDS` (default [`DEFAULT_SEEDS`]).
pub fn test_seeds() -> Vec<u64> {
    if let Ok(one) = std::env::var("SIM_SEED") {
        return vec![one.parse().expect("SIM_SEED is a number")];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .map(|n| n.parse().expect("SIM_SEEDS is a number"))
        .unwrap_or(DEFAULT_SEEDS);
    (0..n).collect()
}
pub use scenario::Scenario;
