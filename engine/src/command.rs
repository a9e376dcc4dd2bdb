//! Outputs of the engine.

use crate::effect::{EffectId, EffectRequest};
use crate::ids::{ConnId, SockId, UpstreamId};
use crate::report::SessionReport;
use bytes::Bytes;

/// Something the engine asks the driver to do. The driver drains them with
/// [`Engine::poll_command`](crate::Engine::poll_command) after every input and carries them out
/// in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open a connection for the backend `sock.peer` to the driver's upstream `upstream`; answer
    /// with `Event::Connected` or `Event::ConnectFailed`. The engine times the attempt out itself.
    Connect { sock: SockId, upstream: UpstreamId },
    /// Queue `data` for the socket and write it as the socket accepts it, reporting progress with
    /// `Event::Flushed`. Never empty. Never sent before the socket is connected.
    Write { sock: SockId, data: Bytes },
    /// Shut down the socket's write side (send FIN). Only sent once every written byte has been
    /// flushed, so the driver never holds queued bytes behind it.
    Shutdown { sock: SockId },
    /// Drop the socket, discarding anything still queued. The engine never names it again.
    Close { sock: SockId },
    /// Stop reading from the socket until `ResumeRead`.
    PauseRead { sock: SockId },
    /// Read from the socket again (it may already hold readable data).
    ResumeRead { sock: SockId },
    /// Stop accepting new clients.
    PauseAccept,
    /// Accept new clients again.
    ResumeAccept,
    /// A finished session's record (duplex analysis).
    Report(Box<SessionReport>),
    /// After `Event::Drain`: no session is left; the driver may exit.
    Drained,
    /// Carry out `request` for session `conn` off the event loop and answer with
    /// `Event::EffectDone { id, .. }`. The engine bounds the wait itself
    /// ([`Config::effect_timeout`](crate::Config::effect_timeout)).
    Effect {
        conn: ConnId,
        id: EffectId,
        /// Boxed: commands are moved through a queue for every write, and this is the rare one.
        request: Box<EffectRequest>,
    },
}
