//! Interceptor hooks: the em-proxy callbacks (`on_connect`, `on_data`, `on_response`,
//! `on_finish`) as a sans-IO trait.
//!
//! The engine calls an [`Interceptor`] for every client byte it reads and every byte the primary
//! sends back. The interceptor answers by pushing [`Action`]s: forward bytes to the backends,
//! answer the client directly, or close the session. Doing nothing drops the bytes. Relay and
//! duplex use [`Passthrough`], which forwards everything unchanged.
//!
//! Interceptors see bytes as they arrive, split anywhere; a protocol-aware interceptor runs a
//! [`Framer`](crate::framing::Framer) over them to see whole messages ([`crate::framing`]).

use crate::ids::ConnId;
use bytes::Bytes;

/// What an interceptor wants done with the bytes it was handed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes on toward the other side (client bytes to every backend, primary bytes to
    /// the client).
    Forward(Bytes),
    /// Send these bytes back to the side they came from's counterpart: for client data, answer the
    /// client without involving the backends.
    Answer(Bytes),
    /// End the session now: close every socket.
    Close,
}

/// The list an interceptor pushes its actions into. The engine reuses one, so pushing allocates
/// nothing in the steady state.
#[derive(Debug, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    pub fn forward(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.0.push(Action::Forward(data));
        }
    }

    pub fn answer(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.0.push(Action::Answer(data));
        }
    }

    pub fn close(&mut self) {
        self.0.push(Action::Close);
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.0.drain(..)
    }
}

/// Programmable behaviour, called by the engine in this order for each session:
/// `on_connect` once, then `on_data` / `on_response` as bytes arrive, then `on_finish` once when
/// the session has ended. Every method is sans-IO: it may keep state, but it reads no clock and
/// touches no socket.
pub trait Interceptor {
    /// A client connected.
    fn on_connect(&mut self, _conn: ConnId) {}

    /// The client sent `data`. The default forwards it to every backend.
    fn on_data(&mut self, _conn: ConnId, data: Bytes, actions: &mut Actions) {
        actions.forward(data);
    }

    /// The primary sent `data`. The default forwards it to the client.
    fn on_response(&mut self, _conn: ConnId, data: Bytes, actions: &mut Actions) {
        actions.forward(data);
    }

    /// The session ended; forget anything kept for it.
    fn on_finish(&mut self, _conn: ConnId) {}
}

/// The transparent interceptor of relay and duplex: every byte forwarded unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough;

impl Interceptor for Passthrough {}
