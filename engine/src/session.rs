//! One session: a client connection, its primary and its secondaries, and every rule about how
//! bytes, FINs and failures move between them.
//!
//! The [`Engine`](crate::Engine) routes each event to a session method, then calls
//! [`Session::settle`], which derives everything that follows from the new state: FINs whose queue
//! has drained, legs that are done, secondary deadlines, and read pauses from the water marks.
//! Keeping those rules in one place is what lets every event handler stay small.

use crate::command::Command;
use crate::compare::{Comparison, Digest, PrimaryTail};
use crate::config::Config;
use crate::event::Failure;
use crate::ids::{BackendId, ConnId, Peer, SockId};
use crate::report::{BackendReport, Outcome, Role, SessionReport};
use crate::time::Instant;
use crate::timers::{TimerKey, Timers};
use bytes::Bytes;
use std::collections::VecDeque;

/// What a session method needs from the engine: the time, the limits, and where commands and
/// timers go.
pub(crate) struct Ctx<'a> {
    pub now: Instant,
    pub cfg: &'a Config,
    pub out: &'a mut VecDeque<Command>,
    pub timers: &'a mut Timers,
    #[cfg(feature = "sim-mutants")]
    pub mutant: Option<crate::mutants::Mutant>,
}

impl Ctx<'_> {
    /// Whether the deliberate bug `m` is switched on (only ever with the `sim-mutants` feature).
    #[cfg(feature = "sim-mutants")]
    fn mutant(&self, m: crate::mutants::Mutant) -> bool {
        self.mutant == Some(m)
    }
}

/// A socket's life. Bytes written before a backend connects wait in `Connecting`.
#[derive(Debug)]
enum SockState {
    Connecting { since: Instant, pending: Vec<Bytes> },
    Open,
    Closed,
}

/// Our write side's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    NotWanted,
    /// Send it once the queue drains.
    Wanted,
    Sent,
}

/// One socket as the engine sees it.
#[derive(Debug)]
struct Side {
    state: SockState,
    /// Bytes handed to the driver (or pending before connect) and not yet flushed.
    unflushed: u64,
    fin: Fin,
    /// The peer sent EOF.
    eof: bool,
    /// We asked the driver to stop reading it.
    paused: bool,
}

impl Side {
    fn new(state: SockState) -> Self {
        Side {
            state,
            unflushed: 0,
            fin: Fin::NotWanted,
            eof: false,
            paused: false,
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, SockState::Closed)
    }

    /// Queues `data` for the socket. Returns false (and drops it) if the socket is closed.
    fn write(&mut self, sock: SockId, data: Bytes, out: &mut VecDeque<Command>) -> bool {
        let len = data.len() as u64;
        match &mut self.state {
            SockState::Closed => return false,
            SockState::Connecting { pending, .. } => pending.push(data),
            SockState::Open => out.push_back(Command::Write { sock, data }),
        }
        self.unflushed += len;
        true
    }

    fn want_fin(&mut self) {
        if self.fin == Fin::NotWanted && !self.is_closed() {
            self.fin = Fin::Wanted;
        }
    }

    /// Sends the FIN if it is wanted and every byte has been flushed.
    fn try_fin(&mut self, sock: SockId, out: &mut VecDeque<Command>) {
        if self.fin == Fin::Wanted && self.unflushed == 0 && matches!(self.state, SockState::Open) {
            out.push_back(Command::Shutdown { sock });
            self.fin = Fin::Sent;
        }
    }

    /// Both directions are finished: the peer sent EOF and our FIN went out.
    fn is_done(&self) -> bool {
        matches!(self.state, SockState::Open) && self.eof && self.fin == Fin::Sent
    }

    /// Marks it closed; emits `Close` unless the driver already dropped it.
    fn close(&mut self, sock: SockId, driver_dropped: bool, out: &mut VecDeque<Command>) {
        if !self.is_closed() {
            if !driver_dropped {
                out.push_back(Command::Close { sock });
            }
            self.state = SockState::Closed;
            self.unflushed = 0;
        }
    }

    /// Pauses reading when the socket this one feeds (`target_unflushed`) passes the high mark;
    /// resumes at the low mark.
    fn apply_flow(
        &mut self,
        sock: SockId,
        target_unflushed: u64,
        cfg: &Config,
        out: &mut VecDeque<Command>,
    ) {
        if self.is_closed() || self.eof {
            return;
        }
        if !self.paused && target_unflushed > cfg.high_water {
            self.paused = true;
            out.push_back(Command::PauseRead { sock });
        } else if self.paused && target_unflushed <= cfg.low_water {
            self.paused = false;
            out.push_back(Command::ResumeRead { sock });
        }
    }
}

/// A backend's leg: its socket plus what the report needs.
#[derive(Debug)]
struct Leg {
    id: BackendId,
    side: Side,
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
        if !matches!(self.side.state, SockState::Open) || self.side.eof {
            return false;
        }
        self.received += len as u64;
        self.first_byte.get_or_insert(now);
        self.last_byte = Some(now);
        true
    }

    /// Ends the leg with `outcome` (the first outcome recorded wins).
    fn end(&mut self, conn: ConnId, outcome: Outcome, driver_dropped: bool, ctx: &mut Ctx) {
        self.outcome.get_or_insert(outcome);
        self.side.close(self.sock(conn), driver_dropped, ctx.out);
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
    }
}

/// A client connection and its backends.
#[derive(Debug)]
pub(crate) struct Session {
    conn: ConnId,
    client_addr: String,
    started: Instant,
    first_client_byte: Option<Instant>,
    last_activity: Instant,
    idle_timer: Option<Instant>,
    client: Side,
    /// Index is the `BackendId`: `legs[0]` is the primary.
    legs: Vec<Leg>,
    /// The primary's bytes still needed by a secondary's comparison (duplex only).
    tail: PrimaryTail,
    /// Whether digests and comparisons are kept at all (off for a plain relay).
    analyse: bool,
}

fn outcome_of(failure: Failure, connecting: bool) -> Outcome {
    match (failure, connecting) {
        (Failure::TimedOut, true) => Outcome::ConnectTimeout,
        (Failure::Refused | Failure::Unreachable, _) => Outcome::Refused,
        (_, true) => Outcome::Refused,
        (_, false) => Outcome::Reset,
    }
}

impl Session {
    /// Opens a session for a just-accepted client: asks for every backend connection and arms the
    /// connect and idle timers.
    pub(crate) fn open(conn: ConnId, client_addr: String, ctx: &mut Ctx) -> Session {
        let analyse = ctx.cfg.reports || ctx.cfg.secondaries > 0;
        let mut legs = Vec::with_capacity(1 + ctx.cfg.secondaries as usize);
        for i in 0..=ctx.cfg.secondaries {
            let id = BackendId(i);
            let mut leg = Leg {
                id,
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
                comparison: (i > 0).then(Comparison::default),
            };
            ctx.out.push_back(Command::Connect {
                sock: SockId::backend(conn, id),
                upstream: crate::ids::UpstreamId(i),
            });
            ctx.timers.set(
                TimerKey::Connect(conn, id),
                &mut leg.connect_timer,
                Some(ctx.now + ctx.cfg.connect_timeout),
            );
            legs.push(leg);
        }
        let mut session = Session {
            conn,
            client_addr,
            started: ctx.now,
            first_client_byte: None,
            last_activity: ctx.now,
            idle_timer: None,
            client: Side::new(SockState::Open),
            legs,
            tail: PrimaryTail::default(),
            analyse,
        };
        ctx.timers.set(
            TimerKey::Idle(conn),
            &mut session.idle_timer,
            Some(ctx.now + ctx.cfg.idle_timeout),
        );
        session
    }

    fn leg_mut(&mut self, backend: BackendId) -> Option<&mut Leg> {
        self.legs.get_mut(backend.0 as usize)
    }

    fn primary(&self) -> &Leg {
        &self.legs[0]
    }

    /// The client socket is still open.
    pub(crate) fn client_open(&self) -> bool {
        !self.client.is_closed()
    }

    /// Every socket is closed: the session can be reported and dropped.
    pub(crate) fn is_finished(&self) -> bool {
        self.client.is_closed() && self.legs.iter().all(|l| l.side.is_closed())
    }

    /// Bytes this session holds unflushed across all its sockets (for the limit oracles).
    pub(crate) fn unflushed(&self) -> impl Iterator<Item = (SockId, u64)> + '_ {
        std::iter::once((SockId::client(self.conn), self.client.unflushed)).chain(
            self.legs
                .iter()
                .map(|l| (l.sock(self.conn), l.side.unflushed)),
        )
    }

    /// Whether `sock` names an open (or connecting) socket of this session.
    pub(crate) fn knows(&self, peer: Peer) -> bool {
        match peer {
            Peer::Client => !self.client.is_closed(),
            Peer::Backend(b) => self
                .legs
                .get(b.0 as usize)
                .is_some_and(|l| !l.side.is_closed()),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    pub(crate) fn on_connected(&mut self, backend: BackendId, ctx: &mut Ctx) {
        let conn = self.conn;
        let Some(leg) = self.leg_mut(backend) else {
            return;
        };
        if !matches!(leg.side.state, SockState::Connecting { .. }) {
            return; // not waiting for a connect: a confused driver; change nothing
        }
        let SockState::Connecting { since, pending } =
            std::mem::replace(&mut leg.side.state, SockState::Open)
        else {
            unreachable!("checked above")
        };
        leg.connect_time = Some(ctx.now.saturating_since(since));
        ctx.timers.set(
            TimerKey::Connect(conn, backend),
            &mut leg.connect_timer,
            None,
        );
        let sock = leg.sock(conn);
        for data in pending {
            ctx.out.push_back(Command::Write { sock, data });
        }
    }

    pub(crate) fn on_connect_failed(&mut self, backend: BackendId, reason: Failure, ctx: &mut Ctx) {
        let conn = self.conn;
        let Some(leg) = self.leg_mut(backend) else {
            return;
        };
        if !matches!(leg.side.state, SockState::Connecting { .. }) {
            return;
        }
        leg.end(conn, outcome_of(reason, true), true, ctx);
        if backend.is_primary() {
            self.primary_lost(ctx);
        }
    }

    /// The primary is gone before finishing its response: the client hears about it at once.
    fn primary_lost(&mut self, ctx: &mut Ctx) {
        if self.primary().side.eof {
            // The response was complete; let the client have all of it, then FIN.
            self.client.want_fin();
            return;
        }
        self.client.close(SockId::client(self.conn), false, ctx.out);
        self.release_secondaries();
    }

    /// The client will send nothing more: secondaries finish what they have, then get a FIN.
    fn release_secondaries(&mut self) {
        for leg in &mut self.legs[1..] {
            leg.side.want_fin();
        }
    }

    pub(crate) fn on_read(
        &mut self,
        peer: Peer,
        data: Bytes,
        ctx: &mut Ctx,
        actions: &mut crate::intercept::Actions,
        hooks: &mut impl crate::Interceptor,
    ) {
        self.last_activity = ctx.now;
        match peer {
            Peer::Client => {
                if self.client.is_closed() || self.client.eof {
                    return;
                }
                self.first_client_byte.get_or_insert(ctx.now);
                hooks.on_data(self.conn, data, actions);
                self.apply_client_actions(actions, ctx);
            }
            Peer::Backend(b) if b.is_primary() => {
                let leg = &mut self.legs[0];
                if !leg.note_read(data.len(), ctx.now) {
                    return;
                }
                if self.analyse {
                    leg.digest.update(&data);
                }
                if self.legs.len() > 1 {
                    self.tail.push(data.clone());
                    self.advance_comparisons(ctx.cfg);
                }
                hooks.on_response(self.conn, data, actions);
                for action in actions.drain() {
                    match action {
                        crate::Action::Forward(bytes) | crate::Action::Answer(bytes) => {
                            self.client.write(SockId::client(self.conn), bytes, ctx.out);
                        }
                        crate::Action::Close => self.close_all(Outcome::ClosedEarly, ctx),
                    }
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = self.legs.get_mut(b.0 as usize) else {
                    return;
                };
                if !leg.note_read(data.len(), ctx.now) {
                    return;
                }
                leg.digest.update(&data);
                if let Some(cmp) = &mut leg.comparison {
                    cmp.push(data);
                    cmp.advance(&self.tail, ctx.cfg.compare_window);
                }
                self.trim_tail();
            }
        }
    }

    fn apply_client_actions(&mut self, actions: &mut crate::intercept::Actions, ctx: &mut Ctx) {
        let conn = self.conn;
        for action in actions.drain() {
            match action {
                crate::Action::Forward(bytes) => {
                    for leg in &mut self.legs {
                        if leg.side.fin != Fin::NotWanted {
                            continue;
                        }
                        if !leg.side.write(leg.sock(conn), bytes.clone(), ctx.out) {
                            continue;
                        }
                        if !leg.id.is_primary() && leg.side.unflushed > ctx.cfg.secondary_budget {
                            leg.end(conn, Outcome::DetachedBudget, false, ctx);
                        }
                    }
                }
                crate::Action::Answer(bytes) => {
                    self.client.write(SockId::client(conn), bytes, ctx.out);
                }
                crate::Action::Close => self.close_all(Outcome::ClosedEarly, ctx),
            }
        }
    }

    fn advance_comparisons(&mut self, cfg: &Config) {
        for leg in &mut self.legs[1..] {
            if let Some(cmp) = &mut leg.comparison {
                cmp.advance(&self.tail, cfg.compare_window);
            }
        }
        self.trim_tail();
    }

    fn trim_tail(&mut self) {
        let keep_from = self.legs[1..]
            .iter()
            .filter_map(|l| l.comparison.as_ref().and_then(Comparison::needs_from))
            .min()
            .unwrap_or(self.tail.len());
        self.tail.trim_to(keep_from);
    }

    pub(crate) fn on_read_closed(&mut self, peer: Peer) {
        match peer {
            Peer::Client => {
                if self.client.is_closed() {
                    return;
                }
                self.client.eof = true;
                for leg in &mut self.legs {
                    leg.side.want_fin();
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = self.legs.get_mut(b.0 as usize) else {
                    return;
                };
                if !matches!(leg.side.state, SockState::Open) {
                    return;
                }
                leg.side.eof = true;
                if b.is_primary() {
                    self.client.want_fin();
                }
            }
        }
    }

    pub(crate) fn on_flushed(&mut self, peer: Peer, bytes: u64, ctx: &mut Ctx) {
        self.last_activity = ctx.now;
        let side = match peer {
            Peer::Client => &mut self.client,
            Peer::Backend(b) => match self.legs.get_mut(b.0 as usize) {
                Some(leg) => {
                    leg.sent += bytes.min(leg.side.unflushed);
                    &mut leg.side
                }
                None => return,
            },
        };
        side.unflushed = side.unflushed.saturating_sub(bytes);
    }

    pub(crate) fn on_failed(&mut self, peer: Peer, reason: Failure, ctx: &mut Ctx) {
        let conn = self.conn;
        match peer {
            Peer::Client => {
                if self.client.is_closed() {
                    return;
                }
                self.client.close(SockId::client(conn), true, ctx.out);
                // Nobody is left to hear the primary.
                if !self.legs[0].side.is_closed() {
                    self.legs[0].end(conn, Outcome::ClosedEarly, false, ctx);
                }
                self.release_secondaries();
            }
            Peer::Backend(b) => {
                #[cfg(feature = "sim-mutants")]
                if ctx.mutant(crate::mutants::Mutant::ForgetSessionOnReset) {
                    self.client.state = SockState::Closed;
                    for leg in &mut self.legs {
                        leg.side.state = SockState::Closed;
                        leg.outcome.get_or_insert(Outcome::Reset);
                    }
                    return;
                }
                let Some(leg) = self.legs.get_mut(b.0 as usize) else {
                    return;
                };
                if leg.side.is_closed() {
                    return;
                }
                let connecting = matches!(leg.side.state, SockState::Connecting { .. });
                leg.end(conn, outcome_of(reason, connecting), true, ctx);
                if b.is_primary() {
                    self.primary_lost(ctx);
                }
            }
        }
    }

    /// A timer of this session fired.
    pub(crate) fn on_timer(&mut self, key: TimerKey, ctx: &mut Ctx) {
        let conn = self.conn;
        match key {
            TimerKey::Idle(_) => {
                self.idle_timer = None;
                if self.client.is_closed() && self.legs[0].side.is_closed() {
                    return;
                }
                let due = self.last_activity + ctx.cfg.idle_timeout;
                if due > ctx.now {
                    ctx.timers
                        .set(TimerKey::Idle(conn), &mut self.idle_timer, Some(due));
                } else {
                    self.close_all(Outcome::ClosedEarly, ctx);
                }
            }
            TimerKey::Connect(_, b) => {
                let Some(leg) = self.leg_mut(b) else { return };
                leg.connect_timer = None;
                if matches!(leg.side.state, SockState::Connecting { .. }) {
                    leg.end(conn, Outcome::ConnectTimeout, false, ctx);
                    if b.is_primary() {
                        self.primary_lost(ctx);
                    }
                }
            }
            TimerKey::Deadline(_, b) => {
                let Some(leg) = self.leg_mut(b) else { return };
                leg.deadline_timer = None;
                leg.end(conn, Outcome::DetachedDeadline, false, ctx);
            }
            TimerKey::Drain => {}
        }
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
    }

    /// Derives what follows from the current state; called after every input to the session.
    pub(crate) fn settle(&mut self, ctx: &mut Ctx) {
        let conn = self.conn;
        #[cfg(feature = "sim-mutants")]
        if ctx.mutant(crate::mutants::Mutant::DropTailAfterEof) && self.client.fin == Fin::Wanted {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        // FINs whose queues have drained; legs finished both ways.
        self.client.try_fin(SockId::client(conn), ctx.out);
        if self.client.is_done() {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        for leg in &mut self.legs {
            leg.side.try_fin(leg.sock(conn), ctx.out);
            if leg.side.is_done() {
                leg.end(conn, Outcome::Ok, false, ctx);
            }
        }
        // Once the primary's leg is over, secondaries have a deadline.
        if self.legs[0].side.is_closed() {
            let at = ctx.now + ctx.cfg.secondary_deadline;
            for leg in &mut self.legs[1..] {
                if !leg.side.is_closed() && leg.deadline_timer.is_none() {
                    ctx.timers.set(
                        TimerKey::Deadline(conn, leg.id),
                        &mut leg.deadline_timer,
                        Some(at),
                    );
                }
            }
        }
        if self.client.is_closed() && self.legs[0].side.is_closed() {
            ctx.timers
                .set(TimerKey::Idle(conn), &mut self.idle_timer, None);
        }
        // Backpressure: the client feeds the primary, the primary feeds the client.
        #[allow(unused_mut)]
        let (mut primary_unflushed, client_unflushed) =
            (self.legs[0].side.unflushed, self.client.unflushed);
        #[cfg(feature = "sim-mutants")]
        if ctx.mutant(crate::mutants::Mutant::SecondaryBackpressuresClient) {
            let worst = self.legs.iter().map(|l| l.side.unflushed).max();
            primary_unflushed = worst.unwrap_or(primary_unflushed);
        }
        self.client
            .apply_flow(SockId::client(conn), primary_unflushed, ctx.cfg, ctx.out);
        let primary = &mut self.legs[0];
        let sock = primary.sock(conn);
        primary
            .side
            .apply_flow(sock, client_unflushed, ctx.cfg, ctx.out);
    }

    /// The record of this finished session.
    pub(crate) fn report(&self) -> SessionReport {
        let origin = self.first_client_byte.unwrap_or(self.started);
        let since = |t: Option<Instant>| t.map(|t| t.saturating_since(origin));
        let primary = (self.primary().received, self.primary().digest.value());
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
                    role: if leg.id.is_primary() {
                        Role::Primary
                    } else {
                        Role::Secondary
                    },
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
        }
    }

    /// Cancels this session's timers (it is being dropped).
    pub(crate) fn cancel_timers(&mut self, timers: &mut Timers) {
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
    }
}
