//! The oracle of relay and duplex (the engine's `Passthrough`) for the model [`Driver`]: a
//! backend receives exactly the client's bytes, the client exactly the primary's, each a keyed
//! [`pattern`] so any loss, duplication or reordering shows.
//!
//! - **Connect**: backend `i` to upstream `i`, only the configured ones.
//! - **Writes**: byte for byte the source stream, in order, never ahead of what was read.
//! - **FIN**: only once the whole source stream went out.
//! - **Orderly close**: the engine closes a socket that has not finished both ways only when a
//!   deadline, a failure or a refused accept forces it, or a client read pushes a secondary past
//!   its budget. A response's tail is never dropped on the floor.
//! - **Limits**: a secondary never holds more than its budget; the primary and client never more
//!   than the high-water mark plus one read. The client is paused by the primary's queue and vice
//!   versa; a secondary paces nobody.
//! - **Reports**: every configured backend, in order; a secondary matching the primary has its
//!   length and, for backend 2 (whose response differs from offset 100 on), at most 100 bytes.
//!
//! [`Driver`]: crate::driver::Driver

use crate::driver::{Forcing, Model, Sock, Socks, MAX_READ};
use fanout_engine::{
    BackendId, Config, ConnId, Passthrough, Peer, SessionReport, SockId, UpstreamId,
};

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

/// The relay/duplex model. See the [module documentation](self).
#[derive(Debug)]
pub struct Relay {
    cfg: Config,
    /// Sessions the engine took (asked to connect their primary).
    served: Vec<ConnId>,
}

impl Relay {
    pub fn new(cfg: Config) -> Self {
        Relay {
            cfg,
            served: Vec::new(),
        }
    }
}

/// Bytes read from `sock`'s peer so far.
fn read(socks: &Socks, sock: SockId) -> u64 {
    socks.get(&sock).map_or(0, |m| m.read)
}

impl Model for Relay {
    type Hooks = Passthrough;

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

    fn close(&mut self, _: &Socks, sock: SockId, m: &Sock, forcing: Forcing) {
        let secondary = matches!(sock.peer, Peer::Backend(b) if !b.is_primary());
        let forced = match forcing {
            Forcing::Any => true,
            Forcing::Secondaries => secondary,
            Forcing::None => false,
        };
        assert!(
            forced || m.finished(),
            "{sock} closed before it finished both ways, with nothing forcing it: {m:?}"
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

    fn served(&self) -> Vec<ConnId> {
        self.served.clone()
    }
}
