//! The engine's part of a session: its sockets, legs, held bytes and gates, what `Conn` acts
//! on, and [`Core::settle`]: the rules that follow every input.

use crate::command::Command;
use crate::compare::{Comparison, Digest, PrimaryTail};
use crate::config::Config;
use crate::effect::{EffectId, EffectRequest};
use crate::gate::Gates;
use crate::ids::{BackendId, ConnId, Peer, SockId, UpstreamId};
use crate::intercept::{Misuse, Open};
use crate::leg::Leg;
use crate::report::{BackendReport, Outcome, Role, SessionReport};
use crate::session::Ctx;
use crate::side::{Fin, Side, SockState};
use crate::time::Instant;
use crate::timers::{TimerKey, Timers};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Everything about a session but the interceptor's state: what [`Conn`] acts on.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) conn: ConnId,
    pub(crate) client_addr: String,
    pub(crate) started: Instant,
    pub(crate) first_client_byte: Option<Instant>,
    pub(crate) last_activity: Instant,
    pub(crate) idle_timer: Option<Instant>,
    pub(crate) client: Side,
    /// Index is the `BackendId`, in the order the interceptor opened them.
    pub(crate) legs: Vec<Leg>,
    /// The current primary (it stays named after it closed, until another is opened).
    pub(crate) primary: Option<BackendId>,
    /// The primary's response bytes still needed by a secondary's comparison.
    pub(crate) tail: PrimaryTail,
    /// Whether digests and comparisons are kept at all (reports on).
    pub(crate) analyse: bool,
    /// Each backend's response digest, by `BackendId`; empty unless `analyse` (a relay without
    /// a report keeps none: an idle session is smaller by a digest's state per backend).
    pub(crate) digests: Vec<Digest>,
    /// Bytes the interceptor put on hold.
    pub(crate) held: Vec<Bytes>,
    pub(crate) held_len: u64,
    pub(crate) gates: Gates,
    /// The socket whose bytes the running hook handles: writes record a route from it.
    pub(crate) source: Option<Peer>,
    /// `on_effect` is running for this effect: writes go to its place in the output.
    pub(crate) filling: Option<EffectId>,
    /// During `on_connect_failed`: the bytes the failed backend never got.
    pub(crate) unsent: Vec<Bytes>,
    /// Close the client once its FIN is out (`Finish::Close`, `Conn::close_client`).
    pub(crate) close_client_after_fin: bool,
    /// The interceptor misused the API or panicked; `settle` closes the session.
    pub(crate) misuse: Option<Misuse>,
    /// Why the session was closed for the interceptor, for the report.
    pub(crate) interceptor_error: Option<String>,
}

/// Bit of `peer` in a side's `feeds` set: 0 the client, 1 + n backend n.
fn route_bit(peer: Peer) -> u64 {
    match peer {
        Peer::Client => 1,
        Peer::Backend(b) => 1u64.checked_shl(1 + u32::from(b.0)).unwrap_or(0),
    }
}

impl Core {
    pub(crate) fn leg_mut(&mut self, b: BackendId) -> Option<&mut Leg> {
        self.legs.get_mut(usize::from(b.0))
    }

    pub(crate) fn side_mut(&mut self, peer: Peer) -> Option<&mut Side> {
        match peer {
            Peer::Client => Some(&mut self.client),
            Peer::Backend(b) => self.leg_mut(b).map(|l| &mut l.side),
        }
    }

    /// The client socket is still open.
    pub(crate) fn is_finished(&self) -> bool {
        self.client.is_closed() && self.legs.iter().all(|l| l.side.is_closed())
    }

    /// The primary's leg is over (or, with no primary ever opened, the client is gone).
    pub(crate) fn primary_over(&self) -> bool {
        match self.primary {
            Some(p) => self.legs[usize::from(p.0)].side.is_closed(),
            None => self.client.is_closed(),
        }
    }

    pub(crate) fn unflushed(&self) -> impl Iterator<Item = (SockId, u64)> + '_ {
        std::iter::once((SockId::client(self.conn), self.client.unflushed)).chain(
            self.legs
                .iter()
                .map(|l| (l.sock(self.conn), l.side.unflushed)),
        )
    }

    pub(crate) fn knows(&self, peer: Peer) -> bool {
        match peer {
            Peer::Client => !self.client.is_closed(),
            Peer::Backend(b) => self
                .legs
                .get(usize::from(b.0))
                .is_some_and(|l| !l.side.is_closed()),
        }
    }

    // ---- what Conn does ------------------------------------------------------------------

    /// Opens a backend: asks the driver to connect to `upstream` and arms the connect timer.
    pub(crate) fn open_backend(
        &mut self,
        upstream: UpstreamId,
        how: Open,
        ctx: &mut Ctx,
    ) -> Result<BackendId, Misuse> {
        if self.legs.len() >= usize::from(ctx.cfg.max_backends) {
            return Err(Misuse::TooManyBackends);
        }
        if how.role == Role::Primary && !self.primary_over_or_none() {
            return Err(Misuse::SecondPrimary);
        }
        let id = BackendId(self.legs.len() as u16);
        let mut leg = Leg {
            id,
            upstream,
            role: how.role,
            relay_client: how.relay_client,
            relay_server: how.relay_server,
            side: Side::new(SockState::Connecting {
                since: ctx.now,
                pending: Vec::new(),
            }),
            connect_timer: None,
            deadline_timer: None,
            connect_time: None,
            first_byte: None,
            last_byte: None,
            sent: 0,
            received: 0,
            outcome: None,
            // A secondary opened after the primary began answering cannot be compared from
            // the start: it is reported without a verdict.
            comparison: (how.role == Role::Secondary && self.primary_received() == 0)
                .then(Comparison::default),
        };
        if how.role == Role::Secondary {
            self.analyse = true;
        }
        if self.client.eof || self.client.is_closed() {
            // The client's input is over: this backend, too, gets its FIN after its bytes.
            leg.side.want_fin();
        }
        ctx.out.push_back(Command::Connect {
            sock: SockId::backend(self.conn, id),
            upstream,
        });
        ctx.timers.set(
            TimerKey::Connect(self.conn, id),
            &mut leg.connect_timer,
            Some(ctx.now + ctx.cfg.connect_timeout),
        );
        if how.role == Role::Primary {
            self.primary = Some(id);
        }
        self.legs.push(leg);
        if self.analyse {
            if self.digests.capacity() == 0 {
                self.digests
                    .reserve_exact(1 + usize::from(ctx.cfg.secondaries));
            }
            self.digests.resize_with(self.legs.len(), Digest::default);
        }
        Ok(id)
    }

    fn primary_received(&self) -> u64 {
        self.primary
            .map_or(0, |p| self.legs[usize::from(p.0)].received)
    }

    fn primary_over_or_none(&self) -> bool {
        match self.primary {
            Some(p) => self.legs[usize::from(p.0)].side.is_closed(),
            None => true,
        }
    }

    /// The one write path of a session: records the route from the running hook's source,
    /// refuses a write after a FIN, holds it behind a pending effect, or queues it.
    pub(crate) fn emit(&mut self, dest: Peer, data: Bytes, ctx: &mut Ctx) {
        if data.is_empty() {
            return;
        }
        let bit = route_bit(dest);
        let source = self.source;
        let gated = !self.gates.is_empty();
        #[cfg(feature = "sim-mutants")]
        let gated = gated && !ctx.mutant(crate::mutants::Mutant::OutputJumpsPendingEffect);
        #[cfg(feature = "sim-mutants")]
        let source =
            source.filter(|_| !ctx.mutant(crate::mutants::Mutant::AnswersEscapeFlowControl));
        let Some(side) = self.side_mut(dest) else {
            if let Peer::Backend(b) = dest {
                self.misuse.get_or_insert(Misuse::UnknownBackend(b));
            }
            return;
        };
        if side.is_closed() {
            return; // gone: nobody is left to hear it
        }
        if side.fin == Fin::Sent {
            self.misuse.get_or_insert(Misuse::WriteAfterFin);
            return;
        }
        if gated {
            side.gated += data.len() as u64;
            self.gates.hold(self.filling, (dest, data));
            if self.held_total() > ctx.cfg.max_held {
                self.misuse.get_or_insert(Misuse::HeldOverLimit);
            }
        } else {
            self.write_now(dest, data, ctx);
        }
        if let Some(src) = source {
            if let Some(s) = self.side_mut(src) {
                s.feeds |= bit;
            }
        }
    }

    /// Hands `data` to the driver (or the connect's pending list). A secondary whose write took
    /// it past its budget, or took the bytes held for every secondary of the engine past
    /// `secondary_memory`, is detached: what it held is dropped with it, so the total never
    /// stays above the cap, and the primary and the client never wait for it.
    fn write_now(&mut self, dest: Peer, data: Bytes, ctx: &mut Ctx) {
        let conn = self.conn;
        let len = data.len() as u64;
        match dest {
            Peer::Client => {
                self.client.write(SockId::client(conn), data, ctx.out);
            }
            Peer::Backend(b) => {
                let Some(leg) = self.leg_mut(b) else { return };
                #[cfg(feature = "sim-mutants")]
                if leg.role == Role::Secondary
                    && matches!(leg.side.state, SockState::Connecting { .. })
                    && ctx.mutant(crate::mutants::Mutant::SecondaryLosesPendingRequest)
                {
                    return;
                }
                if !leg.side.write(leg.sock(conn), data, ctx.out) {
                    return;
                }
                if leg.role != Role::Secondary {
                    return;
                }
                *ctx.secondary_held += len;
                let over_memory = *ctx.secondary_held > ctx.cfg.secondary_memory;
                #[cfg(feature = "sim-mutants")]
                let over_memory =
                    over_memory && !ctx.mutant(crate::mutants::Mutant::SecondaryMemoryUnbounded);
                if leg.side.unflushed > ctx.cfg.secondary_budget {
                    leg.end(conn, Outcome::DetachedBudget, false, ctx);
                } else if over_memory {
                    leg.end(conn, Outcome::DetachedMemory, false, ctx);
                }
            }
        }
    }

    /// Client bytes to every backend that does not bypass `on_data` and has not been sent (or
    /// asked for) its FIN.
    pub(crate) fn forward(&mut self, data: Bytes, ctx: &mut Ctx) {
        for i in 0..self.legs.len() {
            let leg = &self.legs[i];
            if leg.relay_client || leg.side.is_closed() || leg.side.fin == Fin::Sent {
                continue;
            }
            let id = leg.id;
            self.emit(Peer::Backend(id), data.clone(), ctx);
        }
    }

    pub(crate) fn held_total(&self) -> u64 {
        let gated: u64 = std::iter::once(&self.client)
            .chain(self.legs.iter().map(|l| &l.side))
            .map(|s| s.gated)
            .sum();
        self.held_len + gated
    }

    pub(crate) fn request_effect(
        &mut self,
        request: EffectRequest,
        ctx: &mut Ctx,
    ) -> Result<EffectId, Misuse> {
        if self.gates.pending() >= ctx.cfg.max_effects as usize {
            return Err(Misuse::TooManyEffects);
        }
        let id = EffectId(*ctx.next_effect);
        *ctx.next_effect += 1;
        let mut slot = None;
        ctx.timers.set(
            TimerKey::Effect(self.conn, id),
            &mut slot,
            Some(ctx.now + ctx.cfg.effect_timeout),
        );
        self.gates.push(id, slot, self.source);
        ctx.effects.insert(id, self.conn);
        ctx.out.push_back(Command::Effect {
            conn: self.conn,
            id,
            request: Box::new(request),
        });
        Ok(id)
    }

    /// Writes the output of every gate that may open, in order.
    pub(crate) fn release_gates(&mut self, ctx: &mut Ctx) {
        for (dest, data) in self.gates.release() {
            let len = data.len() as u64;
            let Some(side) = self.side_mut(dest) else {
                continue;
            };
            side.gated = side.gated.saturating_sub(len);
            if side.is_closed() {
                continue;
            }
            self.write_now(dest, data, ctx);
        }
    }

    /// The client will send nothing more (its EOF, or `close_client`): every backend gets its
    /// FIN once what it was sent went out. A backend opened later gets it from `open_backend`.
    pub(crate) fn client_input_over(&mut self) {
        for leg in &mut self.legs {
            leg.side.want_fin();
        }
    }

    /// Client FIN once its queue drained, then close it.
    pub(crate) fn close_client(&mut self) {
        self.client.want_fin();
        self.close_client_after_fin = true;
    }

    pub(crate) fn connected(&mut self, b: BackendId, ctx: &mut Ctx) -> bool {
        let conn = self.conn;
        let Some(leg) = self.leg_mut(b) else {
            return false;
        };
        if !matches!(leg.side.state, SockState::Connecting { .. }) {
            return false; // not waiting for a connect: a confused driver; change nothing
        }
        let SockState::Connecting { since, pending } =
            std::mem::replace(&mut leg.side.state, SockState::Open)
        else {
            unreachable!("checked above")
        };
        leg.connect_time = Some(ctx.now.saturating_since(since));
        ctx.timers
            .set(TimerKey::Connect(conn, b), &mut leg.connect_timer, None);
        let sock = leg.sock(conn);
        for data in pending {
            ctx.out.push_back(Command::Write { sock, data });
        }
        true
    }

    /// The primary is gone before finishing its response: the client hears about it at once.
    pub(crate) fn primary_lost(&mut self, ctx: &mut Ctx) {
        if !self.primary_over_or_none() {
            return; // the interceptor opened a new primary
        }
        let complete = self
            .primary
            .is_some_and(|p| self.legs[usize::from(p.0)].side.eof);
        if complete {
            // The response was complete; let the client have all of it, then FIN.
            self.client.want_fin();
            return;
        }
        self.client.close(SockId::client(self.conn), false, ctx.out);
        self.release_secondaries();
    }

    /// The client will send nothing more: secondaries finish what they have, then get a FIN.
    pub(crate) fn release_secondaries(&mut self) {
        for leg in &mut self.legs {
            if leg.role == Role::Secondary {
                leg.side.want_fin();
            }
        }
    }

    /// Digests and comparisons of a backend's raw bytes (before any hook rewrote them).
    pub(crate) fn analyse_read(&mut self, b: BackendId, data: &Bytes, cfg: &Config) {
        if !self.analyse {
            return;
        }
        let is_primary = self.primary == Some(b);
        if let Some(d) = self.digests.get_mut(usize::from(b.0)) {
            d.update(data);
        }
        if is_primary {
            let compared = |l: &Leg| {
                l.comparison
                    .as_ref()
                    .is_some_and(|c| c.needs_from().is_some())
            };
            if self.legs.iter().any(compared) {
                self.tail.push(data.clone());
                for leg in &mut self.legs {
                    if let Some(cmp) = &mut leg.comparison {
                        cmp.advance(&self.tail, cfg.compare_window);
                    }
                }
            }
        } else if let Some(cmp) = &mut self.legs[usize::from(b.0)].comparison {
            cmp.push(data.clone());
            cmp.advance(&self.tail, cfg.compare_window);
        }
        // What no comparison needs any more is dropped by `settle`, which follows every event.
    }

    fn trim_tail(&mut self) {
        let keep_from = self
            .legs
            .iter()
            .filter_map(|l| l.comparison.as_ref().and_then(Comparison::needs_from))
            .min()
            .unwrap_or(self.tail.len());
        self.tail.trim_to(keep_from);
    }

    /// Closes every socket; legs not yet ended get `outcome`.
    pub(crate) fn close_all(&mut self, outcome: Outcome, ctx: &mut Ctx) {
        let conn = self.conn;
        self.client.close(SockId::client(conn), false, ctx.out);
        for leg in &mut self.legs {
            if !leg.side.is_closed() {
                leg.end(conn, outcome, false, ctx);
            }
        }
        self.held.clear();
        self.held_len = 0;
    }

    pub(crate) fn settle(&mut self, ctx: &mut Ctx) {
        let conn = self.conn;
        #[cfg(feature = "sim-mutants")]
        if ctx.mutant(crate::mutants::Mutant::DropTailAfterEof) && self.client.fin == Fin::Wanted {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        // The primary's bytes no comparison needs any more: compared, or their secondary ended.
        if self.tail.retained() > 0 {
            self.trim_tail();
        }
        // FINs whose queues have drained (never while an effect is pending: what it writes
        // comes first); legs finished both ways.
        let fin_ok = self.gates.is_empty();
        #[cfg(feature = "sim-mutants")]
        let fin_ok = fin_ok || ctx.mutant(crate::mutants::Mutant::FinBeforePendingEffect);
        if fin_ok {
            self.client.try_fin(SockId::client(conn), ctx.out);
            if self.client.fin == Fin::Sent
                && self.close_client_after_fin
                && !self.client.is_closed()
            {
                self.client.close(SockId::client(conn), false, ctx.out);
                // em-proxy closes the backends after writing too.
                self.client_input_over();
            }
        }
        if self.client.is_done() {
            self.client.close(SockId::client(conn), false, ctx.out);
        }
        #[cfg(feature = "sim-mutants")]
        let secondaries_hold = ctx.mutant(crate::mutants::Mutant::ClientFinWaitsForSecondaries)
            && self
                .legs
                .iter()
                .any(|l| l.role == Role::Secondary && !l.side.is_closed() && l.side.unflushed > 0);
        for leg in &mut self.legs {
            #[cfg(feature = "sim-mutants")]
            let fin_ok = fin_ok && !(secondaries_hold && leg.role != Role::Secondary);
            if fin_ok {
                leg.side.try_fin(leg.sock(conn), ctx.out);
            }
            if leg.side.is_done() {
                leg.end(conn, Outcome::Ok, false, ctx);
            }
        }
        // Once the primary's leg is over, secondaries have a deadline.
        if self.primary_over() {
            let at = ctx.now + ctx.cfg.secondary_deadline;
            for leg in &mut self.legs {
                if leg.role == Role::Secondary
                    && !leg.side.is_closed()
                    && leg.deadline_timer.is_none()
                {
                    ctx.timers.set(
                        TimerKey::Deadline(conn, leg.id),
                        &mut leg.deadline_timer,
                        Some(at),
                    );
                }
            }
        }
        if self.client.is_closed() && self.primary_over() {
            ctx.timers
                .set(TimerKey::Idle(conn), &mut self.idle_timer, None);
        }
        self.apply_flow(ctx);
    }

    /// Backpressure on every route: a source pauses while any destination it fed (the client,
    /// or a backend that is not a secondary) holds more than the high-water mark.
    fn apply_flow(&mut self, ctx: &mut Ctx) {
        let conn = self.conn;
        let cfg: &Config = ctx.cfg;
        #[cfg(feature = "sim-mutants")]
        let no_hysteresis = ctx
            .mutant(crate::mutants::Mutant::ResumeAtHighWater)
            .then(|| Config {
                low_water: cfg.high_water,
                ..cfg.clone()
            });
        #[cfg(feature = "sim-mutants")]
        let cfg = no_hysteresis.as_ref().unwrap_or(cfg);
        let target = self.worst_backlog(self.client.feeds, ctx);
        self.client
            .apply_flow(SockId::client(conn), target, cfg, ctx.out);
        for i in 0..self.legs.len() {
            let feeds = self.legs[i].side.feeds;
            if feeds == 0 && !self.legs[i].side.paused {
                continue; // feeds nobody (a secondary): never paused
            }
            let target = self.worst_backlog(feeds, ctx);
            let leg = &mut self.legs[i];
            leg.side
                .apply_flow(SockId::backend(conn, leg.id), target, cfg, ctx.out);
        }
    }

    /// The largest backlog among the pacing destinations in the route set `feeds` (bit 0 the
    /// client, bit 1 + n backend n).
    fn worst_backlog(&self, feeds: u64, ctx: &Ctx) -> u64 {
        let mut worst = 0;
        let mut bits = feeds;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let backlog = match i {
                0 => self.client.backlog(),
                n => match self.legs.get(n - 1) {
                    Some(leg) if leg.role != Role::Secondary => leg.side.backlog(),
                    #[cfg(feature = "sim-mutants")]
                    Some(leg)
                        if ctx.mutant(crate::mutants::Mutant::SecondaryBackpressuresClient) =>
                    {
                        leg.side.backlog()
                    }
                    _ => 0,
                },
            };
            worst = worst.max(backlog);
        }
        let _ = ctx;
        worst
    }

    /// Backend `b`'s response digest (that of nothing when no digest was kept).
    fn digest_of(&self, b: BackendId) -> u64 {
        self.digests
            .get(usize::from(b.0))
            .map_or_else(|| Digest::default().value(), Digest::value)
    }

    pub(crate) fn report(&self) -> SessionReport {
        let origin = self.first_client_byte.unwrap_or(self.started);
        let since = |t: Option<Instant>| t.map(|t| t.saturating_since(origin));
        let primary = match self.primary {
            Some(p) => {
                let leg = &self.legs[usize::from(p.0)];
                (leg.received, self.digest_of(p))
            }
            None => (0, Digest::default().value()),
        };
        let backends = self
            .legs
            .iter()
            .map(|leg| {
                let digest = self.digest_of(leg.id);
                let (matches_primary, first_difference) = match &leg.comparison {
                    None => (None, None),
                    Some(cmp) => {
                        let (m, d) = cmp.verdict(primary, (leg.received, digest));
                        (Some(m), d)
                    }
                };
                BackendReport {
                    backend: leg.id,
                    upstream: leg.upstream,
                    role: leg.role,
                    connect_time: leg.connect_time,
                    first_byte: since(leg.first_byte),
                    last_byte: since(leg.last_byte),
                    bytes_sent: leg.sent,
                    bytes_received: leg.received,
                    outcome: leg.outcome.unwrap_or(Outcome::ClosedEarly),
                    digest,
                    matches_primary,
                    first_difference,
                }
            })
            .collect();
        SessionReport {
            conn: self.conn,
            client: self.client_addr.clone(),
            started: self.started,
            backends,
            interceptor_error: self.interceptor_error.clone(),
        }
    }

    pub(crate) fn cancel_timers(
        &mut self,
        timers: &mut Timers,
        effects: &mut BTreeMap<EffectId, ConnId>,
    ) {
        let conn = self.conn;
        timers.set(TimerKey::Idle(conn), &mut self.idle_timer, None);
        for leg in &mut self.legs {
            timers.set(
                TimerKey::Connect(conn, leg.id),
                &mut leg.connect_timer,
                None,
            );
            timers.set(
                TimerKey::Deadline(conn, leg.id),
                &mut leg.deadline_timer,
                None,
            );
        }
        for (id, mut slot) in self.gates.clear() {
            timers.set(TimerKey::Effect(conn, id), &mut slot, None);
            effects.remove(&id);
        }
    }
}
