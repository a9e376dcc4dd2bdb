//! Effects: work outside the engine that an interceptor asks for (a durable write, a lookup, a
//! verdict from a filter service), and whose result comes back as an input.
//!
//! The engine emits [`Command::Effect`](crate::Command::Effect) with an [`EffectId`] it assigns;
//! the driver's executor carries the request out wherever it likes (io: a bounded worker pool,
//! never the event loop; sim: a model with latency and failure faults) and hands the result back
//! with [`Event::EffectDone`](crate::Event::EffectDone). Results are engine inputs, so a capture
//! records them and `replay --engine` needs no outside system.
//!
//! Requests and results are opaque bytes to the engine: the interceptor and its executor agree on
//! what `kind` means and how `payload` is encoded.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One effect request, unique for the engine's life (assigned in request order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EffectId(pub u64);

/// What the interceptor asks the executor to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRequest {
    /// Which operation, in the interceptor's and executor's vocabulary (e.g. `"spam-verdict"`).
    pub kind: String,
    /// Its argument, encoded as the two agree.
    pub payload: Bytes,
}

impl EffectRequest {
    pub fn new(kind: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        EffectRequest {
            kind: kind.into(),
            payload: payload.into(),
        }
    }
}

/// Why an effect produced no result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EffectError {
    /// The executor ran it and it failed (the store refused, the service answered an error).
    Failed(Box<str>),
    /// The executor could not take it (its queue is full, it is shutting down).
    Unavailable(Box<str>),
    /// No result within [`Config::effect_timeout`](crate::Config::effect_timeout); the engine
    /// gave up on it and ignores a result that comes later.
    TimedOut,
}

impl fmt::Display for EffectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EffectError::Failed(why) => write!(f, "effect failed: {why}"),
            EffectError::Unavailable(why) => write!(f, "effect executor unavailable: {why}"),
            EffectError::TimedOut => write!(f, "effect timed out"),
        }
    }
}

impl std::error::Error for EffectError {}

/// What an effect produced.
pub type EffectResult = Result<Bytes, EffectError>;
