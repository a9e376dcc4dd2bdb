//! The programmable layer: em-proxy's callbacks (`on_connect`, `on_data`, `on_response`,
//! `on_finish`) as a sans-IO trait, with named backends, routing, holding, effects and bypass.
//!
//! # Who calls what, in which order
//!
//! The engine owns one [`Interceptor`] and calls it for every session:
//!
//! 1. [`on_connect`](Interceptor::on_connect) once, when the client is accepted. It returns the
//!    session's [`State`](Interceptor::State) and usually opens backends with [`Conn::open`].
//! 2. Then, as things happen, in the order they happen:
//!    [`on_backend_connected`](Interceptor::on_backend_connected) /
//!    [`on_connect_failed`](Interceptor::on_connect_failed) for each backend it opened;
//!    [`on_data`](Interceptor::on_data) for client bytes; [`on_client_eof`](Interceptor::on_client_eof);
//!    [`on_response`](Interceptor::on_response) for bytes from any backend, primary or secondary;
//!    [`on_finish`](Interceptor::on_finish) when a backend stops sending (EOF or failure);
//!    [`on_effect`](Interceptor::on_effect) when an effect it asked for completes or times out.
//! 3. [`on_end`](Interceptor::on_end) once, after every socket of the session closed, with the
//!    session's report; the state is dropped after it.
//!
//! Every hook gets a [`Conn`]: the session as the interceptor sees it, and the only way to act.
//! Nothing a hook does touches a socket directly: the engine turns it into commands, applies the
//! water marks to every route the interceptor uses, and keeps the session's output in order
//! while effects are pending. Bytes arrive split anywhere; a hook that wants whole messages runs
//! a [`framing`](crate::framing) framer over them.
//!
//! # What the engine guarantees an interceptor
//!
//! - **Flow control on every route**: a write made while handling bytes from a source (the
//!   client, or a backend) records the route source → destination. When any destination a
//!   source feeds holds more than the high-water mark unflushed, the source is paused until all
//!   are at or below the low mark. Answered (client → client), rewritten and rerouted bytes are
//!   bounded like relayed ones. What `on_effect` writes counts as written by the source whose
//!   hook asked for the effect. Secondaries never pause anyone: past their budget they are
//!   detached.
//! - **Order across effects**: output issued after [`Conn::effect`] waits, in order, behind the
//!   effect; what [`on_effect`](Interceptor::on_effect) writes goes out first, at the effect's
//!   place. A pipelining client hears answers in request order. No FIN leaves while an effect is
//!   pending.
//! - **Bounds**: held bytes and output waiting behind effects count against
//!   [`Config::max_held`](crate::Config::max_held); a session opens at most
//!   [`Config::max_backends`](crate::Config::max_backends) backends and has at most
//!   [`Config::max_effects`](crate::Config::max_effects) pending effects, each waited for at
//!   most [`Config::effect_timeout`](crate::Config::effect_timeout).
//! - **Containment**: a hook that panics or misuses the API ([`Misuse`]) ends its own session
//!   only: every socket is closed, the report says `interceptor-error`, and the engine goes on.
//! - **Bypass**: a backend opened with [`Open::relay_client`] gets the client's bytes without
//!   `on_data`; with [`Open::relay_server`] its bytes skip `on_response` (em-proxy's
//!   `relay_client`/`relay_server`), which is how relay and duplex ([`Passthrough`]) run.

use crate::effect::{EffectId, EffectResult};
use crate::event::Failure;
use crate::ids::BackendId;
use crate::report::SessionReport;
use bytes::Bytes;
use std::fmt;

pub use crate::conn::Conn;
pub use crate::report::Role;

/// How [`Conn::open`] opens a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    /// `Primary`: its answers are the client's by default and pace it; its end ends the
    /// client's stream by default. `Secondary`: a mirror, compared with the primary, detached
    /// past its budget or deadline, never heard by the client unless a hook forwards its bytes.
    pub role: Role,
    /// Client bytes go straight to this backend, without `on_data`.
    pub relay_client: bool,
    /// This backend's bytes skip `on_response`: a primary's go straight to the client, a
    /// secondary's only to the comparison.
    pub relay_server: bool,
}

impl Open {
    /// The backend the client hears.
    pub const fn primary() -> Open {
        Open {
            role: Role::Primary,
            relay_client: false,
            relay_server: false,
        }
    }

    /// A mirror whose answers are compared, never heard.
    pub const fn secondary() -> Open {
        Open {
            role: Role::Secondary,
            relay_client: false,
            relay_server: false,
        }
    }

    /// Client bytes bypass `on_data` for this backend.
    pub const fn relay_client(self) -> Open {
        Open {
            relay_client: true,
            ..self
        }
    }

    /// This backend's bytes bypass `on_response`.
    pub const fn relay_server(self) -> Open {
        Open {
            relay_server: true,
            ..self
        }
    }
}

/// Why a backend stopped sending (the argument of [`Interceptor::on_finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It sent EOF: its response is complete.
    Eof,
    /// The connection failed after it was established.
    Failed(Failure),
}

/// What [`Interceptor::on_finish`] wants done with the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Finish {
    /// The engine's rule: the primary's EOF becomes the client's FIN once its queue drained; the
    /// primary failing before its EOF closes the client at once; a secondary's end changes
    /// nothing for the client.
    #[default]
    Default,
    /// Leave the client as it is (em-proxy's `:keep`).
    Keep,
    /// Send the client what is queued, then FIN and close it (em-proxy's `:close`).
    Close,
}

/// An interceptor broke the API's rules; its session is closed and reported
/// `interceptor-error`, and no hook is called for it again except `on_end`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misuse {
    /// A hook panicked; the message is the panic's.
    Panicked(String),
    /// Named a backend the session never opened.
    UnknownBackend(BackendId),
    /// Opened more than `Config::max_backends` backends.
    TooManyBackends,
    /// Opened a primary while another primary is open.
    SecondPrimary,
    /// Wrote to a socket after asking for its FIN.
    WriteAfterFin,
    /// Held bytes plus output waiting behind effects passed `Config::max_held`.
    HeldOverLimit,
    /// More than `Config::max_effects` effects pending.
    TooManyEffects,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::Panicked(why) => write!(f, "a hook panicked: {why}"),
            Misuse::UnknownBackend(b) => write!(f, "named backend {} it never opened", b.0),
            Misuse::TooManyBackends => write!(f, "opened more backends than max-backends"),
            Misuse::SecondPrimary => write!(f, "opened a second primary while one is open"),
            Misuse::WriteAfterFin => write!(f, "wrote to a socket after asking for its FIN"),
            Misuse::HeldOverLimit => write!(f, "held more bytes than max-held"),
            Misuse::TooManyEffects => write!(f, "had more effects pending than max-effects"),
        }
    }
}

/// Programmable behaviour. See the [module documentation](self) for the call order and what the
/// engine guarantees. Every method is sans-IO: it may keep state, but it reads no clock (use
/// [`Conn::now`]), touches no socket and draws no unseeded randomness, so every driver, the
/// simulator, the fuzzer and capture replay run it unchanged.
///
/// Defaults make a transparent proxy: client bytes go to every backend that does not bypass
/// `on_data`, the primary's bytes go to the client, a secondary's bytes are only compared.
pub trait Interceptor {
    /// What the interceptor keeps per session, made by `on_connect`.
    type State;

    /// A client was accepted. Open backends here (or later, e.g. once the first request says
    /// where it goes) and return the session's state.
    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Self::State;

    /// A backend opened with [`Conn::open`] is connected; bytes sent to it before now are on
    /// their way.
    fn on_backend_connected(&mut self, _st: &mut Self::State, _conn: &mut Conn<'_>, _b: BackendId) {
    }

    /// A backend could not be connected (em-proxy never says). [`Conn::unsent`] holds the
    /// bytes it never got. When the primary failed and the hook opens no new primary, the
    /// client is closed.
    fn on_connect_failed(
        &mut self,
        _st: &mut Self::State,
        _conn: &mut Conn<'_>,
        _b: BackendId,
        _reason: Failure,
    ) {
    }

    /// The client sent `data`. The default forwards it to every backend not bypassing this hook.
    fn on_data(&mut self, _st: &mut Self::State, conn: &mut Conn<'_>, data: Bytes) {
        conn.forward(data);
    }

    /// The client sent EOF. After this hook every backend gets its FIN once its queue (and any
    /// output waiting behind effects) drained.
    fn on_client_eof(&mut self, _st: &mut Self::State, _conn: &mut Conn<'_>) {}

    /// Backend `b` sent `data`. The default sends the primary's bytes to the client and drops a
    /// secondary's (the engine compares them either way).
    fn on_response(
        &mut self,
        _st: &mut Self::State,
        conn: &mut Conn<'_>,
        b: BackendId,
        data: Bytes,
    ) {
        if conn.role(b) == Some(Role::Primary) {
            conn.answer(data);
        }
    }

    /// Backend `b` stopped sending. The return value says what happens to the client.
    fn on_finish(
        &mut self,
        _st: &mut Self::State,
        _conn: &mut Conn<'_>,
        _b: BackendId,
        _end: End,
    ) -> Finish {
        Finish::Default
    }

    /// The effect `id` (from [`Conn::effect`]) completed, failed or timed out. What this hook
    /// writes goes out at the effect's place in the session's output.
    fn on_effect(
        &mut self,
        _st: &mut Self::State,
        _conn: &mut Conn<'_>,
        _id: EffectId,
        _result: EffectResult,
    ) {
    }

    /// The session ended: every socket is closed. `report` is its record (also emitted as
    /// `Command::Report` when reports are on).
    fn on_end(&mut self, _st: Self::State, _report: &SessionReport) {}
}

/// relay and duplex on the programmable layer: backend 0 is the primary (upstream 0), backends
/// `1..=Config::secondaries` the secondaries (upstreams `1..`), all opened at accept and all
/// bypassing the hooks, so no byte pays for a call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough;

impl Interceptor for Passthrough {
    type State = ();

    fn on_connect(&mut self, conn: &mut Conn<'_>) {
        let bypass = |o: Open| o.relay_client().relay_server();
        let _ = conn.open(crate::ids::UpstreamId(0), bypass(Open::primary()));
        for i in 1..=conn.config().secondaries {
            let _ = conn.open(crate::ids::UpstreamId(i), bypass(Open::secondary()));
        }
    }
}
