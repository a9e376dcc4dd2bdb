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
//! [`Peer::Client`] or [`Peer::Backend`]). Backends are numbered per session by the engine in the
//! order they are opened; `Command::Connect` names the [`UpstreamId`] — an entry of the driver's
//! table of addresses, fixed at start — to connect it to. Bytes arrive as [`bytes::Bytes`] and
//! fan out by reference count, never copied.
//!
//! 4. **Effects** — [`Command::Effect`] asks the driver's executor for work outside the engine
//!    (a durable write, a lookup); the driver answers, off its event loop, with
//!    [`Event::EffectDone`]. The engine times the wait out itself ([`Config::effect_timeout`]).
//!
//! 5. **Splicing** — a driver that can move bytes between sockets without reading them (io:
//!    `splice(2)`) asks [`Engine::splice_route`] before each move; where the engine names a
//!    destination (the bytes would reach it unchanged and nothing needs to see them), the driver
//!    may move them and report [`Event::Spliced`] instead of [`Event::Read`]. Drivers that never
//!    ask lose nothing.
//!
//! ## The programmable layer
//!
//! What happens to the bytes is decided by an [`Interceptor`] ([`intercept`] documents the call
//! order and what it may do): it opens backends to upstreams, routes client bytes to all or some
//! of them, rewrites, drops, holds or answers them, passes or rewrites each backend's answer,
//! decides what a backend's end does to the client, and asks for effects. relay and duplex are
//! the [`Passthrough`] interceptor, whose backends bypass every hook. [`framing`] turns a byte
//! stream into whole messages for interceptors that want them.
//!
//! ## What the engine guarantees
//!
//! - **Streaming**: every client byte read is written to each live backend in the same call, and
//!   every primary byte to the client; nothing waits for a whole message.
//! - **Backpressure as data**: the engine counts bytes written but not flushed per socket (plus
//!   bytes waiting behind an effect). Past [`Config::high_water`] it pauses every reader whose
//!   bytes were routed to that socket; at [`Config::low_water`] it resumes it. In relay the client
//!   feeds the primary and the primary the client; an interceptor's answers make the client feed
//!   itself, so they are paced too.
//! - **Secondary isolation**: a secondary never pauses anyone. Past its budget, or its deadline
//!   after the primary's leg ended, it is closed, and the report says why.
//! - **Half-close**: a client's EOF becomes each backend's FIN once that backend's queue drained;
//!   the primary's EOF becomes the client's FIN once the client's queue drained.
//! - **No leaks**: a session ends when all its sockets are closed; then its timers and pending
//!   effects are gone and [`Engine::is_idle`] holds once every session has ended.
//! - **Containment**: an interceptor hook that panics or misuses the API ends its own session
//!   (reported `interceptor-error`), never the engine.
//! - **Determinism**: the same events at the same instants give the same commands.
//!
//! Events naming sockets the engine does not know (already closed) are ignored, and the engine
//! never names a socket again after `Command::Close` or after the driver reported it failed.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod archive;
pub mod capture;
mod command;
mod compare;
mod config;
mod conn;
pub mod contract;
mod core;
pub mod effect;
mod engine;
mod event;
pub mod framing;
mod gate;
mod ids;
pub mod intercept;
mod leg;
#[cfg(feature = "sim-mutants")]
pub mod mutants;
mod report;
mod session;
mod side;
mod time;
mod timers;

pub use command::Command;
pub use config::{Config, ConfigError};
pub use effect::{EffectError, EffectId, EffectRequest, EffectResult};
pub use engine::Engine;
pub use event::{Event, Failure};
pub use ids::{BackendId, ConnId, Peer, SockId, UpstreamId};
pub use intercept::{Conn, End, Finish, Interceptor, Misuse, Open, Passthrough};
pub use report::{BackendReport, Outcome, Role, SessionReport};
pub use time::Instant;

pub use bytes::Bytes;
