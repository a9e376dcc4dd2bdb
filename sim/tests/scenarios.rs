//! The simulation suite: a fixed set of seeds per scenario (`SIM_SEEDS=N` runs more; `SIM_SEED=N`
//! runs exactly one). A failure names the seed, the property and the command that reproduces it.

use fanout_sim::{repro, run, Scenario};

fn check(scenario: Scenario) {
    let failures: Vec<String> = fanout_sim::test_seeds()
        .into_iter()
        .filter_map(|seed| {
            let r = run(scenario, seed);
            r.failure.map(|why| {
                let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-evidence");
                format!(
                    "{} seed {seed}: {why}\n  reproduce: {}\n{}",
                    scenario.name(),
                    repro(scenario, seed),
                    fanout_sim::evidence::leave(&dir, scenario, seed, r.digest, None)
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

macro_rules! scenarios {
    ($($test:ident => $scenario:ident,)*) => {
        $(
            #[test]
            fn $test() {
                check(Scenario::$scenario);
            }
        )*

        #[test]
        fn every_scenario_has_a_test() {
            let tested = [$(Scenario::$scenario),*];
            for s in Scenario::ALL {
                assert!(tested.contains(&s), "no test runs {}", s.name());
                let names = stringify!($($test)*);
                assert!(names.contains(&s.name().replace('-', "_")), "test names follow scenario names");
            }
        }
    };
}

scenarios! {
    relay_healthy => RelayHealthy,
    duplex_partition => DuplexPartition,
    duplex_hold => DuplexHold,
    duplex_crash => DuplexCrash,
    duplex_bounce => DuplexBounce,
    duplex_slow_reader => DuplexSlowReader,
    duplex_never_reads => DuplexNeverReads,
    duplex_memory_cap => DuplexMemoryCap,
    duplex_garbage => DuplexGarbage,
    duplex_latency => DuplexLatency,
    duplex_reset => DuplexReset,
    primary_crash => PrimaryCrash,
    client_half_close => ClientHalfClose,
    client_vanish => ClientVanish,
    slow_client => SlowClient,
    slow_backend => SlowBackend,
    churn => Churn,
    intercept_effects => InterceptEffects,
    intercept_effect_timeout => InterceptEffectTimeout,
    intercept_backend_crash => InterceptBackendCrash,
    intercept_stalled_client => InterceptStalledClient,
    intercept_churn => InterceptChurn,
    primary_link_faults => PrimaryLinkFaults,
    client_link_faults => ClientLinkFaults,
    duplex_secondaries => DuplexSecondaries,
    many_sessions => ManySessions,
    accept_gate => AcceptGate,
    drain_mid_traffic => DrainMidTraffic,
    proxy_stall => ProxyStall,
    primary_early_close => PrimaryEarlyClose,
    pipelined_clients => PipelinedClients,
}
