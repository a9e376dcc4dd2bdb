//! The simulator's self-test: run the default seeds against each deliberate engine bug and report
//! whether some oracle caught it. Built only with the `sim-mutants` feature.

use fanout_engine::mutants::Mutant;
use std::cell::Cell;

thread_local! {
    static CURRENT: Cell<Option<Mutant>> = const { Cell::new(None) };
}

/// The bug the next engine built on this thread gets (the simulation runs on one thread).
pub fn current() -> Option<Mutant> {
    CURRENT.with(Cell::get)
}

/// Runs `f` with `mutant` switched on for every engine it builds.
pub fn with<T>(mutant: Option<Mutant>, f: impl FnOnce() -> T) -> T {
    let before = CURRENT.with(|c| c.replace(mutant));
    let out = f();
    CURRENT.with(|c| c.set(before));
    out
}
