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
use crate::compare::PrimaryTail;
use crate::config::Config;
use crate::conn::Conn;
use crate::core::Core;
use crate::effect::{EffectId, EffectResult};
use crate::event::Failure;
use crate::gate::Gates;
use crate::ids::{BackendId, ConnId, Peer, SockId};
use crate::intercept::{End, Finish, Interceptor, Misuse};
use crate::report::{Outcome, Role, SessionReport};
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
    /// Unflushed bytes of every secondary of every session (checked against
    /// `Config::secondary_memory`); kept by `Core::write_now`, `Leg::end` and `on_flushed`.
    pub secondary_held: &'a mut u64,
    #[cfg(feature = "sim-mutants")]
    pub mutant: Option<crate::mutants::Mutant>,
}

impl Ctx<'_> {
    /// `n` bytes a secondary held are gone (flushed, or dropped with it).
    pub(crate) fn release_secondary(&mut self, n: u64) {
        debug_assert!(*self.secondary_held >= n, "secondary bytes counted twice");
        *self.secondary_held = self.secondary_held.saturating_sub(n);
    }

    /// Whether the deliberate bug `m` is switched on (only ever with the `sim-mutants` feature).
    #[cfg(feature = "sim-mutants")]
    pub(crate) fn mutant(&self, m: crate::mutants::Mutant) -> bool {
        self.mutant == Some(m)
    }
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
        (Failure::NoDescriptors, _) => Outcome::NoDescriptors,
        (Failure::TimedOut, true) => Outcome::ConnectTimeout,
        (Failure::Refused | Failure::Unreachable, _) => Outcome::Refused,
        (_, true) => Outcome::Refused,
        (_, false) => Outcome::Reset,
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
            // relay and duplex open exactly this many; an interceptor opening more grows it.
            legs: Vec::with_capacity(1 + usize::from(ctx.cfg.secondaries)),
            primary: None,
            tail: PrimaryTail::default(),
            analyse: ctx.cfg.reports || ctx.cfg.secondaries > 0,
            digests: Vec::new(),
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
                self.core.client_input_over();
            }
            Peer::Backend(b) => {
                let Some(leg) = self.core.legs.get_mut(usize::from(b.0)) else {
                    return;
                };
                if !leg.side.is_open() || leg.side.eof {
                    return;
                }
                leg.side.eof = true;
                if let Some(c) = &mut leg.comparison {
                    c.secondary_ended();
                }
                self.finish(hooks, ctx, b, End::Eof);
            }
        }
    }

    /// See [`Engine::splice_route`](crate::Engine::splice_route).
    pub(crate) fn splice_route(&self, from: Peer) -> Option<Peer> {
        let core = &self.core;
        let [leg] = core.legs.as_slice() else {
            return None;
        };
        let plain = core.primary == Some(leg.id)
            && leg.role == Role::Primary
            && leg.relay_client
            && leg.relay_server
            && !core.analyse
            && core.held.is_empty()
            && core.gates.is_empty()
            && core.misuse.is_none()
            && leg.side.is_open()
            && core.client.is_open();
        if !plain {
            return None;
        }
        let (source, dest, to) = match from {
            Peer::Client => (&core.client, &leg.side, Peer::Backend(leg.id)),
            Peer::Backend(_) => (&leg.side, &core.client, Peer::Client),
        };
        let clear =
            !source.eof && !source.paused && dest.fin == Fin::NotWanted && dest.backlog() == 0;
        clear.then_some(to)
    }

    /// The driver spliced `bytes` read from `from` under a grant of [`Self::splice_route`]: they
    /// count as moved (activity, the leg's counters), and nothing is routed.
    pub(crate) fn on_spliced(&mut self, from: Peer, bytes: u64, ctx: &mut Ctx) {
        if bytes == 0 || self.splice_route(from).is_none() {
            return; // no grant: a stale event, or a driver bug the contract checker names
        }
        let core = &mut self.core;
        core.last_activity = ctx.now;
        let Some(leg) = core.legs.first_mut() else {
            return;
        };
        match from {
            Peer::Client => {
                core.first_client_byte.get_or_insert(ctx.now);
                leg.sent += bytes;
            }
            Peer::Backend(_) => {
                let len = usize::try_from(bytes).unwrap_or(usize::MAX);
                leg.note_read(len, ctx.now);
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
                    let done = bytes.min(leg.side.unflushed);
                    leg.sent += done;
                    if leg.role == Role::Secondary {
                        ctx.release_secondary(done);
                    }
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
                        leg.end(conn, Outcome::ClientGone, false, ctx);
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
        // What the hook writes paces the socket whose bytes asked for the effect.
        let source = self.core.gates.source_of(id);
        self.call(hooks, ctx, source, |h, st, c| {
            h.on_effect(st, c, id, result)
        });
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
                #[cfg(feature = "sim-mutants")]
                let due = if ctx.mutant(crate::mutants::Mutant::IdleFromSessionStart) {
                    core.started + ctx.cfg.idle_timeout
                } else {
                    due
                };
                if due > ctx.now {
                    ctx.timers
                        .set(TimerKey::Idle(conn), &mut core.idle_timer, Some(due));
                } else {
                    core.close_all(Outcome::IdleTimeout, ctx);
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

    /// The primary's response bytes this session keeps for its secondaries' comparisons.
    pub(crate) fn compare_held(&self) -> u64 {
        self.core.tail.retained()
    }

    /// Unflushed bytes of this session's secondaries.
    pub(crate) fn secondary_unflushed(&self) -> u64 {
        self.core
            .legs
            .iter()
            .filter(|l| l.role == Role::Secondary)
            .map(|l| l.side.unflushed)
            .sum()
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
