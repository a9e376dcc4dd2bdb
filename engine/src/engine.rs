//! The [`Engine`]: routes events to sessions, owns the timers and the accept gate.

use crate::command::Command;
use crate::config::{Config, ConfigError};
use crate::effect::EffectId;
use crate::event::Event;
use crate::ids::{ConnId, Peer, SockId};
use crate::intercept::{Interceptor, Passthrough};
use crate::report::Outcome;
use crate::session::{Ctx, Session};
use crate::time::Instant;
use crate::timers::{TimerKey, Timers};
use std::collections::{BTreeMap, VecDeque};

/// The drain started by `Event::Drain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    Running,
    /// Sessions may finish until the drain timer fires.
    Draining,
    /// `Command::Drained` has been emitted.
    Done,
}

/// The sans-IO proxy core. See the [crate documentation](crate) for the contract.
pub struct Engine<I: Interceptor = Passthrough> {
    cfg: Config,
    hooks: I,
    sessions: BTreeMap<ConnId, Session<I::State>>,
    out: VecDeque<Command>,
    timers: Timers,
    /// Which session waits for each pending effect.
    effects: BTreeMap<EffectId, ConnId>,
    next_effect: u64,
    /// Unflushed bytes of every secondary of every session, against `Config::secondary_memory`.
    secondary_held: u64,
    open_clients: usize,
    accept_paused: bool,
    drain: Drain,
    drain_timer: Option<Instant>,
    #[cfg(feature = "sim-mutants")]
    mutant: Option<crate::mutants::Mutant>,
}

impl<I: Interceptor> std::fmt::Debug for Engine<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.sessions.len())
            .field("open_clients", &self.open_clients)
            .field("timers", &self.timers.len())
            .field("queued_commands", &self.out.len())
            .field("drain", &self.drain)
            .finish()
    }
}

impl Engine<Passthrough> {
    /// An engine that forwards every byte unchanged (relay, duplex).
    pub fn new(cfg: Config) -> Result<Self, ConfigError> {
        Engine::with_interceptor(cfg, Passthrough)
    }
}

impl<I: Interceptor> Engine<I> {
    /// An engine that runs `hooks` on the traffic.
    pub fn with_interceptor(cfg: Config, hooks: I) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Engine {
            cfg,
            hooks,
            sessions: BTreeMap::new(),
            out: VecDeque::new(),
            timers: Timers::default(),
            effects: BTreeMap::new(),
            next_effect: 1,
            secondary_held: 0,
            open_clients: 0,
            accept_paused: false,
            drain: Drain::Running,
            drain_timer: None,
            #[cfg(feature = "sim-mutants")]
            mutant: None,
        })
    }

    /// Switches on a deliberate bug (simulator self-test only).
    #[cfg(feature = "sim-mutants")]
    pub fn set_mutant(&mut self, mutant: Option<crate::mutants::Mutant>) {
        self.mutant = mutant;
    }

    // ---- getters ------------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn interceptor(&self) -> &I {
        &self.hooks
    }

    /// Sessions not yet finished (including ones whose client is gone but a secondary lingers).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Client connections open.
    pub fn open_clients(&self) -> usize {
        self.open_clients
    }

    /// Timers scheduled.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Whether `sock` is a socket the engine considers open (or connecting).
    pub fn knows(&self, sock: SockId) -> bool {
        self.sessions
            .get(&sock.conn)
            .is_some_and(|s| s.knows(sock.peer))
    }

    /// The role of backend socket `sock`, while its session lives (`None` for a client socket).
    pub fn role(&self, sock: SockId) -> Option<crate::report::Role> {
        match sock.peer {
            Peer::Client => None,
            Peer::Backend(b) => self.sessions.get(&sock.conn)?.role(b),
        }
    }

    /// Where the driver may move bytes read from `sock` without handing them to the engine
    /// (`splice(2)` in the io driver), reporting them with `Event::Spliced` instead of
    /// `Event::Read`: the one socket those bytes would reach unchanged, or `None`.
    ///
    /// Granted only when handing the bytes over could not make a difference: the session has one
    /// backend, its primary, relayed both ways past every hook (relay, not duplex), no analysis
    /// (no report, so no digest), nothing held or behind an effect, the source not at EOF, and the
    /// destination open, not shut down and with nothing unflushed (so spliced bytes cannot
    /// overtake bytes the engine handed over). A grant holds until the next `handle`: ask before
    /// each splice. Backpressure is the driver's: the pipe fills and the source is not read.
    pub fn splice_route(&self, sock: SockId) -> Option<SockId> {
        let to = self.sessions.get(&sock.conn)?.splice_route(sock.peer)?;
        Some(SockId {
            conn: sock.conn,
            peer: to,
        })
    }

    /// Unflushed bytes per open socket, in `SockId` order (for invariant checks and metrics).
    pub fn unflushed(&self) -> impl Iterator<Item = (SockId, u64)> + '_ {
        self.sessions.values().flat_map(Session::unflushed)
    }

    /// Bytes handed to the driver for secondaries (or waiting for their connect) and not yet
    /// flushed, over every session: the sum of [`Engine::unflushed`] over secondary sockets,
    /// never above [`Config::secondary_memory`] after `handle` returns.
    pub fn secondary_held(&self) -> u64 {
        self.secondary_held
    }

    /// The primary's response bytes kept for secondaries' comparisons, over every session
    /// (shared `Bytes`: memory the reads already took, kept alive). At most
    /// [`Config::compare_window`] per session, and only while a secondary may still send bytes
    /// to compare with them.
    pub fn compare_held(&self) -> u64 {
        self.sessions.values().map(Session::compare_held).sum()
    }

    /// Nothing is held: no session, no timer, no queued command. True at quiescence.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.timers.len() == 0 && self.out.is_empty()
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next command for the driver. Drain to `None` after every `handle`.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// The earliest deadline. When it passes, the driver calls `handle(now, Event::Timeout)`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- input --------------------------------------------------------------------------

    /// Feeds one event observed at `now`. `now` must not go backwards between calls.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Accepted { conn, client } => self.accept(now, conn, client),
            Event::Connected { sock } => self.route(now, sock, |s, hooks, ctx| {
                if let Peer::Backend(b) = sock.peer {
                    s.on_connected(b, hooks, ctx)
                }
            }),
            Event::ConnectFailed { sock, reason } => self.route(now, sock, |s, hooks, ctx| {
                if let Peer::Backend(b) = sock.peer {
                    s.on_connect_failed(b, reason, true, hooks, ctx)
                }
            }),
            Event::Read { sock, data } => {
                if data.is_empty() {
                    return;
                }
                self.route(now, sock, |s, hooks, ctx| {
                    s.on_read(sock.peer, data, hooks, ctx)
                });
            }
            Event::ReadClosed { sock } => self.route(now, sock, |s, hooks, ctx| {
                s.on_read_closed(sock.peer, hooks, ctx)
            }),
            Event::Flushed { sock, bytes } => {
                self.route(now, sock, |s, _, ctx| s.on_flushed(sock.peer, bytes, ctx))
            }
            Event::Failed { sock, reason } => self.route(now, sock, |s, hooks, ctx| {
                s.on_failed(sock.peer, reason, hooks, ctx)
            }),
            Event::Spliced { sock, bytes } => self.route(now, sock, |s, _, ctx| {
                s.on_spliced(sock.peer, bytes, ctx);
            }),
            Event::Timeout => self.expire(now),
            Event::Drain => self.start_drain(now),
            Event::EffectDone { id, result } => {
                let Some(&conn) = self.effects.get(&id) else {
                    return; // timed out already, or its session is gone
                };
                self.route(now, SockId::client(conn), |s, hooks, ctx| {
                    s.on_effect(id, result, hooks, ctx)
                });
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn ctx(&mut self, now: Instant) -> (Ctx<'_>, &mut BTreeMap<ConnId, Session<I::State>>, &mut I) {
        (
            Ctx {
                now,
                cfg: &self.cfg,
                out: &mut self.out,
                timers: &mut self.timers,
                effects: &mut self.effects,
                next_effect: &mut self.next_effect,
                secondary_held: &mut self.secondary_held,
                #[cfg(feature = "sim-mutants")]
                mutant: self.mutant,
            },
            &mut self.sessions,
            &mut self.hooks,
        )
    }

    fn accept(&mut self, now: Instant, conn: ConnId, client: String) {
        if self.sessions.contains_key(&conn) {
            return; // a driver bug; never let it corrupt a live session
        }
        let max = self.cfg.max_connections;
        #[cfg(feature = "sim-mutants")]
        let max =
            max + usize::from(self.mutant == Some(crate::mutants::Mutant::AcceptGateOffByOne));
        if self.drain != Drain::Running || self.open_clients >= max {
            self.out.push_back(Command::Close {
                sock: SockId::client(conn),
            });
            return;
        }
        let (mut ctx, sessions, hooks) = self.ctx(now);
        let mut session = Session::open(conn, client, hooks, &mut ctx);
        session.settle(&mut ctx);
        let (client_closed, finished) = (!session.client_open(), session.is_finished());
        sessions.insert(conn, session);
        self.open_clients += 1;
        if self.open_clients >= max && !self.accept_paused {
            self.accept_paused = true;
            self.out.push_back(Command::PauseAccept);
        }
        self.after(conn, client_closed, finished);
    }

    /// Runs `f` on the session owning `sock`, then settles it. Events for unknown sockets are
    /// ignored: a driver may report on a socket the engine closed in the same instant.
    fn route(
        &mut self,
        now: Instant,
        sock: SockId,
        f: impl FnOnce(&mut Session<I::State>, &mut I, &mut Ctx),
    ) {
        let (mut ctx, sessions, hooks) = self.ctx(now);
        let Some(session) = sessions.get_mut(&sock.conn) else {
            return;
        };
        let client_was_open = session.client_open();
        f(session, hooks, &mut ctx);
        session.settle(&mut ctx);
        let client_closed = client_was_open && !session.client_open();
        let finished = session.is_finished();
        self.after(sock.conn, client_closed, finished);
    }

    /// Bookkeeping after a session changed (found once, by the caller, who says what changed):
    /// the client count, the accept gate, and dropping a finished session with its report.
    fn after(&mut self, conn: ConnId, client_closed: bool, finished: bool) {
        if client_closed {
            self.open_clients -= 1;
            if self.accept_paused
                && self.drain == Drain::Running
                && self.open_clients < self.cfg.max_connections
            {
                self.accept_paused = false;
                self.out.push_back(Command::ResumeAccept);
            }
        }
        if finished {
            let Some(mut session) = self.sessions.remove(&conn) else {
                return;
            };
            session.cancel_timers(&mut self.timers, &mut self.effects);
            // Every leg is closed, so it holds nothing; only a deliberate bug leaves bytes here.
            let left = session.secondary_unflushed();
            self.secondary_held = self.secondary_held.saturating_sub(left);
            #[allow(unused_mut)]
            let mut report = session.report();
            #[cfg(feature = "sim-mutants")]
            if self.mutant == Some(crate::mutants::Mutant::EqualLengthsMatch) {
                let primary = report.backends.first().map(|b| b.bytes_received);
                for b in report
                    .backends
                    .iter_mut()
                    .filter(|b| b.role == crate::report::Role::Secondary)
                {
                    if Some(b.bytes_received) == primary {
                        b.matches_primary = Some(true);
                        b.first_difference = None;
                    }
                }
            }
            if let Some(state) = session.take_state() {
                let hooks = &mut self.hooks;
                // A panic here only loses the interceptor's farewell; the session is over.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    hooks.on_end(state, &report)
                }));
            }
            if self.cfg.reports {
                self.out.push_back(Command::Report(Box::new(report)));
            }
            self.check_drained();
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Drain => {
                    self.drain_timer = None;
                    let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
                    for conn in conns {
                        self.route(now, SockId::client(conn), |s, _, ctx| {
                            s.close_all(Outcome::DrainTimeout, ctx)
                        });
                    }
                }
                TimerKey::Idle(conn)
                | TimerKey::Connect(conn, _)
                | TimerKey::Deadline(conn, _)
                | TimerKey::Effect(conn, _) => {
                    self.route(now, SockId::client(conn), |s, hooks, ctx| {
                        s.on_timer(key, hooks, ctx)
                    });
                }
            }
        }
    }

    fn start_drain(&mut self, now: Instant) {
        match self.drain {
            Drain::Running => {}
            Drain::Draining => {
                // A second request: the drain deadline is now.
                self.timers
                    .set(TimerKey::Drain, &mut self.drain_timer, Some(now));
                self.expire(now);
                return;
            }
            Drain::Done => return,
        }
        self.drain = Drain::Draining;
        if !self.accept_paused {
            self.accept_paused = true;
            self.out.push_back(Command::PauseAccept);
        }
        #[allow(unused_mut)]
        let mut at = now + self.cfg.drain_timeout;
        #[cfg(feature = "sim-mutants")]
        if self.mutant == Some(crate::mutants::Mutant::DrainCutsAtOnce) {
            at = now;
        }
        self.timers
            .set(TimerKey::Drain, &mut self.drain_timer, Some(at));
        self.check_drained();
    }

    fn check_drained(&mut self) {
        if self.drain == Drain::Draining && self.sessions.is_empty() {
            self.drain = Drain::Done;
            self.timers
                .set(TimerKey::Drain, &mut self.drain_timer, None);
            self.out.push_back(Command::Drained);
        }
    }
}
