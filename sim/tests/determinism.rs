//! The same seed gives the same trace digest: twice in one process, and in separate processes.

use fanout_sim::{run, Scenario};
use std::process::Command;

#[test]
fn the_same_seed_twice_gives_the_same_digest() {
    for scenario in [
        Scenario::Churn,
        Scenario::DuplexBounce,
        Scenario::SlowClient,
        // Effects: their latencies, failures and late results are engine inputs in the digest.
        Scenario::InterceptBackendCrash,
    ] {
        let (a, b) = (run(scenario, 11), run(scenario, 11));
        assert_eq!(
            a.digest,
            b.digest,
            "{} seed 11 is not deterministic",
            scenario.name()
        );
        assert!(a.steps > 0);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let a = run(Scenario::Churn, 1);
    let b = run(Scenario::Churn, 2);
    assert_ne!(a.digest, b.digest);
}

#[test]
fn the_digest_is_the_same_across_processes() {
    let digest_line = || {
        let out = Command::new(env!("CARGO_BIN_EXE_fanout-sim"))
            .args(["run", "--seed", "5", "--scenario", "duplex-partition"])
            .output()
            .expect("run fanout-sim");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().unwrap().to_string()
    };
    let (first, second) = (digest_line(), digest_line());
    assert_eq!(first, second);
    assert_eq!(
        first,
        format!("{:016x}", run(Scenario::DuplexPartition, 5).digest)
    );
}

#[test]
fn a_swarm_prints_the_same_results_on_one_thread_and_on_several() {
    let swarm = |jobs: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_fanout-sim"))
            .args(["run", "--seeds", "0..6", "--scenario", "duplex-crash"])
            .args(["--jobs", jobs])
            .output()
            .expect("run fanout-sim");
        assert!(out.status.success());
        // Everything but the timings (seeds/s) and the closing count of threads is the same.
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        lines[..lines.len() - 1]
            .iter()
            .map(|l| l.split(" (").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(swarm("1"), swarm("3"));
}
