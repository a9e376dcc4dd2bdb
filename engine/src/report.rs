//! The record of a finished session: what duplex mode is for.

use crate::ids::{BackendId, ConnId};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One finished session. Emitted as `Command::Report` when the last of its sockets closes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    pub conn: ConnId,
    /// The client's address, as the driver gave it in `Event::Accepted`.
    pub client: String,
    /// When the client was accepted.
    pub started: Instant,
    /// Every backend of the session, in the order it was opened (relay and duplex: primary
    /// first).
    pub backends: Vec<BackendReport>,
    /// Why the interceptor's session was closed, when it panicked or misused the API. (Left out
    /// of the encoding when absent, so output digests of captures made before interceptors hold.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interceptor_error: Option<String>,
}

/// Whether a backend is the one the client hears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Secondary,
}

/// How a backend's leg of a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It answered and closed (or the session ended normally with it still healthy).
    Ok,
    /// The connection was refused or could not be made.
    Refused,
    /// The connection was reset or failed after it was established.
    Reset,
    /// The connection was not established within the connect timeout.
    ConnectTimeout,
    /// A secondary's unflushed bytes passed its budget.
    DetachedBudget,
    /// A secondary was still going when its deadline passed.
    DetachedDeadline,
    /// The session ended before this leg finished, for none of the reasons below (the
    /// interceptor closed it, or the primary failed).
    ClosedEarly,
    /// The interceptor panicked or broke the API's rules; its session was closed.
    InterceptorError,
    // Appended (captures hash reports by variant index): the words below were `closed-early` or
    // `refused` before.
    /// A write to this secondary took the bytes held for all secondaries of the engine past
    /// `Config::secondary_memory`.
    DetachedMemory,
    /// No bytes moved either way for `Config::idle_timeout`.
    IdleTimeout,
    /// The drain after `Event::Drain` ran out of time (or a second `Event::Drain` ended it)
    /// with this leg still going.
    DrainTimeout,
    /// The client failed (reset, broken pipe) before the primary finished answering it.
    ClientGone,
    /// The socket could not be opened: the driver ran out of descriptors
    /// (`Failure::NoDescriptors`).
    NoDescriptors,
}

impl Outcome {
    /// The word the report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::ConnectTimeout => "connect-timeout",
            Outcome::DetachedBudget => "detached-budget",
            Outcome::DetachedDeadline => "detached-deadline",
            Outcome::ClosedEarly => "closed-early",
            Outcome::InterceptorError => "interceptor-error",
            Outcome::DetachedMemory => "detached-memory",
            Outcome::IdleTimeout => "idle-timeout",
            Outcome::DrainTimeout => "drain-timeout",
            Outcome::ClientGone => "client-gone",
            Outcome::NoDescriptors => "no-descriptors",
        }
    }
}

/// One backend's leg of a session. Times are measured from the session's first client byte
/// (connect time from the connect request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendReport {
    pub backend: BackendId,
    /// The driver's upstream it connected to (relay and duplex: the same number as `backend`).
    /// Left out of the encoding, so output digests of captures made before interceptors hold.
    #[serde(skip)]
    pub upstream: crate::ids::UpstreamId,
    pub role: Role,
    pub connect_time: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub last_byte: Option<Duration>,
    /// Bytes flushed to the backend.
    pub bytes_sent: u64,
    /// Bytes read from the backend.
    pub bytes_received: u64,
    pub outcome: Outcome,
    /// XXH3-64 digest of the whole response.
    pub digest: u64,
    /// For a secondary: whether its response equals the primary's. `None` for the primary.
    pub matches_primary: Option<bool>,
    /// For a secondary that differs: the first offset where it does, when it lies within the
    /// compare window (or at the end of the shorter response).
    pub first_difference: Option<u64>,
}
