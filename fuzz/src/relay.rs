//! The oracle of relay and duplex (the engine's `Passthrough`) for the model [`Driver`]: a
//! backend receives exactly the client's bytes, the client exactly the primary's, each a keyed
//! [`pattern`] so any loss, duplication or reordering shows.
//!
//! - **Connect**: backend `i` to upstream `i`, only the configured ones.
//! - **Writes**: byte for byte the source stream, in order, never ahead of what was read.
//! - **FIN**: only once the whole source stream went out; a backend's as soon as its client's
//!   EOF came and its own queue is empty.
//! - **Orderly close**: the engine closes a socket that has not finished both ways only when a
//!   deadline, a failure or a refused accept forces it, or a client read pushes a secondary past
//!   its budget or all secondaries together past `secondary_memory`. A response's tail is never
//!   dropped on the floor.
//! - **Limits**: a secondary never holds more than its budget, and all of them together (the
//!   driver's own count: queued on an open secondary, every client byte read for a connecting
//!   one) never more than `secondary_memory`, which is also what the engine says it holds; the
//!   primary and client never more than the high-water mark plus one read. The client is paused
//!   by the primary's queue and vice versa; a secondary paces nobody.
//! - **Reports**: every configured backend, in order; a secondary matching the primary has its
//!   length and, for backend 2 (whose response differs from offset 100 on), at most 100 bytes.
//!   Each outcome fits what closed the socket: `detached-budget` only for a secondary that was
//!   over its budget when a client read closed it, `detached-memory` only for one that was not
//!   but took the secondaries' total past the cap; `no-descriptors` exactly for a connect that
//!   failed so; `client-gone` exactly for a primary closed because its client failed;
//!   `idle-timeout`, `drain-timeout`, `detached-deadline` and `connect-timeout` only for a socket
//!   closed by a deadline (`drain-timeout` only after a drain, also by a second drain request,
//!   which ends the drain at once); never `closed-early`, which
//!   relay and duplex have no cause for.
//!
//! [`Driver`]: crate::driver::Driver

use crate::driver::{Forcing, Model, Phase, Sock, Socks, MAX_READ};
use fanout_engine::{
    BackendId, Config, ConnId, Engine, Event, Failure, Instant, Outcome, Passthrough, Peer, Role,
    SessionReport, SockId, UpstreamId,
};
use std::collections::BTreeMap;

/// The byte at `offset` of the stream `sock`'s peer sends. Backends of a session send the same
/// response except backend 2, which differs from offset 100 on, so duplex comparisons see both
/// matches and differences.
pub fn pattern(sock: SockId, offset: u64) -> u8 {
    let (stream, salt) = match sock.peer {
        Peer::Client => (sock.conn.0 * 2, 0),
        Peer::Backend(b) => (
            sock.conn.0 * 2 + 1,
            if b.0 == 2 && offset >= 100 { 0x5a } else { 0 },
        ),
    };
    let x = (stream << 40 ^ offset).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) ^ salt
}

/// Which stream the engine writes to `sock`: the client's to a backend, the primary's to the
/// client.
fn source(sock: SockId) -> SockId {
    match sock.peer {
        Peer::Client => SockId::backend(sock.conn, BackendId::PRIMARY),
        Peer::Backend(_) => SockId::client(sock.conn),
    }
}

/// What the event being handled was, as far as the outcomes of the sockets it closes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A client read (and with it, writes to every secondary).
    ClientRead,
    /// A deadline passed.
    Timeout,
    /// A drain was requested (a second request ends the drain at once).
    Drain,
    /// The client failed.
    ClientFailed,
    /// Anything else.
    Other,
}

/// Why the engine (or the driver) closed a socket, for the report's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Closed by the engine while it handled `cause`; for a secondary closed on a client read,
    /// whether it was then over its own budget and the secondaries' total over the cap.
    By {
        cause: Cause,
        over_budget: bool,
        over_cap: bool,
    },
    /// Its connect failed for `Failure`.
    ConnectFailed(Failure),
    /// It failed itself (the driver dropped it).
    Failed,
}

/// The relay/duplex model. See the [module documentation](self).
#[derive(Debug)]
pub struct Relay {
    cfg: Config,
    /// Sessions the engine took (asked to connect their primary).
    served: Vec<ConnId>,
    /// The event being handled.
    cause: Cause,
    drain_requested: bool,
    closed: BTreeMap<SockId, Closed>,
}

impl Relay {
    pub fn new(cfg: Config) -> Self {
        Relay {
            cfg,
            served: Vec::new(),
            cause: Cause::Other,
            drain_requested: false,
            closed: BTreeMap::new(),
        }
    }

    /// Bytes the engine holds for `sock`, a secondary, by the driver's count: what is queued on
    /// it once open; before that, every byte its client sent (relay and duplex connect every
    /// backend at accept, and write every client byte to each until its FIN).
    fn secondary_held(socks: &Socks, sock: SockId, m: &Sock) -> u64 {
        match m.phase {
            Phase::Open => m.queued,
            Phase::Connecting => read(socks, SockId::client(sock.conn)),
            Phase::Closed => 0,
        }
    }

    /// Bytes held for every secondary of every session, by the driver's count.
    fn secondaries_held(socks: &Socks) -> u64 {
        socks
            .iter()
            .filter(|(s, _)| is_secondary(**s))
            .map(|(&s, m)| Self::secondary_held(socks, s, m))
            .sum()
    }
}

fn is_secondary(sock: SockId) -> bool {
    matches!(sock.peer, Peer::Backend(b) if !b.is_primary())
}

/// Bytes read from `sock`'s peer so far.
fn read(socks: &Socks, sock: SockId) -> u64 {
    socks.get(&sock).map_or(0, |m| m.read)
}

impl Model for Relay {
    type Hooks = Passthrough;

    fn handled(&mut self, _: Instant, event: &Event, _: &Engine<Passthrough>, _: &Socks) {
        self.cause = match event {
            Event::Read { sock, .. } if sock.peer == Peer::Client => Cause::ClientRead,
            Event::Timeout => Cause::Timeout,
            Event::Drain => Cause::Drain,
            Event::Failed { sock, .. } if sock.peer == Peer::Client => Cause::ClientFailed,
            _ => Cause::Other,
        };
        match event {
            Event::Drain => self.drain_requested = true,
            Event::ConnectFailed { sock, reason } => {
                self.closed.insert(*sock, Closed::ConnectFailed(*reason));
            }
            Event::Failed { sock, .. } => {
                self.closed.entry(*sock).or_insert(Closed::Failed);
            }
            _ => {}
        }
    }

    fn connect(&mut self, _: &Socks, sock: SockId, upstream: UpstreamId) {
        let Peer::Backend(b) = sock.peer else {
            unreachable!("the driver checked")
        };
        assert_eq!(
            upstream.0, b.0,
            "relay/duplex connect backend i to upstream i"
        );
        assert!(
            b.0 <= self.cfg.secondaries,
            "connect to unconfigured backend {sock}"
        );
        if b.is_primary() {
            self.served.push(sock.conn);
        }
    }

    fn write(&mut self, socks: &Socks, sock: SockId, at: u64, data: &[u8]) {
        let src = source(sock);
        let from = read(socks, src);
        let written = at + data.len() as u64;
        assert!(
            written <= from,
            "{sock} was written {written} bytes, its source sent only {from}"
        );
        if let Some(i) = (0..data.len()).find(|&i| data[i] != pattern(src, at + i as u64)) {
            panic!(
                "{sock} got the wrong byte at offset {}: not what {src} sent",
                at + i as u64
            );
        }
    }

    fn shutdown(&mut self, socks: &Socks, sock: SockId) {
        let from = read(socks, source(sock));
        let written = socks[&sock].written;
        assert_eq!(
            written, from,
            "FIN to {sock} before all of its source's bytes"
        );
    }

    fn close(&mut self, socks: &Socks, sock: SockId, m: &Sock, forcing: Forcing) {
        let secondary = is_secondary(sock);
        let forced = match forcing {
            Forcing::Any => true,
            Forcing::Secondaries => secondary,
            Forcing::None => false,
        };
        assert!(
            forced || m.finished(),
            "{sock} closed before it finished both ways, with nothing forcing it: {m:?}"
        );
        // The write that closed it is already counted (the engine writes, then detaches); for a
        // connecting secondary later in the session's order, this read is counted before the
        // engine wrote it, so `over_cap` may only err towards allowing.
        let (mut over_budget, mut over_cap) = (false, false);
        if secondary && self.cause == Cause::ClientRead {
            over_budget = Self::secondary_held(socks, sock, m) > self.cfg.secondary_budget;
            over_cap = Self::secondaries_held(socks) > self.cfg.secondary_memory;
            assert!(
                m.finished() || over_budget || over_cap,
                "{sock} detached on a client read within its budget and the secondaries' cap: {m:?}"
            );
        }
        self.closed.insert(
            sock,
            Closed::By {
                cause: self.cause,
                over_budget,
                over_cap,
            },
        );
    }

    fn report(&mut self, socks: &Socks, report: &SessionReport) {
        let conn = report.conn;
        assert!(self.served.contains(&conn), "report for unserved {conn:?}");
        let secondaries = usize::from(self.cfg.secondaries);
        assert_eq!(report.backends.len(), 1 + secondaries, "{conn:?}");
        let mut primary_received = None;
        for (i, b) in report.backends.iter().enumerate() {
            assert_eq!(
                usize::from(b.backend.0),
                i,
                "{conn:?}: backends out of order"
            );
            let sock = SockId::backend(conn, b.backend);
            assert!(socks.contains_key(&sock), "every backend was connected");
            self.check_outcome(sock, b.role, b.outcome);
            if i == 0 {
                assert_eq!(b.matches_primary, None);
                primary_received = Some(b.bytes_received);
            } else if b.matches_primary == Some(true) {
                assert_eq!(
                    Some(b.bytes_received),
                    primary_received,
                    "{sock} matches the primary with another length"
                );
                assert!(
                    b.backend.0 != 2 || b.bytes_received <= 100,
                    "{sock} matches the primary though its bytes differ"
                );
            }
        }
    }

    fn check_limit(&self, sock: SockId, unflushed: u64) {
        let limit = match sock.peer {
            Peer::Backend(b) if !b.is_primary() => self.cfg.secondary_budget,
            _ => self.cfg.high_water + MAX_READ,
        };
        assert!(
            unflushed <= limit,
            "{sock} holds {unflushed} unflushed bytes, limit {limit}"
        );
    }

    fn pause_target(&self, sock: SockId, backlog: &dyn Fn(SockId) -> u64) -> Option<u64> {
        // The client is paused by the primary's queue and vice versa.
        let is_reader =
            matches!(sock.peer, Peer::Client) || sock.peer == Peer::Backend(BackendId::PRIMARY);
        is_reader.then(|| backlog(source(sock)))
    }

    fn check(&mut self, engine: &Engine<Passthrough>, socks: &Socks, _: Instant) {
        // The client's EOF goes on to every open backend as soon as its queue is empty: never
        // held for another backend.
        for (&sock, m) in socks {
            let client_ended = socks
                .get(&SockId::client(sock.conn))
                .is_some_and(|c| c.read_closed);
            assert!(
                sock.peer == Peer::Client
                    || !client_ended
                    || !m.is_open()
                    || m.queued > 0
                    || m.shut,
                "{sock}: its client's EOF came and its queue is empty, but no FIN went out"
            );
        }
        let held = Self::secondaries_held(socks);
        assert!(
            held <= self.cfg.secondary_memory,
            "secondaries hold {held} bytes together, past the cap of {}",
            self.cfg.secondary_memory
        );
        assert_eq!(
            engine.secondary_held(),
            held,
            "the engine and the driver disagree on the bytes held for secondaries"
        );
    }

    fn served(&self) -> Vec<ConnId> {
        self.served.clone()
    }
}

impl Relay {
    /// `outcome` fits what closed `sock` (see the module documentation).
    fn check_outcome(&self, sock: SockId, role: Role, outcome: Outcome) {
        let closed = self.closed.get(&sock).copied();
        let by = |c: Cause| matches!(closed, Some(Closed::By { cause, .. }) if cause == c);
        let fits = match outcome {
            Outcome::NoDescriptors => closed == Some(Closed::ConnectFailed(Failure::NoDescriptors)),
            Outcome::ClientGone => role == Role::Primary && by(Cause::ClientFailed),
            Outcome::IdleTimeout | Outcome::DetachedDeadline => by(Cause::Timeout),
            Outcome::ConnectTimeout => {
                by(Cause::Timeout) || closed == Some(Closed::ConnectFailed(Failure::TimedOut))
            }
            Outcome::DrainTimeout => {
                (by(Cause::Timeout) || by(Cause::Drain)) && self.drain_requested
            }
            Outcome::DetachedBudget => matches!(
                closed,
                Some(Closed::By {
                    cause: Cause::ClientRead,
                    over_budget: true,
                    ..
                })
            ),
            Outcome::DetachedMemory => matches!(
                closed,
                Some(Closed::By {
                    cause: Cause::ClientRead,
                    over_budget: false,
                    over_cap: true
                })
            ),
            Outcome::ClosedEarly | Outcome::InterceptorError => false,
            Outcome::Ok | Outcome::Refused | Outcome::Reset => true,
        };
        assert!(
            fits,
            "{sock} ({role:?}) reported {outcome:?}, closed by {closed:?}"
        );
        // And the other way round: these causes have their own words.
        match closed {
            Some(Closed::ConnectFailed(Failure::NoDescriptors)) => {
                assert_eq!(outcome, Outcome::NoDescriptors, "{sock}: outcome");
            }
            Some(Closed::By {
                cause: Cause::ClientFailed,
                ..
            }) if role == Role::Primary => {
                assert_eq!(outcome, Outcome::ClientGone, "{sock}: outcome");
            }
            _ => {}
        }
    }
}
