//! Output order across effects.
//!
//! Each pending effect is a gate in the session's output stream. Output issued while any gate is
//! pending waits behind the newest one; what `on_effect` writes for a gate goes out before the
//! output that waited behind it. Gates open strictly in request order: a later effect that
//! completes first keeps its output until every earlier one has completed.

use crate::effect::EffectId;
use crate::ids::Peer;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::VecDeque;

/// One write waiting behind a gate.
pub(crate) type Held = (Peer, Bytes);

#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) id: EffectId,
    /// The socket whose bytes the hook that asked for the effect was handling: what
    /// `on_effect` writes paces it, as if written then.
    source: Option<Peer>,
    /// When the engine stops waiting for the result.
    pub(crate) timer: Option<Instant>,
    /// `on_effect` ran for it.
    done: bool,
    /// What `on_effect` wrote: goes first.
    result: Vec<Held>,
    /// Output issued after the effect was requested (and before the next one was).
    after: Vec<Held>,
}

/// A session's pending effects, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    queue: VecDeque<Gate>,
}

impl Gates {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Effects whose result is still awaited.
    pub(crate) fn pending(&self) -> usize {
        self.queue.iter().filter(|g| !g.done).count()
    }

    pub(crate) fn push(&mut self, id: EffectId, timer: Option<Instant>, source: Option<Peer>) {
        self.queue.push_back(Gate {
            id,
            source,
            timer,
            done: false,
            result: Vec::new(),
            after: Vec::new(),
        });
    }

    /// The source of the hook that asked for effect `id`.
    pub(crate) fn source_of(&self, id: EffectId) -> Option<Peer> {
        self.queue
            .iter()
            .find(|g| g.id == id)
            .and_then(|g| g.source)
    }

    pub(crate) fn is_waiting(&self, id: EffectId) -> bool {
        self.queue.iter().any(|g| g.id == id && !g.done)
    }

    /// Holds a write: into the result of the gate being filled (`on_effect` running for it), or
    /// behind the newest gate.
    pub(crate) fn hold(&mut self, filling: Option<EffectId>, write: Held) {
        let gate = match filling.and_then(|id| self.queue.iter_mut().find(|g| g.id == id)) {
            Some(g) => &mut g.result,
            None => &mut self.queue.back_mut().expect("holding needs a gate").after,
        };
        gate.push(write);
    }

    /// Marks the effect's result written; returns its timer slot so the caller can cancel it.
    pub(crate) fn complete(&mut self, id: EffectId) -> Option<Instant> {
        let gate = self.queue.iter_mut().find(|g| g.id == id)?;
        gate.done = true;
        gate.timer.take()
    }

    /// Output that may go now: every completed gate at the front, in order.
    pub(crate) fn release(&mut self) -> Vec<Held> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|g| g.done) {
            let g = self.queue.pop_front().expect("checked");
            out.extend(g.result);
            out.extend(g.after);
        }
        out
    }

    /// Drops every gate (the session is over); returns the ids and timers still set.
    pub(crate) fn clear(&mut self) -> Vec<(EffectId, Option<Instant>)> {
        self.queue.drain(..).map(|g| (g.id, g.timer)).collect()
    }
}
