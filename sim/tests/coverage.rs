//! The scenarios reach the states they are named for: a scenario that never triggers its fault
//! would pass every oracle while testing nothing.

use fanout_engine::{Outcome, Role};
use fanout_sim::{run, RunResult, Scenario, DEFAULT_SEEDS};

fn runs(scenario: Scenario) -> Vec<RunResult> {
    (0..DEFAULT_SEEDS).map(|seed| run(scenario, seed)).collect()
}

fn count(runs: &[RunResult], role: Role, outcome: Outcome) -> u64 {
    runs.iter()
        .map(|r| r.outcomes.get(&(role, outcome)).copied().unwrap_or(0))
        .sum()
}

#[test]
fn slow_clients_engage_backpressure() {
    let runs = runs(Scenario::SlowClient);
    assert!(runs.iter().map(|r| r.pauses).sum::<u64>() > 0);
}

#[test]
fn a_never_reading_secondary_is_detached_at_its_budget() {
    let runs = runs(Scenario::DuplexNeverReads);
    assert!(count(&runs, Role::Secondary, Outcome::DetachedBudget) > 0);
    assert_eq!(count(&runs, Role::Secondary, Outcome::Ok), 0);
}

#[test]
fn the_secondaries_shared_cap_detaches_them_only_where_it_is_small() {
    let capped = runs(Scenario::DuplexMemoryCap);
    assert!(count(&capped, Role::Secondary, Outcome::DetachedMemory) > 0);
    assert_eq!(count(&capped, Role::Secondary, Outcome::Ok), 0);
    // At the default cap, never-reading secondaries meet only their budgets.
    let uncapped = runs(Scenario::DuplexNeverReads);
    assert_eq!(
        count(&uncapped, Role::Secondary, Outcome::DetachedMemory),
        0
    );
}

#[test]
fn a_slow_secondary_is_detached() {
    let runs = runs(Scenario::DuplexSlowReader);
    let detached = count(&runs, Role::Secondary, Outcome::DetachedBudget)
        + count(&runs, Role::Secondary, Outcome::DetachedDeadline);
    assert!(detached > 0);
}

#[test]
fn resets_and_crashes_reach_the_engine() {
    let resets = runs(Scenario::DuplexReset);
    assert!(count(&resets, Role::Secondary, Outcome::Reset) > 0);
    assert!(resets.iter().all(|r| r.failures > 0 || r.sessions == 0));
    let churn = runs(Scenario::Churn);
    assert!(churn.iter().map(|r| r.failures).sum::<u64>() > 0);
}

#[test]
fn a_healthy_duplex_secondary_ends_ok() {
    let runs = runs(Scenario::DuplexGarbage);
    assert!(count(&runs, Role::Secondary, Outcome::Ok) > 0);
    assert_eq!(
        count(&runs, Role::Primary, Outcome::Ok),
        runs.iter().map(|r| r.sessions).sum()
    );
}

#[test]
fn effects_fail_time_out_and_overlap() {
    let effects = runs(Scenario::InterceptEffects);
    assert!(effects.iter().map(|r| r.effects.failed).sum::<u64>() > 0);
    assert!(effects.iter().all(|r| r.effects.late == 0));
    assert!(effects.iter().any(|r| r.effects.peak_in_flight > 1));
    let timeouts = runs(Scenario::InterceptEffectTimeout);
    assert!(timeouts.iter().map(|r| r.effects.late).sum::<u64>() > 0);
}

#[test]
fn the_primary_crashes_with_effects_in_flight() {
    let runs = runs(Scenario::InterceptBackendCrash);
    assert!(
        runs.iter()
            .map(|r| r.effects.in_flight_at_crash)
            .sum::<u64>()
            > 0
    );
}

#[test]
fn stalled_clients_fill_their_queue_and_pause_the_primary() {
    let runs = runs(Scenario::InterceptStalledClient);
    let high_water = fanout_sim::scenario::sim_config(0).high_water;
    assert!(runs.iter().all(|r| r.pauses > 0));
    assert!(runs.iter().all(|r| r.peak_client_unflushed > high_water));
}

#[test]
fn a_drain_lets_some_sessions_finish_cuts_others_at_its_deadline_and_turns_late_clients_away() {
    let runs = runs(Scenario::DrainMidTraffic);
    assert!(count(&runs, Role::Primary, Outcome::Ok) > 0);
    assert!(count(&runs, Role::Primary, Outcome::DrainTimeout) > 0);
    assert!(runs.iter().any(|r| r.sessions < r.clients));
}

#[test]
fn a_stalled_proxy_sees_its_clock_leap_past_the_connect_timeout() {
    let runs = runs(Scenario::ProxyStall);
    let connect_timeout = fanout_sim::scenario::sim_config(0).connect_timeout;
    assert!(runs.iter().any(|r| r.longest_gap > connect_timeout));
    assert_eq!(
        count(&runs, Role::Primary, Outcome::Ok),
        runs.iter().map(|r| r.sessions).sum()
    );
}

#[test]
fn a_primary_that_closes_early_resets_some_sessions_and_finishes_others() {
    let runs = runs(Scenario::PrimaryEarlyClose);
    assert!(count(&runs, Role::Primary, Outcome::Reset) > 0);
    assert!(count(&runs, Role::Primary, Outcome::Ok) > 0);
    assert!(count(&runs, Role::Secondary, Outcome::Ok) > 0);
}
