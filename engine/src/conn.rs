//! [`Conn`]: a session as an interceptor's hook sees it, and the only way a hook acts.

use crate::config::Config;
use crate::core::Core;
use crate::effect::{EffectId, EffectRequest};
use crate::ids::{BackendId, ConnId, Peer, UpstreamId};
use crate::intercept::{Misuse, Open, Role};
use crate::session::Ctx;
use crate::time::Instant;
use bytes::Bytes;

/// The session a hook runs for (em-proxy's `conn`). Everything it does is applied by the engine
/// at once, in call order, under the session's limits; a call that breaks the API's rules
/// ([`Misuse`]) ends the session after the hook returns, and the call itself does nothing.
pub struct Conn<'a> {
    core: &'a mut Core,
    ctx: Ctx<'a>,
}

impl std::fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("conn", &self.core.conn)
            .field("backends", &self.core.legs.len())
            .finish()
    }
}

impl<'a> Conn<'a> {
    pub(crate) fn new(core: &'a mut Core, ctx: &'a mut Ctx<'_>) -> Conn<'a> {
        Conn {
            core,
            ctx: Ctx {
                now: ctx.now,
                cfg: ctx.cfg,
                out: &mut *ctx.out,
                timers: &mut *ctx.timers,
                effects: &mut *ctx.effects,
                next_effect: &mut *ctx.next_effect,
                secondary_held: &mut *ctx.secondary_held,
                #[cfg(feature = "sim-mutants")]
                mutant: ctx.mutant,
            },
        }
    }

    // ---- what the session is ------------------------------------------------------------

    /// The session (the driver's id of the client connection).
    pub fn id(&self) -> ConnId {
        self.core.conn
    }

    /// The client's address, as the driver printed it.
    pub fn client_addr(&self) -> &str {
        &self.core.client_addr
    }

    /// The instant of the event being handled (the engine's clock; hooks read no other).
    pub fn now(&self) -> Instant {
        self.ctx.now
    }

    /// The engine's limits.
    pub fn config(&self) -> &Config {
        self.ctx.cfg
    }

    /// Backend `b`'s role, if the session opened it.
    pub fn role(&self, b: BackendId) -> Option<Role> {
        self.core.legs.get(usize::from(b.0)).map(|l| l.role)
    }

    /// The upstream backend `b` was opened to.
    pub fn upstream(&self, b: BackendId) -> Option<UpstreamId> {
        self.core.legs.get(usize::from(b.0)).map(|l| l.upstream)
    }

    /// The current primary, if one was opened (it may have closed since).
    pub fn primary(&self) -> Option<BackendId> {
        self.core.primary
    }

    /// Backends opened so far, in order.
    pub fn backends(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.core.legs.iter().map(|l| l.id)
    }

    /// Whether backend `b` is connecting or connected (not closed).
    pub fn is_open(&self, b: BackendId) -> bool {
        self.core
            .legs
            .get(usize::from(b.0))
            .is_some_and(|l| !l.side.is_closed())
    }

    /// Whether the client socket is still open.
    pub fn client_open(&self) -> bool {
        !self.core.client.is_closed()
    }

    // ---- routing ------------------------------------------------------------------------

    /// Opens a backend to the driver's upstream `upstream` (em-proxy's `conn.server`), now or
    /// at any later point of the session. Bytes sent to it before it connects wait in order.
    /// `Err` (and the session ends) past `Config::max_backends` or for a second open primary.
    pub fn open(&mut self, upstream: UpstreamId, how: Open) -> Result<BackendId, Misuse> {
        let r = self.core.open_backend(upstream, how, &mut self.ctx);
        if let Err(m) = &r {
            self.core.misuse.get_or_insert(m.clone());
        }
        r
    }

    /// Sends `data` to every open backend that does not bypass `on_data` (em-proxy's return
    /// value of `on_data`).
    pub fn forward(&mut self, data: Bytes) {
        self.core.forward(data, &mut self.ctx);
    }

    /// Sends `data` to backend `b` only (em-proxy's `[data, [:name]]`). Bytes for a backend
    /// that already closed are dropped; naming one never opened is a misuse.
    pub fn send(&mut self, b: BackendId, data: Bytes) {
        self.core.emit(Peer::Backend(b), data, &mut self.ctx);
    }

    /// Sends `data` to the client (em-proxy's `conn.send_data`): an answer of the interceptor's
    /// own, or a backend's bytes passed on (rewritten or not).
    pub fn answer(&mut self, data: Bytes) {
        self.core.emit(Peer::Client, data, &mut self.ctx);
    }

    /// Keeps `data` in the engine until [`take_held`](Self::take_held) (for a message that may
    /// be forwarded or refused once it is complete). At most `Config::max_held` bytes together
    /// with output waiting behind effects; past that the session ends.
    pub fn hold(&mut self, data: Bytes) {
        self.core.held_len += data.len() as u64;
        self.core.held.push(data);
        if self.core.held_total() > self.ctx.cfg.max_held {
            self.core.misuse.get_or_insert(Misuse::HeldOverLimit);
        }
    }

    /// Bytes on hold.
    pub fn held(&self) -> u64 {
        self.core.held_len
    }

    /// Everything on hold, in the order it was held, leaving nothing held.
    pub fn take_held(&mut self) -> Vec<Bytes> {
        self.core.held_len = 0;
        std::mem::take(&mut self.core.held)
    }

    /// During `on_connect_failed`: the bytes the failed backend never got, for sending
    /// elsewhere. Empty in every other hook.
    pub fn unsent(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.core.unsent)
    }

    // ---- ending -------------------------------------------------------------------------

    /// Sends backend `b` its FIN once everything queued for it went out.
    pub fn shutdown(&mut self, b: BackendId) {
        match self.core.side_mut(Peer::Backend(b)) {
            Some(side) => side.want_fin(),
            None => {
                self.core.misuse.get_or_insert(Misuse::UnknownBackend(b));
            }
        }
    }

    /// Sends the client what is queued for it, then its FIN, then closes it (em-proxy's
    /// `close_connection_after_writing`).
    pub fn close_client(&mut self) {
        self.core.close_client();
    }

    /// Ends the session now: every socket closed, anything queued discarded.
    pub fn close(&mut self) {
        self.core
            .close_all(crate::report::Outcome::ClosedEarly, &mut self.ctx);
    }

    // ---- effects ------------------------------------------------------------------------

    /// Asks the driver's executor to carry out `request` off the event loop. Output issued
    /// after this call waits behind it; `on_effect` gets the result (or `TimedOut` after
    /// `Config::effect_timeout`) and writes at its place. `Err` (and the session ends) past
    /// `Config::max_effects` pending.
    pub fn effect(&mut self, request: EffectRequest) -> Result<EffectId, Misuse> {
        let r = self.core.request_effect(request, &mut self.ctx);
        if let Err(m) = &r {
            self.core.misuse.get_or_insert(m.clone());
        }
        r
    }
}
