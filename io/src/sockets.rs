//! The driver's table of open sockets: mio `Token` <-> slot <-> engine `SockId`.
//!
//! A token carries the slot index in its low 32 bits and the slot's generation in the high 32
//! bits, so an event still queued for a socket that was closed (and whose slot was reused) in the
//! same poll round finds nothing instead of the wrong socket.

use crate::splice::Pipe;
use crate::stream::Stream;
use crate::writeq::WriteQueue;
use fanout_engine::SockId;
use mio::Token;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One socket and the driver's view of it.
#[derive(Debug)]
pub(crate) struct Sock {
    pub id: SockId,
    pub stream: Stream,
    /// A backend connect is in progress.
    pub connecting: bool,
    /// The socket may hold unread data (edge-triggered: set by a readiness event, cleared by a
    /// read that came back short or with `WouldBlock`).
    pub readable: bool,
    /// The peer's FIN (or a hang-up) was signalled: read until EOF, short reads included,
    /// since no further edge will come.
    pub peer_closed: bool,
    /// The engine said `PauseRead`.
    pub read_paused: bool,
    /// EOF was read; nothing more will be.
    pub read_closed: bool,
    /// The last write hit `WouldBlock`; wait for a writable event.
    pub write_blocked: bool,
    /// Listed in the driver's ready list (to read again later).
    pub queued: bool,
    /// Listed in the driver's dirty list (to flush after the current command batch).
    pub dirty: bool,
    pub queue: WriteQueue,
    /// The engine said `Shutdown`; carried out when this drain's writes are flushed.
    pub shut_pending: bool,
    /// `--splice`: this socket's bytes go by `splice(2)` whenever the engine grants it.
    pub splicing: bool,
    /// The pipe carrying this socket's spliced bytes (made at its first splice).
    pub pipe: Option<Pipe>,
    /// The socket whose pipe feeds this one and holds bytes it has not taken: they go before
    /// anything in `queue`.
    pub fed_by: Option<Token>,
}

impl Sock {
    pub(crate) fn new(id: SockId, stream: Stream, connecting: bool) -> Self {
        Sock {
            id,
            stream,
            connecting,
            readable: false,
            peer_closed: false,
            read_paused: false,
            read_closed: false,
            write_blocked: false,
            queued: false,
            dirty: false,
            queue: WriteQueue::default(),
            shut_pending: false,
            splicing: false,
            pipe: None,
            fed_by: None,
        }
    }

    /// Carries out a `Shutdown` the engine asked for, once nothing written is left queued
    /// before it.
    pub(crate) fn shut_if_asked(&mut self) {
        if self.shut_pending && self.queue.is_empty() {
            self.shut_pending = false;
            if let Err(e) = self.stream.shutdown_write() {
                tracing::debug!("{}: shutdown: {e}", self.id);
            }
        }
    }

    /// Whether a read now could make progress.
    pub(crate) fn wants_read(&self) -> bool {
        self.readable && !self.read_paused && !self.read_closed && !self.connecting
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    sock: Option<Sock>,
}

/// Open sockets by token and by `SockId`.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_id: HashMap<SockId, Token, BuildHasherDefault<IdHasher>>,
}

/// A multiply-rotate hasher (FxHash's mixing) for `SockId`s. The keys are ids the driver hands
/// out itself, so there is no untrusted input to defend against and SipHash's cost buys nothing
/// on the per-command lookup.
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Tokens at the top of the range belong to the driver itself (listener, drain trigger); slot
/// indices never reach them.
const MAX_SLOTS: usize = u32::MAX as usize - 16;

fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

impl Sockets {
    /// Adds a socket; returns its token. A second socket with the same `SockId` replaces the
    /// first in the id map (the engine never does that).
    pub(crate) fn insert(&mut self, sock: Sock) -> Token {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                assert!(self.slots.len() < MAX_SLOTS, "socket table full");
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        let token = Token(((slot.generation as usize) << 32) | index);
        self.by_id.insert(sock.id, token);
        slot.sock = Some(sock);
        token
    }

    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut Sock> {
        let (index, generation) = split(token);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.sock.as_mut()
    }

    /// The token of the socket the engine calls `id`.
    pub(crate) fn token(&self, id: SockId) -> Option<Token> {
        self.by_id.get(&id).copied()
    }

    /// The socket the engine calls `id`, with its token.
    pub(crate) fn by_id(&mut self, id: SockId) -> Option<(Token, &mut Sock)> {
        let token = self.token(id)?;
        self.get_mut(token).map(|s| (token, s))
    }

    /// Removes a socket; dropping it closes the descriptor, which also takes it out of the
    /// epoll set (the driver never duplicates descriptors), so no `epoll_ctl` is needed.
    pub(crate) fn remove(&mut self, token: Token) -> Option<Sock> {
        let (index, generation) = split(token);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let sock = slot.sock.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        if self.by_id.get(&sock.id) == Some(&token) {
            self.by_id.remove(&sock.id);
        }
        Some(sock)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_engine::ConnId;

    fn sock(conn: u64) -> Sock {
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        Sock::new(SockId::client(ConnId(conn)), Stream::Unix(a), false)
    }

    #[test]
    fn a_stale_token_does_not_find_the_slots_next_socket() {
        let mut t = Sockets::default();
        let first = t.insert(sock(1));
        assert!(t.remove(first).is_some());
        let second = t.insert(sock(2));
        assert_ne!(first, second, "the reused slot has a new generation");
        assert!(t.get_mut(first).is_none());
        assert!(t.remove(first).is_none());
        assert_eq!(t.get_mut(second).unwrap().id.conn, ConnId(2));
        assert_eq!(t.token(SockId::client(ConnId(2))), Some(second));
        assert_eq!(t.token(SockId::client(ConnId(1))), None);
        assert_eq!(t.len(), 1);
    }
}
