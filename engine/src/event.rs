//! Inputs to the engine.

use crate::effect::{EffectId, EffectResult};
use crate::ids::{ConnId, SockId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Something that happened outside the engine. The driver passes each one to
/// [`Engine::handle`](crate::Engine::handle) with the time it observed it.
///
/// Variants are only ever appended (captures store the variant index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A client connection was accepted. `client` is its address as the driver prints it.
    Accepted { conn: ConnId, client: String },
    /// A backend connection asked for with `Command::Connect` is established.
    Connected { sock: SockId },
    /// A backend connection asked for with `Command::Connect` could not be established.
    ConnectFailed { sock: SockId, reason: Failure },
    /// Bytes arrived on a socket. Never empty.
    Read { sock: SockId, data: Bytes },
    /// The peer closed its write side (EOF): no more `Read` for this socket.
    ReadClosed { sock: SockId },
    /// `bytes` more of the data given in `Command::Write` reached the kernel.
    Flushed { sock: SockId, bytes: u64 },
    /// An established socket failed (reset, broken pipe, ...). The driver has dropped it.
    Failed { sock: SockId, reason: Failure },
    /// A deadline returned by `poll_timeout` has passed.
    Timeout,
    /// Stop accepting; let open sessions finish until the drain deadline, then close them. A
    /// second `Drain` during the drain brings that deadline to now: what is open is closed at
    /// once, as the deadline would close it.
    Drain,
    /// The effect asked for with `Command::Effect` finished (or the executor gave up on it).
    /// A result for an effect the engine no longer waits for (timed out, session gone) is ignored.
    EffectDone { id: EffectId, result: EffectResult },
    /// The driver moved `bytes` read from `sock` straight to the one socket
    /// [`Engine::splice_route`](crate::Engine::splice_route) named for it, without handing them
    /// to the engine (`splice(2)` through a pipe). Only under that grant, asked for just before;
    /// the bytes have reached the destination's kernel buffer. The engine counts them as moved
    /// (activity for the idle timeout, the report's counters) and routes nothing.
    Spliced { sock: SockId, bytes: u64 },
}

/// Why a socket failed. Variants are only ever appended (captures store the index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The peer refused the connection.
    Refused,
    /// The peer reset the connection, or a write hit a broken pipe.
    Reset,
    /// The operating system timed the connection out.
    TimedOut,
    /// The address could not be reached or resolved.
    Unreachable,
    /// Anything else.
    Other,
    /// The driver could not open a socket: it (or the system) ran out of file descriptors or
    /// socket memory (EMFILE, ENFILE, ENOBUFS, ENOMEM). Says nothing about the peer.
    NoDescriptors,
}
