//! The interceptor API's rules as the [model](super::model) reads them from its documentation
//! (`engine/src/intercept.rs`, `engine/src/conn.rs`): a session's sockets, pending effects,
//! held bytes and routes, what each [`Conn`](fanout_engine::Conn) call does to them ([`Act`]
//! implements the program's [`Exec`]), and what the engine does around the hooks (FINs wanted,
//! a lost primary, a misuse closing the session).

use super::program::{Exec, Flags, Plan, MARKER};
use crate::driver::Socks;
use fanout_engine::{
    BackendId, Bytes, Config, ConnId, EffectId, EffectRequest, End, Instant, Misuse, Open, Outcome,
    Peer, Role, SockId, UpstreamId,
};
use std::collections::{BTreeMap, VecDeque};

/// Our FIN to a socket, as the rules have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fin {
    NotWanted,
    Wanted,
    Sent,
}

/// One socket of a session, as the model sees it.
#[derive(Debug)]
pub(super) struct Side {
    pub(super) closed: bool,
    pub(super) fin: Fin,
    /// The peer's EOF was read.
    pub(super) eof: bool,
    /// Bytes handed to the socket's write path and not yet seen in a `Write`, in order.
    pub(super) expect: VecDeque<Bytes>,
    pub(super) expect_len: u64,
    /// Bytes ever handed to the write path.
    pub(super) released: u64,
    /// Bytes for it waiting behind a pending effect.
    pub(super) gated: u64,
    /// Route bits of the destinations this socket's bytes were written to (bit 0 the client,
    /// bit 1 + n backend n).
    pub(super) feeds: u64,
}

impl Side {
    pub(super) fn new() -> Self {
        Side {
            closed: false,
            fin: Fin::NotWanted,
            eof: false,
            expect: VecDeque::new(),
            expect_len: 0,
            released: 0,
            gated: 0,
            feeds: 0,
        }
    }

    pub(super) fn want_fin(&mut self) {
        if self.fin == Fin::NotWanted && !self.closed {
            self.fin = Fin::Wanted;
        }
    }

    /// Closed by a rule of the engine. What was already written stays in flight (the `Write`
    /// commands precede the `Close`); what waited for a connect is discarded when `pending`.
    pub(super) fn close(&mut self, pending: bool) {
        self.closed = true;
        if pending {
            self.forget();
        }
        self.gated = 0;
    }

    /// Nothing more will be written (the socket closed).
    pub(super) fn forget(&mut self) {
        self.expect.clear();
        self.expect_len = 0;
    }

    pub(super) fn push(&mut self, data: Bytes) {
        self.released += data.len() as u64;
        self.expect_len += data.len() as u64;
        self.expect.push_back(data);
    }
}

#[derive(Debug)]
pub(super) struct Leg {
    pub(super) role: Role,
    pub(super) upstream: UpstreamId,
    pub(super) side: Side,
    pub(super) connected: bool,
    /// While connecting: when the engine must give up.
    pub(super) connect_deadline: Option<Instant>,
    /// The outcome its report must give, when the model closed it (budget, close, misuse).
    pub(super) outcome: Option<Outcome>,
    /// Bytes read from it.
    pub(super) received: u64,
    /// A secondary opened before the primary sent a byte: its report has a verdict.
    pub(super) compared: bool,
}

impl Leg {
    pub(super) fn connecting(&self) -> bool {
        !self.connected && !self.side.closed
    }

    pub(super) fn open(&self) -> bool {
        self.connected && !self.side.closed
    }
}

/// One pending effect: a gate in the session's output.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) id: EffectId,
    /// The source of the hook that asked for it: `on_effect` runs as if from it.
    pub(super) source: Option<Peer>,
    pub(super) deadline: Instant,
    /// `on_effect` ran for it.
    pub(super) done: bool,
    /// What `on_effect` wrote.
    pub(super) result: Vec<(Peer, Bytes)>,
    /// Output issued after it was requested.
    pub(super) after: Vec<(Peer, Bytes)>,
}

#[derive(Debug)]
pub(super) struct Session {
    /// The program's state: `None` before `on_connect` returned and after a panic.
    pub(super) plan: Option<Plan>,
    pub(super) panicked: bool,
    pub(super) client: Side,
    pub(super) legs: Vec<Leg>,
    pub(super) primary: Option<BackendId>,
    pub(super) held: Vec<Bytes>,
    pub(super) held_len: u64,
    pub(super) gates: VecDeque<Gate>,
    /// `on_effect` is running for this effect.
    pub(super) filling: Option<EffectId>,
    /// The socket whose bytes the running hook handles.
    pub(super) source: Option<Peer>,
    /// During `on_connect_failed`: what the failed backend never got.
    pub(super) unsent: Vec<Bytes>,
    pub(super) close_after_fin: bool,
    pub(super) misuse: Option<Misuse>,
    /// The interceptor error its report must give.
    pub(super) error: Option<String>,
    /// `on_end` ran.
    pub(super) ended: bool,
}

pub(super) fn route_bit(peer: Peer) -> u64 {
    match peer {
        Peer::Client => 1,
        Peer::Backend(b) => 1u64.checked_shl(1 + u32::from(b.0)).unwrap_or(0),
    }
}

impl Session {
    pub(super) fn new() -> Self {
        Session {
            plan: None,
            panicked: false,
            client: Side::new(),
            legs: Vec::new(),
            primary: None,
            held: Vec::new(),
            held_len: 0,
            gates: VecDeque::new(),
            filling: None,
            source: None,
            unsent: Vec::new(),
            close_after_fin: false,
            misuse: None,
            error: None,
            ended: false,
        }
    }

    /// Whether the engine runs this session's hooks.
    pub(super) fn active(&self) -> bool {
        self.plan.is_some() && self.misuse.is_none() && self.error.is_none() && !self.ended
    }

    pub(super) fn side(&self, peer: Peer) -> Option<&Side> {
        match peer {
            Peer::Client => Some(&self.client),
            Peer::Backend(b) => self.legs.get(usize::from(b.0)).map(|l| &l.side),
        }
    }

    pub(super) fn side_mut(&mut self, peer: Peer) -> Option<&mut Side> {
        match peer {
            Peer::Client => Some(&mut self.client),
            Peer::Backend(b) => self.legs.get_mut(usize::from(b.0)).map(|l| &mut l.side),
        }
    }

    pub(super) fn leg_mut(&mut self, b: BackendId) -> Option<&mut Leg> {
        self.legs.get_mut(usize::from(b.0))
    }

    pub(super) fn primary_over_or_none(&self) -> bool {
        match self.primary {
            None => true,
            Some(p) => self.legs[usize::from(p.0)].side.closed,
        }
    }

    pub(super) fn held_total(&self) -> u64 {
        self.held_len + self.client.gated + self.legs.iter().map(|l| l.side.gated).sum::<u64>()
    }

    /// Effects whose result is still awaited.
    pub(super) fn pending(&self) -> usize {
        self.gates.iter().filter(|g| !g.done).count()
    }

    pub(super) fn close_leg(leg: &mut Leg) {
        leg.side.close(!leg.connected);
        leg.connect_deadline = None;
    }

    /// Every socket closed by the engine at once; legs still open end with `outcome`. Within a
    /// timeout a secondary's deadline may have closed it first, unseen by the model: then
    /// (`timeout`) secondaries get no expected outcome.
    pub(super) fn close_all(&mut self, outcome: Outcome, timeout: bool) {
        self.client.close(false);
        for leg in &mut self.legs {
            let unseen = timeout && leg.role == Role::Secondary;
            if !leg.side.closed && !unseen {
                leg.outcome = Some(outcome);
            }
            Session::close_leg(leg);
        }
        self.held.clear();
        self.held_len = 0;
    }

    pub(super) fn release_secondaries(&mut self) {
        for leg in &mut self.legs {
            if leg.role == Role::Secondary {
                leg.side.want_fin();
            }
        }
    }

    /// The primary is gone: if it had answered completely the client gets the rest and a FIN,
    /// otherwise it is closed at once (unless the program opened a new primary).
    pub(super) fn primary_lost(&mut self) {
        if !self.primary_over_or_none() {
            return;
        }
        let complete = self
            .primary
            .is_some_and(|p| self.legs[usize::from(p.0)].side.eof);
        if complete {
            self.client.want_fin();
        } else {
            self.client.close(false);
            self.release_secondaries();
        }
    }

    /// `Finish::Default` for backend `b` ending with `end`.
    pub(super) fn finished(&mut self, b: BackendId, end: End) {
        if self.primary == Some(b) {
            match end {
                End::Eof => self.client.want_fin(),
                End::Failed(_) => self.primary_lost(),
            }
        }
    }

    /// After a hook: a misuse (or panic) closes the session.
    pub(super) fn settle(&mut self, timeout: bool) {
        if let Some(m) = self.misuse.take() {
            self.error = Some(m.to_string());
            self.close_all(Outcome::InterceptorError, timeout);
        }
    }
}

/// What every session shares: limits, the clock, the effect counter, and the commands the program
/// asked for that the engine has not emitted yet.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) cfg: Config,
    pub(super) flags: Flags,
    pub(super) now: Instant,
    pub(super) next_effect: u64,
    pub(super) connects: VecDeque<(SockId, UpstreamId)>,
    pub(super) effects: VecDeque<(ConnId, EffectId, EffectRequest)>,
    /// The session of every effect the engine waits for.
    pub(super) owner: BTreeMap<EffectId, ConnId>,
    /// The event being handled is a timeout (several timers may fire in it, some unseen), or a
    /// second `Drain`, which fires the drain deadline at once.
    pub(super) timeout: bool,
    /// `Drain`s handled so far.
    pub(super) drains: u32,
}

/// The interceptor API as the model reads it, acting on one session.
pub(super) struct Act<'a> {
    pub(super) conn: ConnId,
    pub(super) s: &'a mut Session,
    pub(super) g: &'a mut Shared,
    pub(super) socks: &'a Socks,
    pub(super) panicked: bool,
}

impl Act<'_> {
    pub(super) fn misuse(&mut self, m: Misuse) {
        self.s.misuse.get_or_insert(m);
    }

    /// The one write path: closed sockets drop it, after a FIN it is a misuse, behind a pending
    /// effect it waits, and a write from a hook's source records the route.
    pub(super) fn emit(&mut self, dest: Peer, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let gated = !self.s.gates.is_empty();
        let source = self.s.source;
        let len = data.len() as u64;
        let Some(side) = self.s.side_mut(dest) else {
            if let Peer::Backend(b) = dest {
                self.misuse(Misuse::UnknownBackend(b));
            }
            return;
        };
        if side.closed {
            return;
        }
        if side.fin == Fin::Sent {
            self.misuse(Misuse::WriteAfterFin);
            return;
        }
        if gated {
            side.gated += len;
            let filling = self.s.filling;
            let gates = &mut self.s.gates;
            let list = match filling.and_then(|id| gates.iter_mut().find(|g| g.id == id)) {
                Some(g) => &mut g.result,
                None => &mut gates.back_mut().expect("gated").after,
            };
            list.push((dest, data));
            if self.s.held_total() > self.g.cfg.max_held {
                self.misuse(Misuse::HeldOverLimit);
            }
        } else {
            self.write_now(dest, data);
        }
        if let Some(src) = source {
            if let Some(side) = self.s.side_mut(src) {
                side.feeds |= route_bit(dest);
            }
        }
    }

    /// Hands `data` to the socket; a secondary past its budget is detached.
    pub(super) fn write_now(&mut self, dest: Peer, data: Bytes) {
        let sock = SockId {
            conn: self.conn,
            peer: dest,
        };
        let flushed = self.socks.get(&sock).map_or(0, |m| m.flushed);
        let budget = self.g.cfg.secondary_budget;
        match dest {
            Peer::Client => {
                if !self.s.client.closed {
                    self.s.client.push(data);
                }
            }
            Peer::Backend(b) => {
                let Some(leg) = self.s.leg_mut(b) else { return };
                if leg.side.closed {
                    return;
                }
                leg.side.push(data);
                if leg.role == Role::Secondary && leg.side.released - flushed > budget {
                    Session::close_leg(leg);
                    if !self.g.timeout {
                        leg.outcome = Some(Outcome::DetachedBudget);
                    }
                }
            }
        }
    }

    /// Writes the output of every completed gate at the front, in order.
    pub(super) fn release_gates(&mut self) {
        while self.s.gates.front().is_some_and(|g| g.done) {
            let gate = self.s.gates.pop_front().expect("checked");
            for (dest, data) in gate.result.into_iter().chain(gate.after) {
                let Some(side) = self.s.side_mut(dest) else {
                    continue;
                };
                side.gated = side.gated.saturating_sub(data.len() as u64);
                if side.closed {
                    continue;
                }
                self.write_now(dest, data);
            }
        }
    }
}

impl Exec for Act<'_> {
    fn open(&mut self, upstream: UpstreamId, how: Open) -> Result<BackendId, Misuse> {
        let err = if self.s.legs.len() >= usize::from(self.g.cfg.max_backends) {
            Some(Misuse::TooManyBackends)
        } else if how.role == Role::Primary && !self.s.primary_over_or_none() {
            Some(Misuse::SecondPrimary)
        } else {
            None
        };
        if let Some(m) = err {
            self.misuse(m.clone());
            return Err(m);
        }
        let id = BackendId(self.s.legs.len() as u16);
        let primary_received = self
            .s
            .primary
            .map_or(0, |p| self.s.legs[usize::from(p.0)].received);
        self.s.legs.push(Leg {
            received: 0,
            compared: how.role == Role::Secondary && primary_received == 0,
            role: how.role,
            upstream,
            side: Side::new(),
            connected: false,
            connect_deadline: Some(self.g.now + self.g.cfg.connect_timeout),
            outcome: None,
        });
        if self.s.client.eof || self.s.client.closed {
            // Nothing more comes from the client (its EOF, or it is gone): a backend opened now
            // gets its FIN after its bytes.
            self.s.legs[usize::from(id.0)].side.want_fin();
        }
        if how.role == Role::Primary {
            self.s.primary = Some(id);
        }
        self.g
            .connects
            .push_back((SockId::backend(self.conn, id), upstream));
        Ok(id)
    }

    fn is_open(&self, b: BackendId) -> bool {
        self.s
            .legs
            .get(usize::from(b.0))
            .is_some_and(|l| !l.side.closed)
    }

    fn role(&self, b: BackendId) -> Option<Role> {
        self.s.legs.get(usize::from(b.0)).map(|l| l.role)
    }

    fn forward(&mut self, data: Bytes) {
        for i in 0..self.s.legs.len() {
            let side = &self.s.legs[i].side;
            if side.closed || side.fin == Fin::Sent {
                continue;
            }
            self.emit(Peer::Backend(BackendId(i as u16)), data.clone());
        }
    }

    fn send(&mut self, b: BackendId, data: Bytes) {
        self.emit(Peer::Backend(b), data);
    }

    fn answer(&mut self, data: Bytes) {
        self.emit(Peer::Client, data);
    }

    fn hold(&mut self, data: Bytes) {
        self.s.held_len += data.len() as u64;
        self.s.held.push(data);
        if self.s.held_total() > self.g.cfg.max_held {
            self.misuse(Misuse::HeldOverLimit);
        }
    }

    fn take_held(&mut self) -> Vec<Bytes> {
        self.s.held_len = 0;
        std::mem::take(&mut self.s.held)
    }

    fn unsent(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.s.unsent)
    }

    fn effect(&mut self, request: EffectRequest) -> Result<EffectId, Misuse> {
        if self.s.pending() >= self.g.cfg.max_effects as usize {
            self.misuse(Misuse::TooManyEffects);
            return Err(Misuse::TooManyEffects);
        }
        let id = EffectId(self.g.next_effect);
        self.g.next_effect += 1;
        self.s.gates.push_back(Gate {
            id,
            source: self.s.source,
            deadline: self.g.now + self.g.cfg.effect_timeout,
            done: false,
            result: Vec::new(),
            after: Vec::new(),
        });
        self.g.owner.insert(id, self.conn);
        self.g.effects.push_back((self.conn, id, request));
        Ok(id)
    }

    fn shutdown(&mut self, b: BackendId) {
        match self.s.leg_mut(b) {
            Some(leg) => leg.side.want_fin(),
            None => self.misuse(Misuse::UnknownBackend(b)),
        }
    }

    fn close_client(&mut self) {
        self.s.client.want_fin();
        self.s.close_after_fin = true;
    }

    fn close(&mut self) {
        self.s.close_all(Outcome::ClosedEarly, self.g.timeout);
    }

    fn panic(&mut self) {
        // A panic replaces any misuse of the same hook.
        self.s.misuse = Some(Misuse::Panicked(MARKER.to_string()));
        self.panicked = true;
    }
}
