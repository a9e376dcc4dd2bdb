//! One session: a client connection, the backends its interceptor opened, and every rule about
//! how bytes, FINs and failures move between them.
//!
//! The [`Engine`](crate::Engine) routes each event to a session method, which may call the
//! interceptor's hooks (through [`Session::call`]); then the engine calls [`Session::settle`],
//! which derives everything that follows from the new state: a misusing interceptor's session
//! closed, FINs whose queue has drained, legs that are done, secondary deadlines, and read pauses
//! from the water marks of every route. Keeping those rules in one place is what lets every
//! event handler stay small.

use crate::command::Command;
use crate::compare::{Comparison, Digest, PrimaryTail};
use crate::config::Config;
use crate::conn::Conn;
use crate::effect::{EffectId, EffectRequest, EffectResult};
use crate::event::Failure;
use crate::gate::Gates;
use crate::ids::{BackendId, ConnId, Peer, SockId, UpstreamId};
use crate::intercept::{End, Finish, Interceptor, Misuse, Open};
use crate::report::{BackendReport, Outcome, Role, SessionReport};
use crate::side::{Fin, Side, SockState};
use crate::time::Instant;
use crate::timers::{TimerKey, Timers};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a session method needs from the engine: the time, the limits, and where commands,
/// timers and effect ids go.
pub(crate) struct Ctx<'a> {
    pub now: Instant,
    pub cfg: &'a Config,
    pub out: &'a mut VecDeque<Command>,
    pub timers: &'a mut Timers,
    /// Pending effects of every session, for routing `EffectDone`.
    pub effects: &'a mut BTreeMap<EffectId, ConnId>,
    pub next_effect: &'a mut u64,
    #[cfg(feature = "sim-mutants")]
    pub mutant: Option<crate::mutants::Mutant>,
}

impl Ctx<'_> {
    /// Whether the deliberate bug `m` is switched on (only ever with the `sim-mutants` feature).
    #[cfg(feature = "sim-mutants")]
    pub(crate) fn mutant(&self, m: crate::mutants::Mutant) -> bool {
        self.mutant == Some(m)
    }
}

/// A backend's leg: its socket plus what the report needs.
#[derive(Debug)]
pub(crate) struct Leg {
    pub(crate) id: BackendId,
    pub(crate) upstream: UpstreamId,
    pub(crate) role: Role,
    pub(crate) relay_client: bool,
    pub(crate) relay_server: bool,
    pub(crate) side: Side,
    connect_timer: Option<Instant>,
    deadline_timer: Option<Instant>,
    connect_time: Option<std::time::Duration>,
    first_byte: Option<Instant>,
    last_byte: Option<Instant>,
    sent: u64,
    received: u64,
    outcome: Option<Outcome>,
    digest: Digest,
    /// Secondaries only.
    comparison: Option<Comparison>,
}

impl Leg {
    fn sock(&self, conn: ConnId) -> SockId {
        SockId::backend(conn, self.id)
    }

    /// Counts `len` bytes read at `now` for the report. Returns false (and counts nothing) if the
    /// leg cannot be read: not open, or its peer already sent EOF.
    fn note_read(&mut self, len: usize, now: Instant) -> bool {
        if !self.side.is_open() || self.side.eof {
            return false;
        }
        self.received += len as u64;
        self.first_byte.get_or_insert(now);
        self.last_byte = Some(now);
        true
    }

    /// Ends the leg with `outcome` (the first outcome recorded wins). Returns the bytes that
    /// were waiting for its connect.
    fn end(
        &mut self,
        conn: ConnId,
        outcome: Outcome,
        driver_dropped: bool,
        ctx: &mut Ctx,
    ) -> Vec<Bytes> {
        self.outcome.get_or_insert(outcome);
        let unsent = self.side.close(self.sock(conn), driver_dropped, ctx.out);
        ctx.timers.set(
            TimerKey::Connect(conn, self.id),
            &mut self.connect_timer,
            None,
        );
        ctx.timers.set(
            TimerKey::Deadline(conn, self.id),
            &mut self.deadline_timer,
            None,
        );
        unsent
    }
}

/// Everything about a session but the interceptor's state: what [`Conn`] acts on.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) conn: ConnId,
    pub(crate) client_addr: String,
    started: Instant,
    first_client_byte: Option<Instant>,
    last_activity: Instant,
    idle_timer: Option<Instant>,
    pub(crate) client: Side,
    /// Index is the `BackendId`, in the order the interceptor opened them.
    pub(crate) legs: Vec<Leg>,
    /// The current primary (it stays named after it closed, until another is opened).
    pub(crate) primary: Option<BackendId>,
    /// The primary's response bytes still needed by a secondary's comparison.
    tail: PrimaryTail,
    /// Whether digests and comparisons are kept at all (reports on).
    analyse: bool,
    /// Bytes the interceptor put on hold.
    pub(crate) held: Vec<Bytes>,
    pub(crate) held_len: u64,
    pub(crate) gates: Gates,
    /// The socket whose bytes the running hook handles: writes record a route from it.
    pub(crate) source: Option<Peer>,
    /// `on_effect` is running for this effect: writes go to its place in the output.
    pub(crate) filling: Option<EffectId>,
    /// During `on_connect_failed`: the bytes the failed backend never got.
    pub(crate) unsent: Vec<Bytes>,
    /// Close the client once its FIN is out (`Finish::Close`, `Conn::close_client`).
    pub(crate) close_client_after_fin: bool,
    /// The interceptor misused the API or panicked; `settle` closes the session.
    pub(crate) misuse: Option<Misuse>,
    /// Why the session was closed for the interceptor, for the report.
    interceptor_error: Option<String>,
}

/// A session: the engine's part and the interceptor's state.
#[derive(Debug)]
pub(crate) struct Session<S> {
    pub(crate) core: Core,
    /// `None` before `on_connect` returned, after a hook panicked, and after `on_end`.
    state: Option<S>,
}

fn outcome_of(failure: Failure, connecting: bool) -> Outcome {
    match (failure, connecting) {
        (Failure::TimedOut, true) => Outcome::ConnectTimeout,
        (Failure::Refused | Failure::Unreachable, _) => Outcome::Refused,
        (_, true) => Outcome::Refused,
        (_, false) => Outcome::Reset,
    }
}

/// Bit of `peer` in a side's `feeds` set: 0 the client, 1 + n backend n.
fn route_bit(peer: Peer) -> u64 {
    match peer {
        Peer::Client => 1,
        Peer::Backend(b) => 1u64.checked_shl(1 + u32::from(b.0)).unwrap_or(0),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

impl<S> Session<S> {
    /// Opens a session for a just-accepted client and arms its idle timer; then runs
    /// `on_connect`, which opens the backends.
    pub(crate) fn open<I: Interceptor<State = S>>(
        conn: ConnId,
        client_addr: String,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) -> Session<S> {
        let mut core = Core {
            conn,
            client_addr,
            started: ctx.now,
            first_client_byte: None,
            last_activity: ctx.now,
            idle_timer: None,
            client: Side::new(SockState::Open),
            legs: Vec::new(),
            primary: None,
            tail: PrimaryTail::default(),
            analyse: ctx.cfg.reports || ctx.cfg.secondaries > 0,
            held: Vec::new(),
            held_len: 0,
            gates: Gates::default(),
            source: None,
            filling: None,
            unsent: Vec::new(),
            close_client_after_fin: false,
            misuse: None,
            interceptor_error: None,
        };
        ctx.timers.set(
            TimerKey::Idle(conn),
            &mut core.idle_timer,
            Some(ctx.now + ctx.cfg.idle_timeout),
        );
        let state = {
            let mut c = Conn::new(&mut core, ctx);
            catch_unwind(AssertUnwindSafe(|| hooks.on_connect(&mut c)))
        };
        let state = match state {
            Ok(s) => Some(s),
            Err(p) => {
                core.misuse = Some(Misuse::Panicked(panic_message(&*p)));
                None
            }
        };
        Session { core, state }
    }

    /// Runs one hook on this session with `source` as the socket whose bytes it handles. A
    /// panic is caught: the session is marked for closing and its state dropped, so no hook is
    /// called for it again.
    pub(crate) fn call<I: Interceptor<State = S>>(
        &mut self,
        hooks: &mut I,
        ctx: &mut Ctx,
        source: Option<Peer>,
        f: impl FnOnce(&mut I, &mut S, &mut Conn<'_>),
    ) {
        if self.core.misuse.is_some() || self.core.interceptor_error.is_some() {
            return;
        }
        let Some(mut state) = self.state.take() else {
            return;
        };
        self.core.source = source;
        let result = {
            let mut c = Conn::new(&mut self.core, ctx);
            catch_unwind(AssertUnwindSafe(|| f(hooks, &mut state, &mut c)))
        };
        self.core.source = None;
        match result {
            Ok(()) => self.state = Some(state),
            Err(p) => self.core.misuse = Some(Misuse::Panicked(panic_message(&*p))),
        }
    }

    /// `on_finish` for backend `b`, and what it asks for the client.
    fn finish<I: Interceptor<State = S>>(
        &mut self,
        hooks: &mut I,
        ctx: &mut Ctx,
        b: BackendId,
        end: End,
    ) {
        let mut verdict = Finish::Default;
        self.call(hooks, ctx, None, |h, st, c| {
            verdict = h.on_finish(st, c, b, end)
        });
        let core = &mut self.core;
        match verdict {
            Finish::Keep => {}
            Finish::Close => core.close_client(),
            Finish::Default if core.primary == Some(b) => match end {
                End::Eof => core.client.want_fin(),
                End::Failed(_) => core.primary_lost(ctx),
            },
            Finish::Default => {}
        }
    }

    /// The interceptor's state, for `on_end`.
    pub(crate) fn take_state(&mut self) -> Option<S> {
        self.state.take()
    }

    // ---- inputs -------------------------------------------------------------------------

    pub(crate) fn on_connected<I: Interceptor<State = S>>(
        &mut self,
        b: BackendId,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        if !self.core.connected(b, ctx) {
            return;
        }
        self.call(hooks, ctx, None, |h, st, c| {
            h.on_backend_connected(st, c, b)
        });
    }

    pub(crate) fn on_connect_failed<I: Interceptor<State = S>>(
        &mut self,
        b: BackendId,
        reason: Failure,
        driver_dropped: bool,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        let conn = self.core.conn;
        let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
            return;
        };
        if !matches!(leg.side.state, SockState::Connecting { .. }) {
            return;
        }
        let outcome = if driver_dropped {
            outcome_of(reason, true)
        } else {
            Outcome::ConnectTimeout
        };
        self.core.unsent = leg.end(conn, outcome, driver_dropped, ctx);
        self.call(hooks, ctx, None, |h, st, c| {
            h.on_connect_failed(st, c, b, reason)
        });
        self.core.unsent.clear();
        if self.core.primary == Some(b) {
            self.core.primary_lost(ctx);
        }
    }

    pub(crate) fn on_read<I: Interceptor<State = S>>(
        &mut self,
        peer: Peer,
        data: Bytes,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        let core = &mut self.core;
        core.last_activity = ctx.now;
        match peer {
            Peer::Client => {
                if core.client.is_closed() || core.client.eof {
                    return;
                }
                core.first_client_byte.get_or_insert(ctx.now);
                core.source = Some(Peer::Client);
                let mut hooked = core.legs.is_empty();
                for i in 0..core.legs.len() {
                    let leg = &core.legs[i];
                    if !leg.relay_client {
                        hooked = true;
                    } else if !leg.side.is_closed() && leg.side.fin == Fin::NotWanted {
                        core.emit(Peer::Backend(leg.id), data.clone(), ctx);
                    }
                }
                core.source = None;
                if hooked {
                    self.call(hooks, ctx, Some(Peer::Client), |h, st, c| {
                        h.on_data(st, c, data)
                    });
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                if !leg.note_read(data.len(), ctx.now) {
                    return;
                }
                let (role, bypass) = (leg.role, leg.relay_server);
                core.analyse_read(b, &data, ctx.cfg);
                if bypass {
                    if core.primary == Some(b) && role == Role::Primary {
                        core.source = Some(peer);
                        core.emit(Peer::Client, data, ctx);
                        core.source = None;
                    }
                } else {
                    self.call(hooks, ctx, Some(peer), |h, st, c| {
                        h.on_response(st, c, b, data)
                    });
                }
            }
        }
    }

    pub(crate) fn on_read_closed<I: Interceptor<State = S>>(
        &mut self,
        peer: Peer,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        match peer {
            Peer::Client => {
                if self.core.client.is_closed() || self.core.client.eof {
                    return;
                }
                self.core.client.eof = true;
                self.call(hooks, ctx, None, |h, st, c| h.on_client_eof(st, c));
                for leg in &mut self.core.legs {
                    leg.side.want_fin();
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                if !leg.side.is_open() || leg.side.eof {
                    return;
                }
                leg.side.eof = true;
                self.finish(hooks, ctx, b, End::Eof);
            }
        }
    }

    pub(crate) fn on_flushed(&mut self, peer: Peer, bytes: u64, ctx: &mut Ctx) {
        let core = &mut self.core;
        core.last_activity = ctx.now;
        let side = match peer {
            Peer::Client => &mut core.client,
            Peer::Backend(b) => match core.legs.get_mut(usize::from(b.0)) {
                Some(leg) => {
                    leg.sent += bytes.min(leg.side.unflushed);
                    &mut leg.side
                }
                None => return,
            },
        };
        side.unflushed = side.unflushed.saturating_sub(bytes);
    }

    pub(crate) fn on_failed<I: Interceptor<State = S>>(
        &mut self,
        peer: Peer,
        reason: Failure,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        let conn = self.core.conn;
        match peer {
            Peer::Client => {
                let core = &mut self.core;
                if core.client.is_closed() {
                    return;
                }
                core.client.close(SockId::client(conn), true, ctx.out);
                // Nobody is left to hear the primary.
                if let Some(p) = core.primary {
                    let leg = &mut core.legs[usize::from(p.0)];
                    if !leg.side.is_closed() {
                        leg.end(conn, Outcome::ClosedEarly, false, ctx);
                    }
                }
                core.release_secondaries();
            }
            Peer::Backend(b) => {
                #[cfg(feature = "sim-mutants")]
                if ctx.mutant(crate::mutants::Mutant::ForgetSessionOnReset) {
                    let core = &mut self.core;
                    core.client.state = SockState::Closed;
                    for leg in &mut core.legs {
                        leg.side.state = SockState::Closed;
                        leg.outcome.get_or_insert(Outcome::Reset);
                    }
                    return;
                }
                let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                if leg.side.is_closed() {
                    return;
                }
                if matches!(leg.side.state, SockState::Connecting { .. }) {
                    return self.on_connect_failed(b, reason, true, hooks, ctx);
                }
                leg.end(conn, outcome_of(reason, false), true, ctx);
                self.finish(hooks, ctx, b, End::Failed(reason));
            }
        }
    }

    /// The effect `id` of this session completed (or timed out): `on_effect` writes at its
    /// place, then every gate that may open does.
    pub(crate) fn on_effect<I: Interceptor<State = S>>(
        &mut self,
        id: EffectId,
        result: EffectResult,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        let conn = self.core.conn;
        if !self.core.gates.is_waiting(id) {
            return;
        }
        ctx.effects.remove(&id);
        self.core.filling = Some(id);
        self.call(hooks, ctx, None, |h, st, c| h.on_effect(st, c, id, result));
        self.core.filling = None;
        let mut slot = self.core.gates.complete(id);
        ctx.timers.set(TimerKey::Effect(conn, id), &mut slot, None);
        self.core.release_gates(ctx);
    }

    /// A timer of this session fired.
    pub(crate) fn on_timer<I: Interceptor<State = S>>(
        &mut self,
        key: TimerKey,
        hooks: &mut I,
        ctx: &mut Ctx,
    ) {
        let conn = self.core.conn;
        match key {
            TimerKey::Idle(_) => {
                let core = &mut self.core;
                core.idle_timer = None;
                if core.client.is_closed() && core.primary_over() {
                    return;
                }
                let due = core.last_activity + ctx.cfg.idle_timeout;
                if due > ctx.now {
                    ctx.timers
                        .set(TimerKey::Idle(conn), &mut core.idle_timer, Some(due));
                } else {
                    core.close_all(Outcome::ClosedEarly, ctx);
                }
            }
            TimerKey::Connect(_, b) => {
                let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                leg.connect_timer = None;
                self.on_connect_failed(b, Failure::TimedOut, false, hooks, ctx);
            }
            TimerKey::Deadline(_, b) => {
                let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                leg.deadline_timer = None;
                leg.end(conn, Outcome::DetachedDeadline, false, ctx);
            }
            TimerKey::Effect(_, id) => {
                self.on_effect(id, Err(crate::effect::EffectError::TimedOut), hooks, ctx);
            }
            TimerKey::Drain => {}
        }
    }

    /// Closes every socket; legs not yet ended get `outcome`.
    pub(crate) fn close_all(&mut self, outcome: Outcome, ctx: &mut Ctx) {
        self.core.close_all(outcome, ctx);
    }

    /// Derives what follows from the current state; called after every input to the session.
    pub(crate) fn settle(&mut self, ctx: &mut Ctx) {
        if let Some(m) = self.core.misuse.take() {
            self.core.interceptor_error = Some(m.to_string());
            self.core.close_all(Outcome::InterceptorError, ctx);
        }
        self.core.settle(ctx);
    }

    pub(crate) fn client_open(&self) -> bool {
        !self.core.client.is_closed()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    pub(crate) fn knows(&self, peer: Peer) -> bool {
        self.core.knows(peer)
    }

    pub(crate) fn role(&self, b: BackendId) -> Option<Role> {
        self.core.legs.get(usize::from(b.0)).map(|l| l.role)
    }

    pub(crate) fn unflushed(&self) -> impl Iterator<Item = (SockId, u64)> + '_ {
        self.core.unflushed()
    }

    pub(crate) fn report(&self) -> SessionReport {
        self.core.report()
    }

    /// Cancels this session's timers and forgets its pending effects (it is being dropped).
    pub(crate) fn cancel_timers(
        &mut self,
        timers: &mut Timers,
        effects: &mut BTreeMap<EffectId, ConnId>,
    ) {
        self.core.cancel_timers(timers, effects);
    }
}

impl Core {
    fn leg_mut(&mut self, b: BackendId) -> Option<&mut Leg> {
        self.legs.get_mut(usize::from(b.0))
    }

    pub(crate) fn side_mut(&mut self, peer: Peer) -> Option<&mut Side> {
        match peer {
            Peer::Client => Some(&mut self.client),
            Peer::Backend(b) => self.leg_mut(b).map(|l| &mut l.side),
        }
    }

    /// The client socket is still open.
    fn is_finished(&self) -> bool {
        self.client.is_closed() && self.legs.iter().all(|l| l.side.is_closed())
    }

    /// The primary's leg is over (or, with no primary ever opened, the client is gone).
    fn primary_over(&self) -> bool {
        match self.primary {
            Some(p) => self.legs[usize::from(p.0)].side.is_closed(),
            None => self.client.is_closed(),
        }
    }

    fn unflushed(&self) -> impl Iterator<Item = (SockId, u64)> + '_ {
        std::iter::once((SockId::client(self.conn), self.client.unflushed)).chain(
            self.legs
                .iter()
                .map(|l| (l.sock(self.conn), l.side.unflushed)),
        )
    }

    fn knows(&self, peer: Peer) -> bool {
        match peer {
            Peer::Client => !self.client.is_closed(),
            Peer::Backend(b) => self
                .legs
                .get(usize::from(b.0))
                .is_some_and(|l| !l.side.is_closed()),
        }
    }

    // ---- what Conn does ------------------------------------------------------------------

    /// Opens a backend: asks the driver to connect to `upstream` and arms the connect timer.
    pub(crate) fn open_backend(
        &mut self,
        upstream: UpstreamId,
        how: Open,
        ctx: &mut Ctx,
    ) -> Result<BackendId, Misuse> {
        if self.legs.len() >= usize::from(ctx.cfg.max_backends) {
            return Err(Misuse::TooManyBackends);
        }
        if how.role == Role::Primary && !self.primary_over_or_none() {
            return Err(Misuse::SecondPrimary);
        }
        let id = BackendId(self.legs.len() as u16);
        let mut leg = Leg {
            id,
            upstream,
            role: how.role,
            relay_client: how.relay_client,
            relay_server: how.relay_server,
            side: Side::new(SockState::Connecting {
                since: ctx.now,
                pending: Vec::new(),
            }),
            connect_timer: None,
            deadline_timer: None,
            connect_time: None,
            first_byte: None,
            last_byte: None,
            sent: 0,
            received: 0,
            outcome: None,
            digest: Digest::default(),
            // A secondary opened after the primary began answering cannot be compared from
            // the start: it is reported without a verdict.
            comparison: (how.role == Role::Secondary && self.primary_received() == 0)
                .then(Comparison::default),
        };
        if how.role == Role::Secondary {
            self.analyse = true;
        }
        ctx.out.push_back(Command::Connect {
            sock: SockId::backend(self.conn, id),
            upstream,
        });
        ctx.timers.set(
            TimerKey::Connect(self.conn, id),
            &mut leg.connect_timer,
            Some(ctx.now + ctx.cfg.connect_timeout),
        );
        if how.role == Role::Primary {
            self.primary = Some(id);
        }
        self.legs.push(leg);
        Ok(id)
    }

    fn primary_received(&self) -> u64 {
        self.primary
            .map_or(0, |p| self.legs[usize::from(p.0)].received)
    }

    fn primary_over_or_none(&self) -> bool {
        match self.primary {
            Some(p) => self.legs[usize::from(p.0)].side.is_closed(),
            None => true,
        }
    }

    /// The one write path of a session: records the route from the running hook's source,
    /// refuses a write after a FIN, holds it behind a pending effect, or queues it.
    pub(crate) fn emit(&mut self, dest: Peer, data: Bytes, ctx: &mut Ctx) {
        if data.is_empty() {
            return;
        }
        let bit = route_bit(dest);
        let source = self.source;
        let gated = !self.gates.is_empty();
        #[cfg(feature = "sim-mutants")]
        let gated = gated && !ctx.mutant(crate::mutants::Mutant::OutputJumpsPendingEffect);
        #[cfg(feature = "sim-mutants")]
        let source =
            source.filter(|_| !ctx.mutant(crate::mutants::Mutant::AnswersEscapeFlowControl));
        let Some(side) = self.side_mut(dest) else {
            if let Peer::Backend(b) = dest {
                self.misuse.get_or_insert(Misuse::UnknownBackend(b));
            }
            return;
        };
        if side.is_closed() {
            return; // gone: nobody is left to hear it
        }
        if side.fin == Fin::Sent {
            self.misuse.get_or_insert(Misuse::WriteAfterFin);
            return;
        }
        if gated {
            side.gated += data.len() as u64;
            self.gates.hold(self.filling, (dest, data));
            if self.held_total() > ctx.cfg.max_held {
                self.misuse.get_or_insert(Misuse::HeldOverLimit);
            }
        } else {
            self.write_now(dest, data, ctx);
        }
        if let Some(src) = source {
            if let Some(s) = self.side_mut(src) {
                s.feeds |= bit;
            }
        }
    }

    /// Hands `data` to the driver (or the connect's pending list); a secondary past its budget
    /// is detached.
    fn write_now(&mut self, dest: Peer, data: Bytes, ctx: &mut Ctx) {
        let conn = self.conn;
        match dest {
            Peer::Client => {
                self.client.write(SockId::client(conn), data, ctx.out);
            }
            Peer::Backend(b) => {
                let Some(leg) = self.leg_mut(b) else { return };
                if !leg.side.write(leg.sock(conn), data, ctx.out) {
                    return;
                }
                if leg.role == Role::Secondary && leg.side.unflushed > ctx.cfg.secondary_budget {
                    leg.end(conn, Outcome::DetachedBudget, false, ctx);
                }
            }
        }
    }

    /// Client bytes to every backend that does not bypass `on_data` and has not been sent (or
    /// asked for) its FIN.
    pub(crate) fn forward(&mut self, data: Bytes, ctx: &mut Ctx) {
        for i in 0..self.legs.len() {
            let leg = &self.legs[i];
            if leg.relay_client || leg.side.is_closed() || leg.side.fin == Fin::Sent {
                continue;
            }
            let id = leg.id;
            self.emit(Peer::Backend(id), data.clone(), ctx);
        }
    }

    pub(crate) fn held_total(&self) -> u64 {
        let gated: u64 = std::iter::once(&self.client)
            .chain(self.legs.iter().map(|l| &l.side))
            .map(|s| s.gated)
            .sum();
        self.held_len + gated
    }

    pub(crate) fn request_effect(
        &mut self,
        request: EffectRequest,
        ctx: &mut Ctx,
    ) -> Result<EffectId, Misuse> {
        if self.gates.pending() >= ctx.cfg.max_effects as usize {
            return Err(Misuse::TooManyEffects);
        }
        let id = EffectId(*ctx.next_effect);
        *ctx.next_effect += 1;
        let mut slot = None;
        ctx.timers.set(
            TimerKey::Effect(self.conn, id),
            &mut slot,
            Some(ctx.now + ctx.cfg.effect_timeout),
        );
        self.gates.push(id, slot);
        ctx.effects.insert(id, self.conn);
        ctx.out.push_back(Command::Effect {
            conn: self.conn,
            id,
            request,
        });
        Ok(id)
    }

    /// Writes the output of every gate that may open, in order.
    fn release_gates(&mut self, ctx: &mut Ctx) {
        for (dest, data) in self.gates.release() {
            let len = data.len() as u64;
            let Some(side) = self.side_mut(dest) else {
                continue;
            };
            side.gated = side.gated.saturating_sub(len);
            if side.is_closed() {
                continue;
            }
            self.write_now(dest, data, ctx);
        }
    }

    /// Client FIN once its queue drained, then close it.
    pub(crate) fn close_client(&mut self) {
        self.client.want_fin();
        self.close_client_after_fin = true;
    }

    pub(crate) fn connected(&mut self, b: BackendId, ctx: &mut Ctx) -> bool {
        let conn = self.conn;
        let Some(leg) = self.leg_mut(b) else {
            return false;
        };
        if !matches!(leg.side.state, SockState::Connecting { .. }) {
            return false; // not waiting for a connect: a confused driver; change nothing
        }
        let SockState::Connecting { since, pending } =
            std::mem::replace(&mut leg.side.state, SockState::Open)
        else {
            unreachable!("checked above")
        };
        leg.connect_time = Some(ctx.now.saturating_since(since));
        ctx.timers
            .set(TimerKey::Connect(conn, b), &mut leg.connect_timer, None);
        let sock = leg.sock(conn);
        for data in pending {
            ctx.out.push_back(Command::Write { sock, data });
        }
        true
    }

    /// The primary is gone before finishing its response: the client hears about it at once.
    fn primary_lost(&mut self, ctx: &mut Ctx) {
        if !self.primary_over_or_none() {
            return; // the interceptor opened a new primary
        }
        let complete = self
            .primary
            .is_some_and(|p| self.legs[usize::from(p.0)].side.eof);
        if complete {
            // The response was complete; let the client have all of it, then FIN.
            self.client.want_fin();
            return;
        }
        self.client.close(SockId::client(self.conn), false, ctx.out);
        self.release_secondaries();
    }

    /// The client will send nothing more: secondaries finish what they have, then get a FIN.
    fn release_secondaries(&mut self) {
        for leg in &mut self.legs {
            if leg.role == Role::Secondary {
                leg.side.want_fin();
            }
        }
    }

    /// Digests and comparisons of a backend's raw bytes (before any hook rewrote them).
    fn analyse_read(&mut self, b: BackendId, data: &Bytes, cfg: &Config) {
        if !self.analyse {
            return;
        }
        let is_primary = self.primary == Some(b);
        let leg = &mut self.legs[usize::from(b.0)];
        leg.digest.update(data);
        if is_primary {
            if self.legs.iter().any(|l| l.comparison.is_some()) {
                self.tail.push(data.clone());
                for leg in &mut self.legs {
                    if let Some(cmp) = &mut leg.comparison {
                        cmp.advance(&self.tail, cfg.compare_window);
                    }
                }
                self.trim_tail();
            }
        } else if let Some(cmp) = &mut leg.comparison {
            cmp.push(data.clone());
            cmp.advance(&self.tail, cfg.compare_window);
            self.trim_tail();
        }
    }

    fn trim_tail(&mut self) {
        let keep_from = self
            .legs
            .iter()
            .filter_map(|l| l.comparison.as_ref().and_then(Comparison::needs_from))
            .min()
            .unwrap_or(self.tail.len());
        self.tail.trim_to(keep_from);
    }

    /// Closes every socket; legs not yet ended get `outcome`.
    pub(crate) fn close_all(&mut self, outcome: Outcome, ctx: &mut Ctx) {
        let conn = self.conn;
        self.client.close(SockId::client(conn), false, ctx.out);
        for leg in &mut self.legs {
            if !leg.side.is_closed() {
                leg.end(conn, outcome, false, ctx);
            }
        }
        self.held.clear();
        self.held_len = 0;
    }

    fn settle(&mut self, ctx: &mut Ctx) {
        let conn = self.conn;
        #[cfg(feature = "sim-mutants")]
        if ctx.mutant(crate::mutants::Mutant::DropTailAfterEof) && self.client.fin == Fin::Wanted {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        // FINs whose queues have drained (never while an effect is pending: what it writes
        // comes first); legs finished both ways.
        let fin_ok = self.gates.is_empty();
        #[cfg(feature = "sim-mutants")]
        let fin_ok = fin_ok || ctx.mutant(crate::mutants::Mutant::FinBeforePendingEffect);
        if fin_ok {
            self.client.try_fin(SockId::client(conn), ctx.out);
            if self.client.fin == Fin::Sent && self.close_client_after_fin {
                self.client.close(SockId::client(conn), false, ctx.out);
            }
            for leg in &mut self.legs {
                leg.side.try_fin(leg.sock(conn), ctx.out);
            }
        }
        if self.client.is_done() {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        for leg in &mut self.legs {
            if leg.side.is_done() {
                leg.end(conn, Outcome::Ok, false, ctx);
            }
        }
        // Once the primary's leg is over, secondaries have a deadline.
        if self.primary_over() {
            let at = ctx.now + ctx.cfg.secondary_deadline;
            for leg in &mut self.legs {
                if leg.role == Role::Secondary
                    && !leg.side.is_closed()
                    && leg.deadline_timer.is_none()
                {
                    ctx.timers.set(
                        TimerKey::Deadline(conn, leg.id),
                        &mut leg.deadline_timer,
                        Some(at),
                    );
                }
            }
        }
        if self.client.is_closed() && self.primary_over() {
            ctx.timers
                .set(TimerKey::Idle(conn), &mut self.idle_timer, None);
        }
        self.apply_flow(ctx);
    }

    /// Backpressure on every route: a source pauses while any destination it fed (the client,
    /// or a backend that is not a secondary) holds more than the high-water mark.
    fn apply_flow(&mut self, ctx: &mut Ctx) {
        let conn = self.conn;
        let target = self.worst_backlog(self.client.feeds, ctx);
        self.client
            .apply_flow(SockId::client(conn), target, ctx.cfg, ctx.out);
        for i in 0..self.legs.len() {
            let target = self.worst_backlog(self.legs[i].side.feeds, ctx);
            let leg = &mut self.legs[i];
            leg.side
                .apply_flow(SockId::backend(conn, leg.id), target, ctx.cfg, ctx.out);
        }
    }

    /// The largest backlog among the pacing destinations in the route set `feeds` (bit 0 the
    /// client, bit 1 + n backend n).
    fn worst_backlog(&self, feeds: u64, ctx: &Ctx) -> u64 {
        let mut worst = 0;
        let mut bits = feeds;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let backlog = match i {
                0 => self.client.backlog(),
                n => match self.legs.get(n - 1) {
                    Some(leg) if leg.role != Role::Secondary => leg.side.backlog(),
                    #[cfg(feature = "sim-mutants")]
                    Some(leg)
                        if ctx.mutant(crate::mutants::Mutant::SecondaryBackpressuresClient) =>
                    {
                        leg.side.backlog()
                    }
                    _ => 0,
                },
            };
            worst = worst.max(backlog);
        }
        let _ = ctx;
        worst
    }

    fn report(&self) -> SessionReport {
        let origin = self.first_client_byte.unwrap_or(self.started);
        let since = |t: Option<Instant>| t.map(|t| t.saturating_since(origin));
        let primary = match self.primary {
            Some(p) => {
                let leg = &self.legs[usize::from(p.0)];
                (leg.received, leg.digest.value())
            }
            None => (0, Digest::default().value()),
        };
        let backends = self
            .legs
            .iter()
            .map(|leg| {
                let digest = leg.digest.value();
                let (matches_primary, first_difference) = match &leg.comparison {
                    None => (None, None),
                    Some(cmp) => {
                        let (m, d) = cmp.verdict(primary, (leg.received, digest));
                        (Some(m), d)
                    }
                };
                BackendReport {
                    backend: leg.id,
                    upstream: leg.upstream,
                    role: leg.role,
                    connect_time: leg.connect_time,
                    first_byte: since(leg.first_byte),
                    last_byte: since(leg.last_byte),
                    bytes_sent: leg.sent,
                    bytes_received: leg.received,
                    outcome: leg.outcome.unwrap_or(Outcome::ClosedEarly),
                    digest,
                    matches_primary,
                    first_difference,
                }
            })
            .collect();
        SessionReport {
            conn: self.conn,
            client: self.client_addr.clone(),
            started: self.started,
            backends,
            interceptor_error: self.interceptor_error.clone(),
        }
    }

    fn cancel_timers(&mut self, timers: &mut Timers, effects: &mut BTreeMap<EffectId, ConnId>) {
        let conn = self.conn;
        timers.set(TimerKey::Idle(conn), &mut self.idle_timer, None);
        for leg in &mut self.legs {
            timers.set(
                TimerKey::Connect(conn, leg.id),
                &mut leg.connect_timer,
                None,
            );
            timers.set(
                TimerKey::Deadline(conn, leg.id),
                &mut leg.deadline_timer,
                None,
            );
        }
        for (id, mut slot) in self.gates.clear() {
            timers.set(TimerKey::Effect(conn, id), &mut slot, None);
            effects.remove(&id);
        }
    }
}
