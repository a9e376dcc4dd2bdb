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
}

impl Mutant {
    pub const ALL: [Mutant; 3] = [
        Mutant::DropTailAfterEof,
        Mutant::SecondaryBackpressuresClient,
        Mutant::ForgetSessionOnReset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::DropTailAfterEof => "drop-tail-after-eof",
            Mutant::SecondaryBackpressuresClient => "secondary-backpressures-client",
            Mutant::ForgetSessionOnReset => "forget-session-on-reset",
        }
    }
}
