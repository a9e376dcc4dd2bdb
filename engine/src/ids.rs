//! Identifiers. All are plain newtypes assigned by the driver (or, for backends, by the
//! configuration), so captures can record them and replays reproduce them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One accepted client connection, and the session built around it.
///
/// The driver picks a fresh value for every `Event::Accepted` and never reuses one while the
/// engine may still name it (a driver that counts up from 1 is always right).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// One backend connection of a session, numbered by the engine in the order the session opened
/// them (`0` first). relay and duplex open the primary first, so `0` is the primary there and
/// `1..` the secondaries; an interceptor may open backends in any order, at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendId(pub u16);

impl BackendId {
    /// The backend whose response goes back to the client.
    pub const PRIMARY: BackendId = BackendId(0);

    pub fn is_primary(self) -> bool {
        self == Self::PRIMARY
    }
}

/// An entry of the driver's upstream table: the addresses a session may connect to, fixed when
/// the proxy starts (flags or config), so no interceptor can make fanout an open proxy. relay and
/// duplex use entry `i` for backend `i`; an interceptor picks any entry for any backend it opens.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UpstreamId(pub u16);

/// Which end of a session a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// The accepted client connection.
    Client,
    /// The session's connection to one backend.
    Backend(BackendId),
}

/// One socket: a session and which of its ends. Every event and command names sockets this way;
/// the driver keeps the map from `SockId` to its real socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SockId {
    pub conn: ConnId,
    pub peer: Peer,
}

impl SockId {
    pub const fn client(conn: ConnId) -> Self {
        SockId {
            conn,
            peer: Peer::Client,
        }
    }

    pub const fn backend(conn: ConnId, backend: BackendId) -> Self {
        SockId {
            conn,
            peer: Peer::Backend(backend),
        }
    }
}

impl fmt::Display for SockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Peer::Client => write!(f, "conn {} client", self.conn.0),
            Peer::Backend(b) => write!(f, "conn {} backend {}", self.conn.0, b.0),
        }
    }
}
