//! What the engine_events corpus reaches: configurations and report outcomes, counted over every
//! input. `cargo run --release -p fanout-fuzz --example engine_corpus_stats -- corpus/engine_events/*`
use fanout_fuzz::driver::Driver;
use fanout_fuzz::engine_events::{decode, run_scenario};
use std::collections::BTreeMap;

fn main() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut bump = |k: String| *counts.entry(k).or_default() += 1;
    for file in std::env::args().skip(1) {
        let data = std::fs::read(&file).expect("readable");
        let Some(scenario) = decode(&data) else {
            continue;
        };
        let cfg = scenario.limits.config();
        bump(format!("config: {} secondaries", cfg.secondaries));
        bump(format!("config: reports {}", cfg.reports));
        for op in &scenario.ops {
            let name = format!("{op:?}");
            bump(format!(
                "op: {}",
                name.split([' ', '{']).next().unwrap_or("")
            ));
        }
        for report in run_scenario(&scenario, Driver::new(cfg)) {
            for b in &report.backends {
                bump(format!("outcome: {:?} {:?}", b.role, b.outcome));
                if let Some(m) = b.matches_primary {
                    let diff = if b.first_difference.is_some() {
                        " at offset"
                    } else {
                        ""
                    };
                    bump(format!("secondary matches primary: {m}{diff}"));
                }
            }
        }
    }
    for (k, n) in counts {
        println!("{n:>8}  {k}");
    }
}
