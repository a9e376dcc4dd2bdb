//! The properties every run must satisfy. Each check returns the first violation as one line
//! naming the property.
//!
//! Framed scenarios (relay, duplex): each client receives exactly the bytes the primary sent it,
//! in order (a prefix when the primary crashed).
//!
//! Intercept scenarios (the line rewriter, `interceptor.rs`), **rewritten streams**: each client
//! receives exactly the rewritten answers to its lines, in request order — `ANSWER <r>` for an
//! `ASK <x>` line whose effect the model answered `r` within the effect timeout, `FAILED` for one
//! it answered with an error or too late, the upper-cased line for every other line — and
//! nothing else: never bytes of another session (every line names its client), never an answer
//! twice. When the primary crashed, a prefix of that, after which the session ends. The effect
//! log must agree: every `ASK` line the client's answers cover asked for its effect exactly once,
//! from that client's session only, and every effect asked for stands for a line a client sent.
//!
//! Both: no invariant broken at the engine boundary (limits after every step, the secondaries'
//! shared cap included, known sockets), liveness after the faults heal, quiescence (no session,
//! timer, command or effect in flight), one report per session with fitting outcomes and no
//! interceptor error; `detached-memory` only for a secondary closed when the secondaries' bytes
//! could have passed `secondary_memory`, and never `closed-early` (nothing in these scenarios
//! closes a session for a reason without its own word).

use crate::effects::EffectLog;
use crate::run::Observed;
use crate::scenario::{ClientPlan, Plan, SecondaryKind};
use fanout_engine::{ConnId, Outcome, Role};
use std::collections::BTreeMap;

/// Checks one run on its own.
pub(crate) fn check(plan: &Plan, seen: &Observed) -> Result<(), String> {
    // Liveness: after the faults healed, every client finished within the liveness phase.
    if let Some(e) = &seen.sim_error {
        let stuck: Vec<u32> = plan
            .clients
            .iter()
            .map(|c| c.id)
            .filter(|id| !seen.shared.clients.contains_key(id))
            .collect();
        return Err(format!(
            "liveness: the run did not complete ({e}); clients still running: {stuck:?}"
        ));
    }
    if let Some((v, more)) = seen.obs.violations.split_first() {
        let then = match more {
            [] => String::new(),
            [next, ..] => format!(" (and {} more, next: {next})", more.len()),
        };
        return Err(format!("invariant: {v}{then}"));
    }
    for c in &plan.clients {
        let Some(got) = seen.shared.clients.get(&c.id) else {
            return Err(format!("liveness: client {} never finished", c.id));
        };
        if got.vanished {
            continue;
        }
        if plan.effects.is_some() {
            check_rewritten(plan, &seen.effects, c, got)?;
            continue;
        }
        let sent = seen
            .shared
            .primary_sent
            .get(&c.id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if plan.primary_crashes {
            // The client receives a prefix of what the primary sent, never other bytes.
            if !sent.starts_with(&got.received) {
                return Err(format!(
                    "client bytes: client {} received {} bytes that are not a prefix of the {} the primary sent",
                    c.id,
                    got.received.len(),
                    sent.len()
                ));
            }
        } else {
            if let Some(e) = &got.error {
                return Err(format!("client bytes: client {} failed: {e}", c.id));
            }
            if got.received != sent || sent.len() != c.response_len as usize {
                let at = got.received.iter().zip(sent).position(|(a, b)| a != b);
                return Err(format!(
                    "client bytes: client {} received {} bytes, the primary sent {} of {} (first difference at {:?})",
                    c.id,
                    got.received.len(),
                    sent.len(),
                    c.response_len,
                    at
                ));
            }
        }
    }
    // Quiescence: with every client gone and every deadline passed, nothing is held.
    if !seen.obs.engine_idle || seen.obs.sessions != 0 {
        return Err(format!(
            "quiescence: the engine still holds {} sessions (idle: {})",
            seen.obs.sessions, seen.obs.engine_idle
        ));
    }
    if seen.effects.in_flight() > 0 {
        return Err(format!(
            "quiescence: {} effects still in flight at the end",
            seen.effects.in_flight()
        ));
    }
    if plan.effects.is_some() {
        check_effect_log(plan, &seen.effects)?;
    }
    check_reports(plan, seen)
}

/// What client `c` must hear for its lines, given what the effect model answered; and whether
/// that is all of it (false: an `ASK` line's effect was never asked for, so the stream can only
/// stop before its answer).
fn expected_stream(c: &ClientPlan, effects: &EffectLog) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    for (k, line) in c.lines.iter().enumerate() {
        let Some(x) = line.strip_prefix(b"ASK ") else {
            out.extend(line.iter().map(u8::to_ascii_uppercase));
            continue;
        };
        let x = &x[..x.len() - 1];
        let asked: Vec<_> = effects.for_payload(x).collect();
        match asked[..] {
            [] => return Ok((out, false)),
            [a] => match (&a.result, a.late) {
                (Ok(r), false) => out.extend([&b"ANSWER "[..], r, b"\n"].concat()),
                _ => out.extend_from_slice(b"FAILED\n"),
            },
            _ => {
                return Err(format!(
                    "rewritten stream: client {} line {k} asked for its effect {} times",
                    c.id,
                    asked.len()
                ))
            }
        }
    }
    Ok((out, true))
}

/// The rewritten-stream oracle for one client (see the module doc).
fn check_rewritten(
    plan: &Plan,
    effects: &EffectLog,
    c: &ClientPlan,
    got: &crate::hosts::ClientResult,
) -> Result<(), String> {
    let (want, complete) = expected_stream(c, effects)?;
    let at = got.received.iter().zip(&want).position(|(a, b)| a != b);
    let line_of = |at: usize| want[..at].iter().filter(|&&b| b == b'\n').count();
    if let Some(at) = at.or((got.received.len() > want.len()).then_some(want.len())) {
        return Err(format!(
            "rewritten stream: client {} received {} bytes that differ from its {} expected at byte {at} (answer line {}): got {:?}",
            c.id,
            got.received.len(),
            want.len(),
            line_of(at.min(want.len())),
            String::from_utf8_lossy(&got.received[at..got.received.len().min(at + 40)])
        ));
    }
    if plan.primary_crashes {
        return Ok(()); // a prefix, then the session ended
    }
    if let Some(e) = &got.error {
        return Err(format!("rewritten stream: client {} failed: {e}", c.id));
    }
    if !complete {
        return Err(format!(
            "rewritten stream: client {} line {} is an ASK whose effect was never asked for",
            c.id,
            line_of(want.len())
        ));
    }
    if got.received.len() < want.len() {
        return Err(format!(
            "rewritten stream: client {} received {} of its {} expected bytes ({} of {} answer lines)",
            c.id,
            got.received.len(),
            want.len(),
            line_of(got.received.len()),
            c.lines.len()
        ));
    }
    Ok(())
}

/// Every effect asked for stands for an `ASK` line a client sent, and one session asked for all
/// of a client's effects and for no other client's.
fn check_effect_log(plan: &Plan, effects: &EffectLog) -> Result<(), String> {
    let mut session_of: BTreeMap<u32, ConnId> = BTreeMap::new();
    let mut client_of: BTreeMap<ConnId, u32> = BTreeMap::new();
    for a in &effects.answered {
        let x = &a.request.payload;
        let client = plan.clients.iter().find(|c| {
            c.lines.iter().any(|l| {
                l.strip_prefix(b"ASK ")
                    .is_some_and(|r| &r[..r.len() - 1] == x)
            })
        });
        let Some(c) = client else {
            return Err(format!(
                "effect log: effect {} asked for {:?}, which no client sent",
                a.id.0,
                String::from_utf8_lossy(x)
            ));
        };
        let conn = *session_of.entry(c.id).or_insert(a.conn);
        let id = *client_of.entry(a.conn).or_insert(c.id);
        if conn != a.conn || id != c.id {
            return Err(format!(
                "effect log: effect {} for client {}'s line came from session {}, which is client {id}'s (client {} is session {})",
                a.id.0, c.id, a.conn.0, c.id, conn.0
            ));
        }
    }
    Ok(())
}

/// The report accounts for every backend of every session, with an outcome that fits the fault.
fn check_reports(plan: &Plan, seen: &Observed) -> Result<(), String> {
    if seen.obs.reports.len() as u64 != seen.obs.accepted {
        return Err(format!(
            "report: {} sessions accepted but {} reported",
            seen.obs.accepted,
            seen.obs.reports.len()
        ));
    }
    let clean = plan.faults.is_empty() && !plan.clients.iter().any(|c| c.vanish_after.is_some());
    for r in &seen.obs.reports {
        if let Some(e) = &r.interceptor_error {
            return Err(format!(
                "report: session {} was closed for its interceptor: {e}",
                r.conn.0
            ));
        }
        if r.backends.len() != 1 + plan.secondaries.len() {
            return Err(format!(
                "report: session {} lists {} backends",
                r.conn.0,
                r.backends.len()
            ));
        }
        let primary = &r.backends[0];
        if primary.role != Role::Primary {
            return Err(format!(
                "report: session {} does not list the primary first",
                r.conn.0
            ));
        }
        if clean && primary.outcome != Outcome::Ok {
            return Err(format!(
                "report: session {} primary outcome {:?} with no fault",
                r.conn.0, primary.outcome
            ));
        }
        for b in &r.backends {
            if b.outcome == Outcome::ClosedEarly {
                return Err(format!(
                    "report: session {} backend {} reported closed-early: {:?}",
                    r.conn.0, b.backend.0, r.backends
                ));
            }
        }
        for s in &r.backends[1..] {
            let sock = fanout_engine::SockId::backend(r.conn, s.backend);
            if s.outcome == Outcome::DetachedMemory
                && seen.obs.secondaries_closed.get(&sock) != Some(&true)
            {
                return Err(format!(
                    "report: session {} secondary detached-memory, but the secondaries could not have held more than the cap of {} bytes when it was closed",
                    r.conn.0, plan.cfg.secondary_memory
                ));
            }
        }
        for (s, kind) in r.backends[1..].iter().zip(&plan.secondaries) {
            let ok = s.outcome == Outcome::Ok;
            let fits = match kind {
                SecondaryKind::NeverReads => {
                    // It can only finish by being cut loose (or if it was sent nothing at all).
                    matches!(
                        s.outcome,
                        Outcome::DetachedBudget
                            | Outcome::DetachedDeadline
                            | Outcome::DetachedMemory
                            | Outcome::IdleTimeout
                    ) || (ok && s.bytes_sent == 0)
                }
                SecondaryKind::Garbage if ok && clean => {
                    // A lying secondary is never judged equal, unless it had nothing to lie about.
                    s.matches_primary == Some(primary.bytes_received < 2)
                        || s.bytes_received != primary.bytes_received
                }
                SecondaryKind::Honest if ok && clean => s.matches_primary == Some(true),
                _ => true,
            };
            if !fits {
                return Err(format!(
                    "report: session {} secondary ({kind:?}) has outcome {:?}, matches {:?}",
                    r.conn.0, s.outcome, s.matches_primary
                ));
            }
        }
    }
    Ok(())
}

/// Secondary isolation: with and without the secondary, every client receives the same bytes at
/// the same virtual time.
pub(crate) fn same_for_clients(
    plan: &Plan,
    with: &Observed,
    without: &Observed,
) -> Result<(), String> {
    for c in &plan.clients {
        let (a, b) = (
            with.shared.clients.get(&c.id),
            without.shared.clients.get(&c.id),
        );
        let (Some(a), Some(b)) = (a, b) else {
            return Err(format!(
                "isolation: client {} finished in only one of the twin runs",
                c.id
            ));
        };
        if a.received != b.received {
            return Err(format!(
                "isolation: client {} received {} bytes with the secondary, {} without",
                c.id,
                a.received.len(),
                b.received.len()
            ));
        }
        if a.done_at != b.done_at {
            return Err(format!(
                "isolation: client {} finished at {:?} with the secondary, {:?} without",
                c.id, a.done_at, b.done_at
            ));
        }
    }
    Ok(())
}
