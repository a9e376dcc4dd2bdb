//! The oracle of the `intercept_events` target: what every socket must receive when the engine
//! runs the [program] (the interceptor under test), by the interceptor API's documented rules
//! (`engine/src/intercept.rs`, `engine/src/conn.rs`), written apart from the engine's code.
//!
//! [`Spec`] follows the interceptor's hook calls ([`Call`], logged by [`Fuzzy`](super::Fuzzy)) and
//! checks each against the event that caused it: after a client read, exactly one `on_data` with
//! exactly its bytes; after a backend read, one `on_response`; after EOF, `on_client_eof` or
//! `on_finish`; after a connect result, `on_backend_connected` or `on_connect_failed` with its
//! reason; after an effect's result, one `on_effect` if and only if the engine still waits for it;
//! on a timeout, only connects and effects whose deadline passed, and then every one of them; and
//! `on_end` once, when the last socket of a session closed (never after a panic). No hook of a
//! session runs after it panicked, misused the API or ended.
//!
//! It runs the program on its own model of the session for each of those calls, and so knows the
//! stream each socket must receive:
//!
//! - **Streams**: every write is the next bytes the program sent that socket, byte for byte, in
//!   order; after every input, an open socket has been written everything sent to it, and a
//!   connecting one holds exactly those bytes. A backend that closed drops what is sent to it.
//! - **Order across effects**: output issued while an effect is pending waits behind it; what
//!   `on_effect` writes goes first, at the effect's place; gates open in request order. So the
//!   client's answers come in request order even when effects complete out of order.
//! - **FIN**: only when the rules ask for it (the client's EOF for every backend, `shutdown`, the
//!   primary's EOF or `close_client` for the client, a lost primary for the secondaries), never
//!   while an effect of the session is pending, never before every byte sent was written.
//! - **Close**: a socket closes before finishing both ways only when a deadline or failure forces
//!   it, a secondary passed its budget, the program closed the session or misused the API, or the
//!   client's FIN went out after `close_client`.
//! - **Containment**: a panic or a misuse (unknown backend, too many backends, a second primary,
//!   write after FIN, too much held, too many effects) closes that session in the same input and
//!   its report says why; other sessions go on.
//! - **Connects and effects**: every `Connect` and `Effect` command is one the program asked for,
//!   in order, with the ids and upstreams the rules give.
//! - **Flow control per route**: a write by `on_data` or `on_response` records the route from
//!   its source to its destination; a reader is paused while any destination it feeds (the client
//!   or a non-secondary backend) holds more than the high-water mark, counting bytes waiting behind
//!   effects, and resumed at the low mark. And the client's queue stays within the high-water mark
//!   plus one read per source feeding it plus the pending effects' results: a client that stops
//!   reading cannot make the proxy buffer more.
//! - **Reports**: every backend the program opened, in order, with its role and upstream, only
//!   secondaries compared; `interceptor-error` in the misuse's own words exactly when the program
//!   misused the API or panicked; the outcome of every close the model caused (`detached-budget`,
//!   `closed-early`, `interceptor-error`).
//!
//! What the model does not predict: timers that call no hook (idle, secondary deadline, drain).
//! It learns their closes from the `Close` commands of the timeout, and so within one timeout it
//! may still expect bytes on a secondary the engine just detached (harmless: nothing more is
//! checked on a closed socket) or an outcome for it (so it expects none there).

use super::program::{self, Flags, Plan};
use super::rules::{Act, Fin, Session, Shared, Side};
use super::Call;
use crate::driver::{Forcing, Model, Phase, Sock, Socks, MAX_READ};
use fanout_engine::{
    BackendId, Bytes, Config, ConnId, EffectError, EffectId, EffectRequest, EffectResult, End,
    Engine, Event, Failure, Instant, Peer, Role, SessionReport, SockId, UpstreamId,
};
use std::collections::{BTreeMap, VecDeque};

/// The largest effect result the target feeds.
pub const MAX_RESULT: u64 = MAX_READ;

/// The model. See the [module documentation](self).
#[derive(Debug)]
pub struct Spec {
    g: Shared,
    /// A client the engine refused in the input being handled.
    refused: Option<ConnId>,
    /// Sessions whose sockets are not all closed yet.
    sessions: BTreeMap<ConnId, Session>,
    served: Vec<ConnId>,
}

impl Spec {
    pub fn new(cfg: Config, flags: Flags) -> Self {
        Spec {
            g: Shared {
                cfg,
                flags,
                now: Instant::ZERO,
                next_effect: 1,
                connects: VecDeque::new(),
                effects: VecDeque::new(),
                owner: BTreeMap::new(),
                timeout: false,
                drains: 0,
            },
            sessions: BTreeMap::new(),
            served: Vec::new(),
            refused: None,
        }
    }

    fn active(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(Session::active)
    }

    /// Takes `want` from the front of `calls` if session `conn` runs hooks (it must be there),
    /// and makes sure it is not there otherwise.
    fn expect(&self, calls: &mut VecDeque<Call>, conn: ConnId, want: Call) -> bool {
        if self.active(conn) {
            match calls.pop_front() {
                Some(c) if c == want => true,
                other => panic!("the engine should call {want:?}; it called {other:?}"),
            }
        } else {
            assert!(
                calls.front() != Some(&want),
                "the engine called {want:?} for a session that runs no hooks"
            );
            false
        }
    }

    /// Runs one hook of the program on session `conn`, as the engine's `call` does; then a
    /// misuse closes the session.
    fn call(
        &mut self,
        conn: ConnId,
        socks: &Socks,
        source: Option<Peer>,
        f: impl FnOnce(Flags, &mut Plan, &mut Act<'_>),
    ) {
        let flags = self.g.flags;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let Some(mut plan) = s.plan.take() else {
            return;
        };
        s.source = source;
        let panicked = {
            let mut act = Act {
                conn,
                s: &mut *s,
                g: &mut self.g,
                socks,
                panicked: false,
            };
            f(flags, &mut plan, &mut act);
            act.panicked
        };
        s.source = None;
        if panicked {
            s.panicked = true;
        } else {
            s.plan = Some(plan);
        }
    }

    fn act<'a>(&'a mut self, conn: ConnId, socks: &'a Socks) -> Option<Act<'a>> {
        let s = self.sessions.get_mut(&conn)?;
        Some(Act {
            conn,
            s,
            g: &mut self.g,
            socks,
            panicked: false,
        })
    }

    fn session(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(&conn)
    }

    fn settle(&mut self, conn: ConnId) {
        let timeout = self.g.timeout;
        if let Some(s) = self.session(conn) {
            s.settle(timeout);
        }
    }

    // ---- events -------------------------------------------------------------------------

    fn accepted(&mut self, conn: ConnId, calls: &mut VecDeque<Call>, socks: &Socks) {
        if calls.front() != Some(&Call::Connect(conn)) {
            // Refused (draining, or max-connections): its client must close now.
            self.refused = Some(conn);
            return;
        }
        calls.pop_front();
        self.served.push(conn);
        self.sessions.insert(conn, Session::new());
        let flags = self.g.flags;
        let mut act = self.act(conn, socks).expect("inserted");
        let plan = program::on_connect(flags, &mut act);
        let panicked = act.panicked;
        let s = self.session(conn).expect("inserted");
        if panicked {
            s.panicked = true;
        } else {
            s.plan = Some(plan);
        }
        self.settle(conn);
    }

    fn connected(&mut self, conn: ConnId, b: BackendId, calls: &mut VecDeque<Call>) {
        let Some(leg) = self.session(conn).and_then(|s| s.leg_mut(b)) else {
            return;
        };
        if !leg.connecting() {
            return;
        }
        leg.connected = true;
        leg.connect_deadline = None;
        // The program does nothing in on_backend_connected.
        self.expect(calls, conn, Call::Connected(conn, b));
        self.settle(conn);
    }

    fn connect_failed(
        &mut self,
        conn: ConnId,
        b: BackendId,
        reason: Failure,
        calls: &mut VecDeque<Call>,
        socks: &Socks,
    ) {
        let Some(s) = self.session(conn) else { return };
        let Some(leg) = s.leg_mut(b) else { return };
        if !leg.connecting() {
            return;
        }
        // Never connected: everything sent to it is what it never got.
        let unsent: Vec<Bytes> = leg.side.expect.drain(..).collect();
        Session::close_leg(leg);
        s.unsent = unsent;
        if self.expect(calls, conn, Call::ConnectFailed(conn, b, reason)) {
            self.call(conn, socks, None, |flags, plan, x| {
                program::on_connect_failed(flags, plan, x, b)
            });
        }
        let s = self.session(conn).expect("present");
        s.unsent.clear();
        if s.primary == Some(b) {
            s.primary_lost();
        }
        self.settle(conn);
    }

    fn failed(&mut self, sock: SockId, reason: Failure, calls: &mut VecDeque<Call>, socks: &Socks) {
        let conn = sock.conn;
        let Some(s) = self.session(conn) else { return };
        match sock.peer {
            Peer::Client => {
                if s.client.closed {
                    return;
                }
                s.client.close(false);
                if let Some(p) = s.primary {
                    Session::close_leg(&mut s.legs[usize::from(p.0)]);
                }
                s.release_secondaries();
            }
            Peer::Backend(b) => {
                let Some(leg) = s.leg_mut(b) else { return };
                if leg.side.closed {
                    return;
                }
                if leg.connecting() {
                    return self.connect_failed(conn, b, reason, calls, socks);
                }
                Session::close_leg(leg);
                let end = End::Failed(reason);
                // The program's on_finish leaves the default.
                self.expect(calls, conn, Call::Finish(conn, b, end));
                self.session(conn).expect("present").finished(b, end);
            }
        }
        self.settle(conn);
    }

    fn read(&mut self, sock: SockId, data: &Bytes, calls: &mut VecDeque<Call>, socks: &Socks) {
        let conn = sock.conn;
        let Some(s) = self.session(conn) else { return };
        match sock.peer {
            Peer::Client => {
                if s.client.closed || s.client.eof {
                    return;
                }
                if self.expect(calls, conn, Call::Data(conn, data.clone())) {
                    let data = data.clone();
                    self.call(conn, socks, Some(Peer::Client), |_, plan, x| {
                        program::on_data(plan, x, data)
                    });
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = s.leg_mut(b) else { return };
                if !leg.open() || leg.side.eof {
                    return;
                }
                leg.received += data.len() as u64;
                if self.expect(calls, conn, Call::Response(conn, b, data.clone())) {
                    self.call(conn, socks, Some(sock.peer), |_, _, x| {
                        program::on_response(x, b, data)
                    });
                }
            }
        }
        self.settle(conn);
    }

    fn read_closed(&mut self, sock: SockId, calls: &mut VecDeque<Call>, socks: &Socks) {
        let conn = sock.conn;
        let Some(s) = self.session(conn) else { return };
        match sock.peer {
            Peer::Client => {
                if s.client.closed || s.client.eof {
                    return;
                }
                s.client.eof = true;
                if self.expect(calls, conn, Call::ClientEof(conn)) {
                    self.call(conn, socks, None, |_, plan, x| {
                        program::on_client_eof(plan, x)
                    });
                }
                let s = self.session(conn).expect("present");
                for leg in &mut s.legs {
                    leg.side.want_fin();
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = s.leg_mut(b) else { return };
                if !leg.open() || leg.side.eof {
                    return;
                }
                leg.side.eof = true;
                self.expect(calls, conn, Call::Finish(conn, b, End::Eof));
                self.session(conn).expect("present").finished(b, End::Eof);
            }
        }
        self.settle(conn);
    }

    fn effect_done(
        &mut self,
        id: EffectId,
        result: &EffectResult,
        calls: &mut VecDeque<Call>,
        socks: &Socks,
    ) {
        let Some(&conn) = self.g.owner.get(&id) else {
            return; // timed out already, or its session is gone: ignored
        };
        let Some(s) = self.session(conn) else { return };
        if !s.gates.iter().any(|g| g.id == id && !g.done) {
            return;
        }
        self.g.owner.remove(&id);
        if self.expect(calls, conn, Call::Effect(conn, id, result.clone())) {
            let s = self.session(conn).expect("present");
            s.filling = Some(id);
            let source = s.gates.iter().find(|g| g.id == id).and_then(|g| g.source);
            self.call(conn, socks, source, |_, _, x| program::on_effect(x, result));
        }
        let mut act = self.act(conn, socks).expect("present");
        act.s.filling = None;
        if let Some(g) = act.s.gates.iter_mut().find(|g| g.id == id) {
            g.done = true;
        }
        act.release_gates();
        self.settle(conn);
    }

    /// A timeout: only connects and effects whose deadline passed call hooks, and `on_end` for
    /// sessions an idle, drain or other deadline closed.
    fn timeout(&mut self, calls: &mut VecDeque<Call>, socks: &Socks) {
        let now = self.g.now;
        while let Some(call) = calls.front().cloned() {
            match call {
                Call::End(conn) => {
                    calls.pop_front();
                    self.end(conn);
                }
                Call::ConnectFailed(conn, b, reason) => {
                    assert_eq!(reason, Failure::TimedOut, "{call:?} on a timeout");
                    let deadline = self
                        .sessions
                        .get(&conn)
                        .and_then(|s| s.legs.get(usize::from(b.0)))
                        .filter(|l| l.connecting())
                        .and_then(|l| l.connect_deadline);
                    assert!(
                        deadline.is_some_and(|d| d <= now),
                        "{call:?} at {now:?}, connect deadline {deadline:?}"
                    );
                    self.connect_failed(conn, b, reason, calls, socks);
                }
                Call::Effect(conn, id, ref result) => {
                    assert_eq!(*result, Err(EffectError::TimedOut), "{call:?} on a timeout");
                    assert_eq!(
                        self.g.owner.get(&id),
                        Some(&conn),
                        "{call:?}: not its effect"
                    );
                    let deadline = self
                        .sessions
                        .get(&conn)
                        .and_then(|s| s.gates.iter().find(|g| g.id == id && !g.done))
                        .map(|g| g.deadline);
                    assert!(
                        deadline.is_some_and(|d| d <= now),
                        "{call:?} at {now:?}, effect deadline {deadline:?}"
                    );
                    self.effect_done(id, &Err(EffectError::TimedOut), calls, socks);
                }
                other => panic!("the engine called {other:?} on a timeout"),
            }
        }
    }

    fn end(&mut self, conn: ConnId) {
        let s = self
            .sessions
            .get_mut(&conn)
            .unwrap_or_else(|| panic!("on_end for {conn:?}, not a live session"));
        assert!(!s.ended, "on_end twice for {conn:?}");
        assert!(!s.panicked, "on_end for {conn:?}, whose hook panicked");
        s.ended = true;
        for g in &s.gates {
            self.g.owner.remove(&g.id);
        }
    }

    fn sock_side(&mut self, sock: SockId) -> &mut Side {
        self.sessions
            .get_mut(&sock.conn)
            .and_then(|s| s.side_mut(sock.peer))
            .unwrap_or_else(|| panic!("{sock} is no socket the program opened"))
    }
}

impl Model for Spec {
    type Hooks = super::Fuzzy;

    fn handled(
        &mut self,
        now: Instant,
        event: &Event,
        engine: &Engine<super::Fuzzy>,
        socks: &Socks,
    ) {
        self.g.now = now;
        self.g.drains += u32::from(matches!(event, Event::Drain));
        self.g.timeout = match event {
            Event::Timeout => true,
            Event::Drain => self.g.drains > 1,
            _ => false,
        };
        let mut calls: VecDeque<Call> = engine.interceptor().take_calls().into();
        match event {
            Event::Accepted { conn, .. } => self.accepted(*conn, &mut calls, socks),
            Event::Connected { sock } => {
                if let Peer::Backend(b) = sock.peer {
                    self.connected(sock.conn, b, &mut calls);
                }
            }
            Event::ConnectFailed { sock, reason } => {
                if let Peer::Backend(b) = sock.peer {
                    self.connect_failed(sock.conn, b, *reason, &mut calls, socks);
                }
            }
            Event::Read { sock, data } => self.read(*sock, data, &mut calls, socks),
            Event::ReadClosed { sock } => self.read_closed(*sock, &mut calls, socks),
            Event::Flushed { .. } | Event::Spliced { .. } | Event::Drain => {}
            Event::Failed { sock, reason } => self.failed(*sock, *reason, &mut calls, socks),
            Event::Timeout => self.timeout(&mut calls, socks),
            Event::EffectDone { id, result } => self.effect_done(*id, result, &mut calls, socks),
        }
        while let Some(call) = calls.pop_front() {
            match call {
                Call::End(conn) => self.end(conn),
                other => {
                    panic!("after {event:?} the engine called {other:?}, which nothing asked for")
                }
            }
        }
    }

    fn connect(&mut self, _: &Socks, sock: SockId, upstream: UpstreamId) {
        let want = self.g.connects.pop_front();
        assert_eq!(
            want,
            Some((sock, upstream)),
            "the engine connects {sock} to {upstream:?}; the program opened {want:?}"
        );
    }

    fn write(&mut self, _: &Socks, sock: SockId, at: u64, data: &[u8]) {
        let side = self.sock_side(sock);
        assert_eq!(
            side.released - side.expect_len,
            at,
            "{sock}: the engine and the model disagree how much was written"
        );
        let mut i = 0;
        while i < data.len() {
            let Some(front) = side.expect.front_mut() else {
                panic!(
                    "{sock} was written {} bytes at offset {} that the program did not send it (yet): \
                     bytes from nowhere, or output that must wait behind a pending effect",
                    data.len() - i,
                    at + i as u64
                );
            };
            let n = front.len().min(data.len() - i);
            if let Some(k) = (0..n).find(|&k| front[k] != data[i + k]) {
                panic!(
                    "{sock} got the wrong byte at offset {}: not what the program sent it",
                    at + (i + k) as u64
                );
            }
            let _ = front.split_to(n);
            if front.is_empty() {
                side.expect.pop_front();
            }
            i += n;
        }
        side.expect_len -= data.len() as u64;
    }

    fn shutdown(&mut self, _: &Socks, sock: SockId) {
        let s = self
            .sessions
            .get_mut(&sock.conn)
            .unwrap_or_else(|| panic!("FIN to {sock} of no live session"));
        let pending = s.gates.len();
        let side = s
            .side_mut(sock.peer)
            .unwrap_or_else(|| panic!("FIN to {sock}, never opened"));
        assert_eq!(
            side.fin,
            Fin::Wanted,
            "FIN to {sock}, which nothing asked for"
        );
        assert_eq!(
            pending, 0,
            "FIN to {sock} while an effect of its session is pending: what the effect's hook \
             writes would come after it"
        );
        assert_eq!(
            side.expect_len, 0,
            "FIN to {sock} before all the program sent it was written"
        );
        side.fin = Fin::Sent;
    }

    fn close(&mut self, _: &Socks, sock: SockId, m: &Sock, forcing: Forcing) {
        let Some(s) = self.sessions.get_mut(&sock.conn) else {
            // A refused accept: no session was made.
            assert!(
                forcing == Forcing::Any && sock.peer == Peer::Client,
                "close of {sock}, of no live session"
            );
            return;
        };
        let after_fin = sock.peer == Peer::Client && s.close_after_fin && m.shut;
        let Some(side) = s.side_mut(sock.peer) else {
            panic!("close of {sock}, never opened");
        };
        assert!(
            forcing == Forcing::Any || m.finished() || side.closed || after_fin,
            "{sock} closed before it finished both ways, with nothing forcing it: {m:?}"
        );
        side.close(true);
        if after_fin {
            // close_client: every backend gets its FIN after what it was sent.
            for leg in &mut s.legs {
                leg.side.want_fin();
            }
        }
        if let Peer::Backend(b) = sock.peer {
            s.legs[usize::from(b.0)].connect_deadline = None;
        }
    }

    fn effect(&mut self, conn: ConnId, id: EffectId, request: &EffectRequest) {
        let want = self.g.effects.pop_front();
        assert_eq!(
            want,
            Some((conn, id, request.clone())),
            "the engine requests effect {id:?} for {conn:?}; the program asked for {want:?}"
        );
    }

    fn report(&mut self, _: &Socks, report: &SessionReport) {
        let conn = report.conn;
        let s = self
            .sessions
            .get(&conn)
            .unwrap_or_else(|| panic!("report for {conn:?}, no session of the program"));
        assert_eq!(
            report.interceptor_error, s.error,
            "{conn:?}: the report's interceptor error"
        );
        assert_eq!(report.backends.len(), s.legs.len(), "{conn:?}: backends");
        for (i, (b, leg)) in report.backends.iter().zip(&s.legs).enumerate() {
            let sock = SockId::backend(conn, b.backend);
            assert_eq!(
                usize::from(b.backend.0),
                i,
                "{conn:?}: backends out of order"
            );
            assert_eq!(b.role, leg.role, "{sock}: role");
            assert_eq!(b.upstream, leg.upstream, "{sock}: upstream");
            assert_eq!(
                b.matches_primary.is_some(),
                leg.compared,
                "{sock}: only a secondary opened before the primary's first byte is compared"
            );
            if let Some(outcome) = leg.outcome {
                assert_eq!(b.outcome, outcome, "{sock}: outcome");
            }
        }
    }

    fn check_limit(&self, sock: SockId, unflushed: u64) {
        let cfg = &self.g.cfg;
        let Some(s) = self.sessions.get(&sock.conn) else {
            return assert_eq!(unflushed, 0, "{sock} of no live session holds bytes");
        };
        let role = match sock.peer {
            Peer::Client => None,
            Peer::Backend(b) => s.legs.get(usize::from(b.0)).map(|l| l.role),
        };
        if role == Some(Role::Secondary) {
            // Bytes waiting behind an effect are bounded by max-held, not by the budget.
            return assert!(
                unflushed <= cfg.secondary_budget,
                "{sock} holds {unflushed} unflushed bytes, past its budget {}",
                cfg.secondary_budget
            );
        }
        let backlog = unflushed + self.gated(sock);
        let limit = match sock.peer {
            // One read's answer per source feeding it (the client and each backend), plus the
            // results of the effects pending when the client stopped being read.
            Peer::Client => {
                cfg.high_water
                    + MAX_READ * (1 + s.legs.len() as u64)
                    + u64::from(cfg.max_effects) * MAX_RESULT
            }
            // One chunk, or everything held, per backend of the session (a replacement gets what
            // its predecessor never did, before the client's route to it exists).
            Peer::Backend(_) => {
                cfg.high_water + (MAX_READ + cfg.max_held) * u64::from(cfg.max_backends)
            }
        };
        assert!(
            backlog <= limit,
            "{sock} holds {backlog} bytes (unflushed and behind effects), limit {limit}"
        );
    }

    fn gated(&self, sock: SockId) -> u64 {
        self.sessions
            .get(&sock.conn)
            .and_then(|s| s.side(sock.peer))
            .map_or(0, |side| side.gated)
    }

    fn pause_target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64> {
        let s = self.sessions.get(&sock.conn)?;
        let side = s.side(sock.peer)?;
        let mut worst = 0;
        let mut bits = side.feeds;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let dest = match i {
                0 => Peer::Client,
                i => {
                    let b = BackendId((i - 1) as u16);
                    if s.legs[i - 1].role == Role::Secondary {
                        continue; // a secondary paces nobody
                    }
                    Peer::Backend(b)
                }
            };
            worst = worst.max(backlog(SockId {
                conn: sock.conn,
                peer: dest,
            }));
        }
        Some(worst)
    }

    fn check(&mut self, engine: &Engine<super::Fuzzy>, socks: &Socks, now: Instant) {
        assert!(
            self.g.connects.is_empty(),
            "the program opened {:?}; the engine never asked to connect",
            self.g.connects
        );
        assert!(
            self.g.effects.is_empty(),
            "the program requested {:?}; the engine never emitted it",
            self.g.effects
        );
        if let Some(conn) = self.refused.take() {
            let client = SockId::client(conn);
            assert!(
                socks.get(&client).is_some_and(|m| m.phase == Phase::Closed),
                "{client}: neither served (on_connect) nor refused (closed)"
            );
        }
        let unflushed: BTreeMap<SockId, u64> = engine.unflushed().collect();
        let mut gone = Vec::new();
        for (&conn, s) in &self.sessions {
            let mut all_closed = true;
            let sides = std::iter::once((Peer::Client, &s.client)).chain(
                s.legs
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (Peer::Backend(BackendId(i as u16)), &l.side)),
            );
            for (peer, side) in sides {
                let sock = SockId { conn, peer };
                let m = socks
                    .get(&sock)
                    .unwrap_or_else(|| panic!("{sock} was opened, never connected"));
                let closed = m.phase == Phase::Closed;
                assert_eq!(
                    side.closed, closed,
                    "{sock}: the model and the engine disagree whether it is closed ({m:?})"
                );
                all_closed &= closed;
                match m.phase {
                    Phase::Open => assert_eq!(
                        side.expect_len, 0,
                        "{sock} is open, but bytes the program sent it were never written"
                    ),
                    Phase::Connecting => assert_eq!(
                        unflushed.get(&sock).copied().unwrap_or(0),
                        side.expect_len,
                        "{sock}: bytes waiting for its connect"
                    ),
                    Phase::Closed => {}
                }
            }
            if all_closed {
                assert!(
                    s.ended || s.panicked,
                    "{conn:?}: every socket closed, but on_end never ran"
                );
                gone.push(conn);
                continue;
            }
            assert!(
                !s.ended,
                "on_end for {conn:?} before all its sockets closed"
            );
            // A live session's deadlines that passed have all fired.
            for (i, leg) in s.legs.iter().enumerate() {
                if let Some(d) = leg.connect_deadline.filter(|&d| d <= now) {
                    panic!(
                        "{}: its connect timed out at {d:?}, it is {now:?}, and on_connect_failed \
                         never ran",
                        SockId::backend(conn, BackendId(i as u16))
                    );
                }
            }
            if let Some(g) = s.gates.iter().find(|g| !g.done && g.deadline <= now) {
                panic!(
                    "{conn:?}: effect {:?} timed out at {:?}, it is {now:?}, and on_effect never ran",
                    g.id, g.deadline
                );
            }
        }
        for conn in gone {
            let s = self.sessions.remove(&conn).expect("listed");
            for g in &s.gates {
                self.g.owner.remove(&g.id);
            }
        }
    }

    fn served(&self) -> Vec<ConnId> {
        self.served.clone()
    }

    fn finish(&mut self, _: &Socks) {
        assert!(
            self.sessions.is_empty(),
            "sessions left in the model: {:?}",
            self.sessions.keys()
        );
        assert!(
            self.g.owner.is_empty(),
            "effects still awaited: {:?}",
            self.g.owner
        );
    }
}
