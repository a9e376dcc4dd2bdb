//! The simulator's self-test: run the default seeds against each deliberate engine bug and report
//! whether some oracle caught it. Built only with the `sim-mutants` feature.
//!
//! Each mutant has an aimed scenario ([`aimed`]) that states why it must catch it; a mutant only
//! some other scenario catches counts as missed, so a scenario that stops reaching the state it
//! was built for shows up here.

use crate::scenario::Scenario;
use fanout_engine::archive::ArchiveMutant;
use fanout_engine::mutants::Mutant;
use std::cell::Cell;

thread_local! {
    static CURRENT: Cell<Option<Mutant>> = const { Cell::new(None) };
    static ARCHIVE: Cell<Option<ArchiveMutant>> = const { Cell::new(None) };
}

/// The archiver bug the next archive world built on this thread gets.
pub fn current_archive() -> Option<ArchiveMutant> {
    ARCHIVE.with(Cell::get)
}

/// Runs `f` with the archiver bug `mutant` switched on.
pub fn with_archive<T>(mutant: Option<ArchiveMutant>, f: impl FnOnce() -> T) -> T {
    let before = ARCHIVE.with(|c| c.replace(mutant));
    let out = f();
    ARCHIVE.with(|c| c.set(before));
    out
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

/// What is aimed at a mutant: the scenario built to catch it, the oracle (as
/// [`crate::oracle::Failure::oracle`] names it) that must, and why it does. `fanout-sim mutants`
/// runs that scenario and requires that oracle among the ones that fail.
#[derive(Clone, Copy, Debug)]
pub struct Aim {
    pub scenario: Scenario,
    pub oracle: &'static str,
    pub why: &'static str,
}

/// The aim at each mutant (see [`Aim`]).
pub fn aimed(m: Mutant) -> Aim {
    let (scenario, oracle, why) = match m {
        Mutant::DropTailAfterEof => (
            Scenario::RelayHealthy,
            "report",
            "a response's last chunk is still queued for the client when the primary's EOF arrives; the sim's driver still delivers what it was handed before the close, so the client hears it all, but the primary's leg, closed without its FIN, can only end by the idle timer",
        ),
        Mutant::SecondaryBackpressuresClient => (
            Scenario::DuplexSlowReader,
            "isolation",
            "a secondary that never keeps up holds the client paused, so its bytes arrive later than without it",
        ),
        Mutant::ForgetSessionOnReset => (
            Scenario::DuplexReset,
            "report",
            "every session's secondary resets, which must not end (or mark) the primary's leg",
        ),
        Mutant::OutputJumpsPendingEffect => (
            Scenario::InterceptEffects,
            "rewritten-stream",
            "pipelined lines after an ASK are answered before its effect completes",
        ),
        Mutant::AnswersEscapeFlowControl => (
            Scenario::InterceptStalledClient,
            "invariant",
            "a client stops reading while its rewritten answers keep coming",
        ),
        Mutant::FinBeforePendingEffect => (
            Scenario::InterceptEffects,
            "rewritten-stream",
            "the primary's EOF arrives while a last ASK line's effect is pending: no client FIN before its answer",
        ),
        Mutant::SecondaryMemoryUnbounded => (
            Scenario::DuplexMemoryCap,
            "invariant",
            "8-24 uploads at once to never-reading secondaries pass a cap of half a budget to two budgets many times over",
        ),
        Mutant::SecondaryLosesPendingRequest => (
            Scenario::DuplexLatency,
            "request-bytes",
            "a latency spike on the secondary's link keeps its connect pending while clients send",
        ),
        Mutant::ResumeAtHighWater => (
            Scenario::SlowClient,
            "hysteresis",
            "slow readers keep the primary pausing and resuming around the client's water marks",
        ),
        Mutant::IdleFromSessionStart => (
            Scenario::SlowBackend,
            "client-bytes",
            "answers trickle in for longer than the idle timeout, so a timer blind to activity cuts them",
        ),
        Mutant::EqualLengthsMatch => (
            Scenario::DuplexGarbage,
            "report",
            "the lying secondary answers the primary's length with other bytes",
        ),
        Mutant::ClientFinWaitsForSecondaries => (
            Scenario::DuplexSlowReader,
            "isolation",
            "half-closing clients' primaries answer after the request's EOF, which the slow secondary must not delay",
        ),
        Mutant::AcceptGateOffByOne => (
            Scenario::AcceptGate,
            "invariant",
            "10-30 clients arrive at once at a gate of 2-4 connections",
        ),
        Mutant::DrainCutsAtOnce => (
            Scenario::DrainMidTraffic,
            "drain",
            "a SIGTERM arrives while answers still trickle: sessions the deadline would have let finish are cut at the drain's start",
        ),
    };
    Aim {
        scenario,
        oracle,
        why,
    }
}

/// What is aimed at an archiver bug: the archive scenario and oracle that must catch it.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveAim {
    pub scenario: crate::archive::ArchiveScenario,
    pub oracle: &'static str,
    pub why: &'static str,
}

/// The aim at each archiver bug (see [`ArchiveAim`]).
pub fn archive_aimed(m: ArchiveMutant) -> ArchiveAim {
    use crate::archive::ArchiveScenario;
    let (scenario, oracle, why) = match m {
        ArchiveMutant::DeleteBeforeCommit => (
            ArchiveScenario::ProxyKill,
            "lost",
            "a kill between the delete from beanstalkd and the store's commit leaves the job in neither",
        ),
        ArchiveMutant::ReinjectWithoutDelay => (
            ArchiveScenario::Healthy,
            "early",
            "rows are claimed up to the lead before they are due; put back with no delay, workers take them that early",
        ),
        ArchiveMutant::ReinjectKeepsRows => (
            ArchiveScenario::Healthy,
            "duplicates",
            "a row left in the store is claimed and put back again",
        ),
    };
    ArchiveAim {
        scenario,
        oracle,
        why,
    }
}
