//! The archive world (`fanout beanstalkd`'s logic against a beanstalkd model and a store model):
//! a fixed set of seeds per scenario (`SIM_SEEDS=N` runs more; `SIM_SEED=N` exactly one). A
//! failure names the seed, the oracle, and the commands that reproduce it.

use fanout_sim::archive::{repro, run, ArchiveScenario};

fn check(scenario: ArchiveScenario, test: &str) {
    let failures: Vec<String> = fanout_sim::test_seeds()
        .into_iter()
        .filter_map(|seed| {
            let r = run(scenario, seed);
            (!r.failures.is_empty()).then(|| {
                let found: Vec<String> = r
                    .failures
                    .iter()
                    .take(5)
                    .map(|f| format!("  {}: {}", f.oracle, f.detail))
                    .collect();
                format!(
                    "{} seed {seed}:\n{}\n  reproduce: SIM_SEED={seed} cargo test -p fanout-sim --test archive {test}\n         or: {}",
                    scenario.name(),
                    found.join("\n"),
                    repro(scenario, seed)
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn archive_healthy() {
    check(ArchiveScenario::Healthy, "archive_healthy");
}

#[test]
fn archive_store_outage() {
    check(ArchiveScenario::StoreOutage, "archive_store_outage");
}

#[test]
fn archive_proxy_kill() {
    check(ArchiveScenario::ProxyKill, "archive_proxy_kill");
}

#[test]
fn archive_server_restart() {
    check(ArchiveScenario::ServerRestart, "archive_server_restart");
}

#[test]
fn archive_shared_store() {
    check(ArchiveScenario::SharedStore, "archive_shared_store");
}

#[test]
fn every_archive_scenario_has_a_test() {
    let tested = [
        ArchiveScenario::Healthy,
        ArchiveScenario::StoreOutage,
        ArchiveScenario::ProxyKill,
        ArchiveScenario::ServerRestart,
        ArchiveScenario::SharedStore,
    ];
    for s in ArchiveScenario::ALL {
        assert!(tested.contains(&s), "no test runs {}", s.name());
    }
}

#[test]
fn the_same_seed_gives_the_same_archive_run() {
    for s in ArchiveScenario::ALL {
        assert_eq!(run(s, 3).digest, run(s, 3).digest, "{}", s.name());
    }
}

#[test]
fn the_archive_runs_reach_the_states_they_are_for() {
    // Without this, the oracles could pass by the archiver doing nothing.
    let healthy = run(ArchiveScenario::Healthy, 0);
    assert!(healthy.archived > 10 && healthy.reinjected == healthy.archived);
    assert!(
        healthy.peak_in_server < healthy.puts / 2,
        "far jobs left beanstalkd: it held at most {} of {} jobs",
        healthy.peak_in_server,
        healthy.puts
    );
    // Kills cut puts short (unanswered puts) and leave claims and pending rows to recover.
    let killed = run(ArchiveScenario::ProxyKill, 0);
    assert!(killed.archived > 0 && killed.delivered < killed.puts);
}
