//! # fanout-engine: the sans-IO proxy core
//!
//! Everything fanout decides lives here: which backends a client's bytes go to, which response
//! the client hears, how much may be buffered, when to pause a reader, when to send a FIN, when a
//! secondary is cut loose, and what the duplex report says. The engine opens no socket, reads no
//! clock, starts no thread and draws no randomness, so the production driver (`io/`, on mio), the
//! simulator (`sim/`, on turmoil), the fuzzer and capture replay all run exactly this code.
//!
//! ## The contract
//!
//! A driver owns the sockets and the clock and talks to one [`Engine`] in three calls:
//!
//! 1. **Input** — [`Engine::handle`]`(now, event)` for every [`Event`]: a client accepted, bytes
//!    read, EOF, bytes flushed, a connect result, a socket failure, a passed deadline, a drain
//!    request. `now` is the driver's clock as an engine [`Instant`] and never goes backwards.
//! 2. **Output** — [`Engine::poll_command`] until it returns `None`, after *every* `handle`,
//!    carrying out each [`Command`] in order: connect, write, shut down, close, pause/resume
//!    reading or accepting, report, drained.
//! 3. **Timers** — [`Engine::poll_timeout`] after draining; when that instant passes, call
//!    `handle(now, Event::Timeout)`.
//!
//! The driver names sockets by [`SockId`] (a client [`ConnId`] it assigns at accept, plus
//! [`Peer::Client`] or [`Peer::Backend`]); `BackendId(0)` is the primary, `1..` the secondaries,
//! and the driver maps each to an address. Bytes arrive as [`bytes::Bytes`] and fan out by
//! reference count, never copied.
//!
//! ## What the engine guarantees
//!
//! - **Streaming**: every client byte read is written to each live backend in the same call, and
//!   every primary byte to the client; nothing waits for a whole message.
//! - **Backpressure as data**: the engine counts bytes written but not flushed per socket. Past
//!   [`Config::high_water`] it pauses the reader feeding that socket; at [`Config::low_water`] it
//!   resumes it. The client feeds the primary, the primary feeds the client.
//! - **Secondary isolation**: a secondary never pauses anyone. Past its budget, or its deadline
//!   after the primary's leg ended, it is closed, and the report says why.
//! - **Half-close**: a client's EOF becomes each backend's FIN once that backend's queue drained;
//!   the primary's EOF becomes the client's FIN once the client's queue drained.
//! - **No leaks**: a session ends when all its sockets are closed; then its timers are gone and
//!   [`Engine::is_idle`] holds once every session has ended.
//! - **Determinism**: the same events at the same instants give the same commands.
//!
//! Events naming sockets the engine does not know (already closed) are ignored, and the engine
//! never names a socket again after `Command::Close` or after the driver reported it failed.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod capture;
mod command;
mod compare;
mod config;
pub mod effect;
mod engine;
mod event;
pub mod framing;
mod ids;
mod intercept;
#[cfg(feature = "sim-mutants")]
pub mod mutants;
mod report;
mod session;
mod time;
mod timers;

pub use command::Command;
pub use config::{Config, ConfigError};
pub use effect::{EffectError, EffectId, EffectRequest, EffectResult};
pub use engine::Engine;
pub use event::{Event, Failure};
pub use ids::{BackendId, ConnId, Peer, SockId, UpstreamId};
pub use intercept::{Action, Actions, Interceptor, Passthrough};
pub use report::{BackendReport, Outcome, Role, SessionReport};
pub use time::Instant;

pub use bytes::Bytes;
