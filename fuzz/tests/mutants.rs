//! Proves the oracles bite: with each of the engine's deliberate bugs switched on
//! (`fanout_engine::mutants`, the same ones `fanout-sim mutants` uses), some input of the committed
//! corpora must fail. The three bugs of the programmable layer (output jumping a pending effect,
//! answers escaping flow control, a FIN before a pending effect) need an interceptor, so
//! `intercept_events` inputs must catch those. Needs the `mutants` feature, so plain `cargo test`
//! skips it: `cargo test -p fanout-fuzz --features mutants --test mutants`.

#![cfg(feature = "mutants")]

use fanout_engine::mutants::Mutant;
use fanout_engine::Engine;
use fanout_fuzz::driver::Driver;
use fanout_fuzz::{engine_events, intercept_events};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// The committed corpus of `target`, sorted.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    inputs
}

fn fails(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

/// Some `engine_events` input fails with `mutant` on.
fn caught_by_engine_events(inputs: &[Vec<u8>], mutant: Mutant) -> bool {
    inputs
        .iter()
        .filter_map(|d| engine_events::decode(d))
        .any(|scenario| {
            let mut engine = Engine::new(scenario.limits.config()).unwrap();
            engine.set_mutant(Some(mutant));
            fails(|| {
                engine_events::run_scenario(&scenario, Driver::with_engine(engine));
            })
        })
}

/// Some `intercept_events` input fails with `mutant` on.
fn caught_by_intercept_events(inputs: &[Vec<u8>], mutant: Mutant) -> bool {
    inputs
        .iter()
        .filter_map(|d| intercept_events::decode(d))
        .any(|scenario| {
            let mut engine = intercept_events::engine(&scenario);
            engine.set_mutant(Some(mutant));
            fails(|| {
                intercept_events::run_scenario(
                    &scenario,
                    intercept_events::driver_with(&scenario, engine),
                );
            })
        })
}

#[test]
fn every_mutant_is_caught_by_the_committed_corpora() {
    let relay = corpus("engine_events");
    let intercept = corpus("intercept_events");
    intercept_events::quiet_deliberate_panics();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut missed = Vec::new();
    for mutant in Mutant::ALL {
        let by_relay = caught_by_engine_events(&relay, mutant);
        let by_intercept = caught_by_intercept_events(&intercept, mutant);
        println!(
            "{:<32} engine_events: {:<6} intercept_events: {}",
            mutant.name(),
            if by_relay { "caught" } else { "missed" },
            if by_intercept { "caught" } else { "missed" },
        );
        let needs_interceptor = matches!(
            mutant,
            Mutant::OutputJumpsPendingEffect
                | Mutant::AnswersEscapeFlowControl
                | Mutant::FinBeforePendingEffect
        );
        if !(by_intercept || (by_relay && !needs_interceptor)) {
            missed.push(mutant.name());
        }
    }
    std::panic::set_hook(quiet);
    assert!(missed.is_empty(), "no corpus input catches: {missed:?}");
}
