//! The engine's deadlines: an ordered set, so the earliest is always first and iteration order
//! never depends on hashing.

use crate::ids::{BackendId, ConnId};
use crate::time::Instant;
use std::collections::BTreeSet;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// The session may have gone idle (checked lazily against its last activity).
    Idle(ConnId),
    /// A backend connect attempt runs out.
    Connect(ConnId, BackendId),
    /// A secondary's time after the primary's leg ended runs out.
    Deadline(ConnId, BackendId),
    /// The drain period after `Event::Drain` ends.
    Drain,
    /// The engine stops waiting for an effect's result.
    Effect(ConnId, crate::effect::EffectId),
}

/// Scheduled deadlines. Each owner keeps the `Instant` it scheduled in a slot so it can move or
/// cancel it; [`Timers::set`] keeps slot and set in step.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, TimerKey)>,
}

impl Timers {
    /// Moves the timer `key`, whose current deadline is in `slot`, to `at` (or cancels it).
    pub(crate) fn set(&mut self, key: TimerKey, slot: &mut Option<Instant>, at: Option<Instant>) {
        if let Some(old) = slot.take() {
            self.set.remove(&(old, key));
        }
        if let Some(at) = at {
            self.set.insert((at, key));
            *slot = Some(at);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, if any. The owner's slot still names
    /// it; the owner clears it when handling the expiry.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}
