//! What the intercept_events corpus reaches: interceptor knobs, operations, actions, report
//! outcomes and interceptor errors, counted over every input.
//! `cargo run --release -p fanout-fuzz --example intercept_corpus_stats -- corpus/intercept_events/*`
use fanout_fuzz::intercept_events::{decode, driver, run_scenario, Op};
use std::collections::BTreeMap;

fn main() {
    fanout_fuzz::intercept_events::quiet_deliberate_panics();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut bump = |k: String| *counts.entry(k).or_default() += 1;
    for file in std::env::args().skip(1) {
        let data = std::fs::read(&file).expect("readable");
        let Some(scenario) = decode(&data) else {
            continue;
        };
        bump(format!("flags: {:?}", scenario.flags));
        for op in &scenario.ops {
            let name = format!("{op:?}");
            bump(format!(
                "op: {}",
                name.split([' ', '{']).next().unwrap_or("")
            ));
            if let Op::Chunk { action, .. } = op {
                bump(format!("action: {action:?}"));
            }
        }
        let reports = run_scenario(&scenario, driver(&scenario));
        bump(format!("sessions per input: {}", reports.len().min(5)));
        for report in reports {
            bump(format!("backends per session: {}", report.backends.len()));
            if let Some(e) = &report.interceptor_error {
                bump(format!("interceptor error: {e}"));
            }
            for b in &report.backends {
                bump(format!("outcome: {:?} {:?}", b.role, b.outcome));
            }
        }
    }
    for (k, n) in counts {
        println!("{n:>8}  {k}");
    }
}
