//! Proves the engine_events oracles bite: with each of the engine's deliberate bugs switched on
//! (`fanout_engine::mutants`, the same ones `fanout-sim mutants` uses), some input of the committed
//! corpus must fail. Needs the `mutants` feature, so plain `cargo test` skips it:
//! `cargo test -p fanout-fuzz --features mutants --test mutants`.

#![cfg(feature = "mutants")]

use fanout_engine::mutants::Mutant;
use fanout_engine::Engine;
use fanout_fuzz::driver::Driver;
use fanout_fuzz::engine_events::{decode, run_scenario};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_mutant_is_caught_by_the_engine_events_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/engine_events");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut missed = Vec::new();
    for mutant in Mutant::ALL {
        let caught = inputs.iter().filter_map(|d| decode(d)).any(|scenario| {
            let mut engine = Engine::new(scenario.limits.config()).unwrap();
            engine.set_mutant(Some(mutant));
            catch_unwind(AssertUnwindSafe(|| {
                run_scenario(&scenario, Driver::with_engine(engine))
            }))
            .is_err()
        });
        if !caught {
            missed.push(mutant.name());
        }
    }
    std::panic::set_hook(quiet);
    assert!(missed.is_empty(), "no corpus input catches: {missed:?}");
}
