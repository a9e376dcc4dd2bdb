//! The simulator's self-test: run the default seeds against each deliberate engine bug and report
//! whether some oracle caught it. Built only with the `sim-mutants` feature.
//!
//! Each mutant has an aimed scenario ([`aimed`]) that states why it must catch it; a mutant only
//! some other scenario catches counts as missed, so a scenario that stops reaching the state it
//! was built for shows up here.

use crate::scenario::Scenario;
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

/// The scenario built to catch each mutant, and why it does: `fanout-sim mutants` runs it first
/// and requires it to catch the mutant.
pub fn aimed(m: Mutant) -> (Scenario, &'static str) {
    match m {
        Mutant::DropTailAfterEof => (
            Scenario::RelayHealthy,
            "a response's last chunk is still queued for the client when the primary's EOF arrives",
        ),
        Mutant::SecondaryBackpressuresClient => (
            Scenario::DuplexSlowReader,
            "a secondary that never keeps up holds the client paused, so its session never ends",
        ),
        Mutant::ForgetSessionOnReset => (
            Scenario::DuplexReset,
            "every session's secondary resets, which must not end (or mark) the primary's leg",
        ),
        Mutant::OutputJumpsPendingEffect => (
            Scenario::InterceptEffects,
            "pipelined lines after an ASK are answered before its effect completes",
        ),
        Mutant::AnswersEscapeFlowControl => (
            Scenario::InterceptStalledClient,
            "a client stops reading while its rewritten answers keep coming",
        ),
        Mutant::FinBeforePendingEffect => (
            Scenario::InterceptEffects,
            "the primary's EOF arrives while a last ASK line's effect is pending: no client FIN before its answer",
        ),
        Mutant::SecondaryMemoryUnbounded => (
            Scenario::DuplexMemoryCap,
            "8-24 uploads at once to never-reading secondaries pass a cap of half a budget to two budgets many times over",
        ),
    }
}
