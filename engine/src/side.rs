//! One socket as the engine sees it: connecting or open or closed, bytes handed over and not yet
//! flushed, our FIN, the peer's EOF, the read pause, and which destinations its bytes fed.

use crate::command::Command;
use crate::config::Config;
use crate::ids::SockId;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::VecDeque;

/// A socket's life. Bytes written before a backend connects wait in `Connecting`.
#[derive(Debug)]
pub(crate) enum SockState {
    Connecting { since: Instant, pending: Vec<Bytes> },
    Open,
    Closed,
}

/// Our write side's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fin {
    NotWanted,
    /// Send it once the queue drains (and no effect is pending).
    Wanted,
    Sent,
}

/// One socket of a session.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) state: SockState,
    /// Bytes handed to the driver (or pending before connect) and not yet flushed.
    pub(crate) unflushed: u64,
    /// Bytes for this socket waiting behind a pending effect (not yet handed to the driver).
    pub(crate) gated: u64,
    pub(crate) fin: Fin,
    /// The peer sent EOF.
    pub(crate) eof: bool,
    /// We asked the driver to stop reading it.
    pub(crate) paused: bool,
    /// The destinations this socket's bytes were routed to, as a bit set of route indices
    /// (see `Session::route_index`): what its read pause depends on.
    pub(crate) feeds: u64,
}

impl Side {
    pub(crate) fn new(state: SockState) -> Self {
        Side {
            state,
            unflushed: 0,
            gated: 0,
            fin: Fin::NotWanted,
            eof: false,
            paused: false,
            feeds: 0,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, SockState::Closed)
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, SockState::Open)
    }

    /// What counts against the water marks: handed over and not flushed, plus waiting behind
    /// effects.
    pub(crate) fn backlog(&self) -> u64 {
        self.unflushed + self.gated
    }

    /// Queues `data` for the socket. Returns false (and drops it) if the socket is closed.
    pub(crate) fn write(&mut self, sock: SockId, data: Bytes, out: &mut VecDeque<Command>) -> bool {
        let len = data.len() as u64;
        match &mut self.state {
            SockState::Closed => return false,
            SockState::Connecting { pending, .. } => pending.push(data),
            SockState::Open => out.push_back(Command::Write { sock, data }),
        }
        self.unflushed += len;
        true
    }

    pub(crate) fn want_fin(&mut self) {
        if self.fin == Fin::NotWanted && !self.is_closed() {
            self.fin = Fin::Wanted;
        }
    }

    /// Sends the FIN if it is wanted and every byte has been flushed.
    pub(crate) fn try_fin(&mut self, sock: SockId, out: &mut VecDeque<Command>) {
        if self.fin == Fin::Wanted && self.backlog() == 0 && self.is_open() {
            out.push_back(Command::Shutdown { sock });
            self.fin = Fin::Sent;
        }
    }

    /// Both directions are finished: the peer sent EOF and our FIN went out.
    pub(crate) fn is_done(&self) -> bool {
        self.is_open() && self.eof && self.fin == Fin::Sent
    }

    /// Marks it closed; emits `Close` unless the driver already dropped it. Returns the bytes
    /// that were waiting for a connect.
    pub(crate) fn close(
        &mut self,
        sock: SockId,
        driver_dropped: bool,
        out: &mut VecDeque<Command>,
    ) -> Vec<Bytes> {
        if self.is_closed() {
            return Vec::new();
        }
        if !driver_dropped {
            out.push_back(Command::Close { sock });
        }
        let was = std::mem::replace(&mut self.state, SockState::Closed);
        self.unflushed = 0;
        self.gated = 0;
        match was {
            SockState::Connecting { pending, .. } => pending,
            _ => Vec::new(),
        }
    }

    /// Pauses reading when the worst destination this socket feeds (`target_backlog`) passes
    /// the high mark; resumes at the low mark.
    pub(crate) fn apply_flow(
        &mut self,
        sock: SockId,
        target_backlog: u64,
        cfg: &Config,
        out: &mut VecDeque<Command>,
    ) {
        if self.is_closed() || self.eof {
            return;
        }
        if !self.paused && target_backlog > cfg.high_water {
            self.paused = true;
            out.push_back(Command::PauseRead { sock });
        } else if self.paused && target_backlog <= cfg.low_water {
            self.paused = false;
            out.push_back(Command::ResumeRead { sock });
        }
    }
}
