//! Deliberate bugs, compiled only with the `sim-mutants` feature, so `fanout-sim mutants` can
//! prove the simulator's oracles catch real mistakes. Each is a one-line deviation at the place
//! where the real rule lives.

/// A deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// Once the primary's EOF arrives, close the client at once instead of draining its queue
    /// and sending a FIN: the last chunk of a response is lost.
    DropTailAfterEof,
    /// Let a secondary's unflushed bytes pause the client as the primary's do.
    SecondaryBackpressuresClient,
    /// When a backend resets, forget the whole session without closing its other sockets.
    ForgetSessionOnReset,
    /// Output issued while an effect is pending is written at once instead of waiting behind
    /// the effect: a pipelining client hears answers out of order.
    OutputJumpsPendingEffect,
    /// Writes by a hook record no route, so answered and rerouted bytes never pause their
    /// source: a client that does not read its answers grows the proxy's memory without bound.
    AnswersEscapeFlowControl,
    /// FINs go out while an effect is pending: what the effect's hook writes lands after them.
    FinBeforePendingEffect,
    /// The engine-wide cap on bytes held for secondaries (`Config::secondary_memory`) is never
    /// checked: every session's never-reading secondary holds up to its budget, together
    /// sessions × budget.
    SecondaryMemoryUnbounded,
    /// Client bytes that arrive while a secondary is still connecting are dropped instead of
    /// held for it: the secondary hears the request from the middle.
    SecondaryLosesPendingRequest,
    /// A paused source resumes as soon as its destinations are back at the high-water mark, not
    /// the low one: no hysteresis, a pause and a resume for every read.
    ResumeAtHighWater,
    /// The idle timer counts from the session's start and ignores activity: a long, busy
    /// session is cut at `idle_timeout`.
    IdleFromSessionStart,
    /// A secondary whose response has the primary's length is reported as matching it,
    /// whatever its bytes.
    EqualLengthsMatch,
    /// The client's FIN is passed on to the primary only once no secondary holds unflushed
    /// bytes: a slow secondary delays the primary's answer to a half-closed request.
    ClientFinWaitsForSecondaries,
    /// The accept gate counts from zero wrong: one client more than `max_connections` is let in
    /// before accepting pauses.
    AcceptGateOffByOne,
    /// A drain closes every open session at once (`drain-timeout`) instead of letting them
    /// finish within `drain_timeout`: a SIGTERM in the middle of traffic cuts answers short.
    DrainCutsAtOnce,
}

impl Mutant {
    pub const ALL: [Mutant; 14] = [
        Mutant::DropTailAfterEof,
        Mutant::SecondaryBackpressuresClient,
        Mutant::ForgetSessionOnReset,
        Mutant::OutputJumpsPendingEffect,
        Mutant::AnswersEscapeFlowControl,
        Mutant::FinBeforePendingEffect,
        Mutant::SecondaryMemoryUnbounded,
        Mutant::SecondaryLosesPendingRequest,
        Mutant::ResumeAtHighWater,
        Mutant::IdleFromSessionStart,
        Mutant::EqualLengthsMatch,
        Mutant::ClientFinWaitsForSecondaries,
        Mutant::AcceptGateOffByOne,
        Mutant::DrainCutsAtOnce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::DropTailAfterEof => "drop-tail-after-eof",
            Mutant::SecondaryBackpressuresClient => "secondary-backpressures-client",
            Mutant::ForgetSessionOnReset => "forget-session-on-reset",
            Mutant::OutputJumpsPendingEffect => "output-jumps-pending-effect",
            Mutant::AnswersEscapeFlowControl => "answers-escape-flow-control",
            Mutant::FinBeforePendingEffect => "fin-before-pending-effect",
            Mutant::SecondaryMemoryUnbounded => "secondary-memory-unbounded",
            Mutant::SecondaryLosesPendingRequest => "secondary-loses-pending-request",
            Mutant::ResumeAtHighWater => "resume-at-high-water",
            Mutant::IdleFromSessionStart => "idle-from-session-start",
            Mutant::EqualLengthsMatch => "equal-lengths-match",
            Mutant::ClientFinWaitsForSecondaries => "client-fin-waits-for-secondaries",
            Mutant::AcceptGateOffByOne => "accept-gate-off-by-one",
            Mutant::DrainCutsAtOnce => "drain-cuts-at-once",
        }
    }
}
