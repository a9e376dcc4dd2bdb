//! A backend's leg of a session: its socket, its role and routes, and what the report needs.

use crate::compare::Comparison;
use crate::ids::{BackendId, ConnId, SockId, UpstreamId};
use crate::report::{Outcome, Role};
use crate::session::Ctx;
use crate::side::Side;
use crate::time::Instant;
use crate::timers::TimerKey;
use bytes::Bytes;

/// A backend's leg: its socket plus what the report needs.
#[derive(Debug)]
pub(crate) struct Leg {
    pub(crate) id: BackendId,
    pub(crate) upstream: UpstreamId,
    pub(crate) role: Role,
    pub(crate) relay_client: bool,
    pub(crate) relay_server: bool,
    pub(crate) side: Side,
    pub(crate) connect_timer: Option<Instant>,
    pub(crate) deadline_timer: Option<Instant>,
    pub(crate) connect_time: Option<std::time::Duration>,
    pub(crate) first_byte: Option<Instant>,
    pub(crate) last_byte: Option<Instant>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) outcome: Option<Outcome>,
    /// Secondaries only.
    pub(crate) comparison: Option<Comparison>,
}

impl Leg {
    pub(crate) fn sock(&self, conn: ConnId) -> SockId {
        SockId::backend(conn, self.id)
    }

    /// Counts `len` bytes read at `now` for the report. Returns false (and counts nothing) if the
    /// leg cannot be read: not open, or its peer already sent EOF.
    pub(crate) fn note_read(&mut self, len: usize, now: Instant) -> bool {
        if !self.side.is_open() || self.side.eof {
            return false;
        }
        self.received += len as u64;
        self.first_byte.get_or_insert(now);
        self.last_byte = Some(now);
        true
    }

    /// Ends the leg with `outcome` (the first outcome recorded wins). Returns the bytes that
    /// were waiting for its connect.
    pub(crate) fn end(
        &mut self,
        conn: ConnId,
        outcome: Outcome,
        driver_dropped: bool,
        ctx: &mut Ctx,
    ) -> Vec<Bytes> {
        self.outcome.get_or_insert(outcome);
        if let Some(c) = &mut self.comparison {
            c.secondary_ended();
        }
        if self.role == Role::Secondary && !self.side.is_closed() {
            ctx.release_secondary(self.side.unflushed);
        }
        let unsent = self.side.close(self.sock(conn), driver_dropped, ctx.out);
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
        unsent
    }
}
