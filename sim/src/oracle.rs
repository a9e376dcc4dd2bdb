//! The properties every run must satisfy. Every oracle runs on every run, whatever the others
//! found; each reports its first violation as one line, and a run's failure names every oracle
//! that failed ([`Failure::oracle`]: `liveness`, `invariant`, `hysteresis`, `client-bytes`,
//! `request-bytes`, `rewritten-stream`, `effect-log`, `drain`, `quiescence`, `report`,
//! `isolation`).
//!
//! Framed scenarios (relay, duplex), **client bytes**: each client receives exactly the bytes the
//! primary sent it, in order (a prefix when the primary crashed). **Request bytes**: every
//! connection a backend accepted read a prefix of exactly one client's request (header and
//! body, in order), and a backend the report says finished `ok` read all of what its client
//! sent. **Report**: every session is reported once; every backend's outcome is one its host
//! and its client's fate allow (an exhaustive table, [`outcome_fits`]); a leg that finished
//! `ok` reports the length and digest of what its host actually wrote; an honest secondary
//! that finished with its primary matches it, a lying one does not, differing first exactly
//! where its host started to lie.
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
//! **Drain** (plans with a SIGTERM): the engine said `Drained` once, after its last report and
//! no later than the deadline (the first drain plus `drain_timeout`, or a second drain); no
//! session was cut `drain-timeout` before that deadline, none was accepted after the drain
//! began, and a client no session served received nothing. Without a drain, no `Drained`.
//!
//! Both: no invariant broken at the engine boundary (limits after every step, the secondaries'
//! shared cap included, known sockets), the water marks' **hysteresis** (a paused source resumes
//! only once what it fed is back at the low-water mark; pauses and resumes pair), liveness after
//! the faults heal, quiescence (no session,
//! timer, command or effect in flight), one report per session with fitting outcomes and no
//! interceptor error; `detached-memory` only for a secondary closed when the secondaries' bytes
//! could have passed `secondary_memory`, and never `closed-early` (nothing in these scenarios
//! closes a session for a reason without its own word). **Isolation** (duplex, against the twin
//! run without secondaries): every byte of every client's answer arrives at the same virtual
//! instant in both runs, and each client finishes at the same instant.

use crate::effects::EffectLog;
use crate::hosts::{request_bytes, ClientResult};
use crate::run::Observed;
use crate::scenario::{ClientPlan, Fault, Plan, SecondaryKind, SECONDARY};
use fanout_engine::{BackendReport, ConnId, Outcome, Role, SessionReport};
use std::collections::BTreeMap;
use std::time::Duration;

/// One oracle's verdict on a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The oracle's name, as the module doc lists them.
    pub oracle: &'static str,
    /// Its first violation.
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.oracle, self.what)
    }
}

/// Runs every oracle on a run (and, for duplex runs, `twin`, the run without secondaries) and
/// returns each one that failed, in the order the module doc lists them.
pub(crate) fn check_all(plan: &Plan, seen: &Observed, twin: Option<&Observed>) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut run = |oracle: &'static str, r: Result<(), String>| {
        if let Err(what) = r {
            out.push(Failure { oracle, what });
        }
    };
    run("liveness", liveness(plan, seen));
    run("invariant", first_of(&seen.obs.violations));
    run("hysteresis", first_of(&seen.obs.flow_violations));
    if plan.effects.is_some() {
        run(
            "rewritten-stream",
            each_client(plan, seen, |c, got| {
                check_rewritten(plan, &seen.effects, c, got)
            }),
        );
        run("effect-log", check_effect_log(plan, &seen.effects));
    } else {
        run(
            "client-bytes",
            each_client(plan, seen, |c, got| client_bytes(plan, seen, c, got)),
        );
        run("request-bytes", request_bytes_oracle(plan, seen));
    }
    run("drain", drain(plan, seen));
    run("quiescence", quiescence(seen));
    run("report", check_reports(plan, seen));
    if let Some(twin) = twin {
        run("isolation", same_for_clients(plan, seen, twin));
    }
    out
}

/// `list`'s first entry, with how many follow.
fn first_of(list: &[String]) -> Result<(), String> {
    match list.split_first() {
        None => Ok(()),
        Some((v, [])) => Err(v.clone()),
        Some((v, more)) => Err(format!("{v} (and {} more, next: {})", more.len(), more[0])),
    }
}

/// After the faults healed, every client finished within the liveness phase.
fn liveness(plan: &Plan, seen: &Observed) -> Result<(), String> {
    let stuck: Vec<u32> = plan
        .clients
        .iter()
        .map(|c| c.id)
        .filter(|id| !seen.shared.clients.contains_key(id))
        .collect();
    match (&seen.sim_error, stuck.is_empty()) {
        (None, true) => Ok(()),
        (Some(e), _) => Err(format!(
            "the run did not complete ({e}); clients still running: {stuck:?}"
        )),
        (None, false) => Err(format!("clients never finished: {stuck:?}")),
    }
}

/// `check` on every client that finished and did not vanish; the first failure.
fn each_client(
    plan: &Plan,
    seen: &Observed,
    mut check: impl FnMut(&ClientPlan, &ClientResult) -> Result<(), String>,
) -> Result<(), String> {
    for c in &plan.clients {
        match seen.shared.clients.get(&c.id) {
            Some(got) if !got.vanished => check(c, got)?,
            _ => {}
        }
    }
    Ok(())
}

/// The client-bytes oracle for one client (see the module doc).
fn client_bytes(
    plan: &Plan,
    seen: &Observed,
    c: &ClientPlan,
    got: &ClientResult,
) -> Result<(), String> {
    let sent = seen
        .shared
        .primary_sent
        .get(&c.id)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let primary = report_for(seen, got).map(|r| r.backends[0].outcome);
    // A prefix may be all a client gets when its primary crashed, when its primary closed
    // before reading the whole request and its leg did not finish `ok`, when the drain's
    // deadline cut its session, and (nothing at all) when a drain kept it from being served.
    let cut_short = plan.primary_crashes
        || (plan.primary_closes_early && primary != Some(Outcome::Ok))
        || primary == Some(Outcome::DrainTimeout);
    if plan.drains() && primary.is_none() && !got.received.is_empty() {
        return Err(format!(
            "client {} received {} bytes, but no session served it",
            c.id,
            got.received.len()
        ));
    }
    if cut_short || (plan.drains() && primary.is_none()) {
        // The client receives a prefix of what the primary sent, never other bytes.
        if !sent.starts_with(&got.received) {
            return Err(format!(
                "client {} received {} bytes that are not a prefix of the {} the primary sent",
                c.id,
                got.received.len(),
                sent.len()
            ));
        }
        return Ok(());
    }
    if let Some(e) = &got.error {
        return Err(format!("client {} failed: {e}", c.id));
    }
    if got.received != sent || sent.len() as u64 != c.total_response_len() {
        let at = got.received.iter().zip(sent).position(|(a, b)| a != b);
        return Err(format!(
            "client {} received {} bytes, the primary sent {} of {} (first difference at {:?})",
            c.id,
            got.received.len(),
            sent.len(),
            c.total_response_len(),
            at
        ));
    }
    Ok(())
}

/// What client `c` put on the wire: its whole request, or the part before it vanished.
fn client_sent(plan: &Plan, c: &ClientPlan) -> Vec<u8> {
    let mut req = request_bytes(plan.seed, c);
    if let Some(v) = c.vanish_after {
        req.truncate(12 + v as usize);
    }
    req
}

/// The request-bytes oracle (see the module doc).
fn request_bytes_oracle(plan: &Plan, seen: &Observed) -> Result<(), String> {
    let sent: BTreeMap<u32, Vec<u8>> = plan
        .clients
        .iter()
        .map(|c| (c.id, client_sent(plan, c)))
        .collect();
    // Every connection read a prefix of one client's request.
    let mut read_by: BTreeMap<(usize, u32), Vec<&[u8]>> = BTreeMap::new();
    for (n, (host, read)) in seen.shared.backend_reads.iter().enumerate() {
        if read.len() < 4 {
            if !sent.values().any(|s| s.starts_with(read)) {
                return Err(format!(
                    "connection {n} to backend host {host} read {read:?}, the start of no client's request"
                ));
            }
            continue;
        }
        let id = u32::from_le_bytes(read[..4].try_into().unwrap());
        let Some(want) = sent.get(&id) else {
            return Err(format!(
                "connection {n} to backend host {host} read {} bytes naming client {id}, which does not exist",
                read.len()
            ));
        };
        if !want.starts_with(read) {
            let at = read.iter().zip(want).position(|(a, b)| a != b);
            return Err(format!(
                "connection {n} to backend host {host} read {} bytes of client {id}'s {}-byte request, differing at {at:?}",
                read.len(),
                want.len()
            ));
        }
        read_by.entry((*host, id)).or_default().push(read);
    }
    // A leg that finished `ok` read everything the proxy read from its client, unless a fault
    // struck its host: turmoil loses the segments a partition or a crash catches in flight,
    // where TCP would deliver them or fail the connection. And the proxy read everything the
    // client sent, unless the primary's leg ended otherwise (a primary that closes early ends
    // the session before the request does).
    let fate = Fate {
        plan,
        client_vanished: false,
    };
    for (c, r) in sessions_of(plan, seen) {
        let want = &sent[&c.id];
        let took = seen.obs.client_read.get(&r.conn).copied().unwrap_or(0);
        let primary_ok = r.backends[0].outcome == Outcome::Ok;
        if primary_ok && c.vanish_after.is_none() && !fate.faulted(0) && took != want.len() as u64 {
            return Err(format!(
                "client {} sent {} bytes; its primary finished ok, but the proxy read {took} of them",
                c.id,
                want.len()
            ));
        }
        for b in &r.backends {
            let host = usize::from(b.backend.0);
            if b.outcome != Outcome::Ok || c.vanish_after.is_some() || fate.faulted(host) {
                continue;
            }
            let reads = read_by.get(&(host, c.id)).map(Vec::as_slice).unwrap_or(&[]);
            match reads {
                [one] if one.len() as u64 == took && b.bytes_sent == took => {}
                _ => {
                    return Err(format!(
                        "client {} sent {} bytes and the proxy read {took}; backend host {host} finished ok with {} bytes sent to it, and read {:?} on its connections for that client",
                        c.id,
                        want.len(),
                        b.bytes_sent,
                        reads.iter().map(|r| r.len()).collect::<Vec<_>>()
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Each report paired with the client it served (by the client's address), framed scenarios
/// only.
fn sessions_of<'a>(
    plan: &'a Plan,
    seen: &'a Observed,
) -> impl Iterator<Item = (&'a ClientPlan, &'a SessionReport)> + 'a {
    seen.obs.reports.iter().filter_map(move |r| {
        let id = seen
            .shared
            .clients
            .iter()
            .find(|(_, got)| got.addr.as_deref() == Some(r.client.as_str()))?
            .0;
        Some((plan.clients.iter().find(|c| c.id == *id)?, r))
    })
}

/// The report of the session that served client `got` (by its address), if one did.
fn report_for<'a>(seen: &'a Observed, got: &ClientResult) -> Option<&'a SessionReport> {
    let addr = got.addr.as_deref()?;
    seen.obs.reports.iter().find(|r| r.client == addr)
}

/// The drain oracle, for plans with a drain (see the module doc); without one, the engine
/// must never have said `Drained`.
fn drain(plan: &Plan, seen: &Observed) -> Result<(), String> {
    let obs = &seen.obs;
    let Some(&first) = obs.drains.first() else {
        return match obs.drained_at {
            Some(at) => Err(format!("Drained at {at:?} with no drain")),
            None if plan.drains() => Err("the planned drain was never fed".into()),
            None => Ok(()),
        };
    };
    let deadline = match obs.drains.get(1) {
        Some(&again) => again.min(first + plan.cfg.drain_timeout),
        None => first + plan.cfg.drain_timeout,
    };
    for (r, &at) in obs.reports.iter().zip(&obs.report_times) {
        if r.started > first {
            return Err(format!(
                "session {} was accepted at {:?}, after the drain began at {first:?}",
                r.conn.0, r.started
            ));
        }
        let cut = r
            .backends
            .iter()
            .any(|b| b.outcome == Outcome::DrainTimeout);
        if cut && at < deadline {
            return Err(format!(
                "session {} was cut drain-timeout at {at:?}, before the drain's deadline {deadline:?}",
                r.conn.0
            ));
        }
        if obs.drained_at.is_some_and(|d| at > d) {
            return Err(format!(
                "session {} was reported at {at:?}, after Drained at {:?}",
                r.conn.0, obs.drained_at
            ));
        }
    }
    // The deadline fires at the next tick of virtual time at the latest.
    let slack = std::time::Duration::from_millis(5);
    match obs.drained_at {
        None => Err(format!(
            "the drain began at {first:?} and never finished (deadline {deadline:?})"
        )),
        Some(at) if at > deadline + slack => Err(format!(
            "Drained at {at:?}, past the drain's deadline {deadline:?}"
        )),
        Some(_) => Ok(()),
    }
}

/// Quiescence: with every client gone and every deadline passed, nothing is held.
fn quiescence(seen: &Observed) -> Result<(), String> {
    if !seen.obs.engine_idle || seen.obs.sessions != 0 {
        return Err(format!(
            "the engine still holds {} sessions (idle: {})",
            seen.obs.sessions, seen.obs.engine_idle
        ));
    }
    if seen.effects.in_flight() > 0 {
        return Err(format!(
            "{} effects still in flight at the end",
            seen.effects.in_flight()
        ));
    }
    Ok(())
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
                    "client {} line {k} asked for its effect {} times",
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
            "client {} received {} bytes that differ from its {} expected at byte {at} (answer line {}): got {:?}",
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
        return Err(format!("client {} failed: {e}", c.id));
    }
    if !complete {
        return Err(format!(
            "client {} line {} is an ASK whose effect was never asked for",
            c.id,
            line_of(want.len())
        ));
    }
    if got.received.len() < want.len() {
        return Err(format!(
            "client {} received {} of its {} expected bytes ({} of {} answer lines)",
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
                "effect {} asked for {:?}, which no client sent",
                a.id.0,
                String::from_utf8_lossy(x)
            ));
        };
        let conn = *session_of.entry(c.id).or_insert(a.conn);
        let id = *client_of.entry(a.conn).or_insert(c.id);
        if conn != a.conn || id != c.id {
            return Err(format!(
                "effect {} for client {}'s line came from session {}, which is client {id}'s (client {} is session {})",
                a.id.0, c.id, a.conn.0, c.id, conn.0
            ));
        }
    }
    Ok(())
}

/// The report oracle (see the module doc).
fn check_reports(plan: &Plan, seen: &Observed) -> Result<(), String> {
    if seen.obs.reports.len() as u64 != seen.obs.accepted {
        return Err(format!(
            "{} sessions accepted but {} reported",
            seen.obs.accepted,
            seen.obs.reports.len()
        ));
    }
    let mut conns: Vec<ConnId> = seen.obs.reports.iter().map(|r| r.conn).collect();
    conns.sort();
    if let Some(w) = conns.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("session {} reported twice", w[0].0));
    }
    let framed = plan.effects.is_none();
    let clients: BTreeMap<ConnId, &ClientPlan> = if framed {
        sessions_of(plan, seen).map(|(c, r)| (r.conn, c)).collect()
    } else {
        BTreeMap::new()
    };
    for r in &seen.obs.reports {
        let client = clients.get(&r.conn).copied();
        if framed && client.is_none() {
            return Err(format!(
                "session {} names client address {}, which no client had",
                r.conn.0, r.client
            ));
        }
        if let Some(e) = &r.interceptor_error {
            return Err(format!(
                "session {} was closed for its interceptor: {e}",
                r.conn.0
            ));
        }
        if r.backends.len() != 1 + plan.secondaries.len() {
            return Err(format!(
                "session {} lists {} backends",
                r.conn.0,
                r.backends.len()
            ));
        }
        let primary = &r.backends[0];
        if primary.role != Role::Primary
            || r.backends[1..].iter().any(|b| b.role != Role::Secondary)
        {
            return Err(format!(
                "session {} does not list the primary first, then its secondaries",
                r.conn.0
            ));
        }
        let fate = Fate {
            plan,
            client_vanished: client.is_some_and(|c| c.vanish_after.is_some())
                || (!framed && plan.clients.iter().any(|c| c.vanish_after.is_some())),
        };
        for (i, b) in r.backends.iter().enumerate() {
            let kind = i.checked_sub(1).map(|k| plan.secondaries[k]);
            if !outcome_fits(&fate, i, kind, b) {
                return Err(format!(
                    "session {} backend {i} ({}) has outcome {}, which its host ({}) and client (vanished: {}) do not allow",
                    r.conn.0,
                    if i == 0 { "primary" } else { "secondary" },
                    b.outcome.as_str(),
                    kind.map_or("the primary".to_string(), |k| format!("{k:?}")),
                    fate.client_vanished
                ));
            }
            let sock = fanout_engine::SockId::backend(r.conn, b.backend);
            if b.outcome == Outcome::DetachedMemory
                && seen.obs.secondaries_closed.get(&sock) != Some(&true)
            {
                return Err(format!(
                    "session {} secondary detached-memory, but the secondaries could not have held more than the cap of {} bytes when it was closed",
                    r.conn.0, plan.cfg.secondary_memory
                ));
            }
        }
        if let Some(c) = client {
            check_answers(plan, seen, c, r)?;
        }
    }
    Ok(())
}

/// What a session's backends may have met.
struct Fate<'a> {
    plan: &'a Plan,
    client_vanished: bool,
}

impl Fate<'_> {
    /// Whether any fault struck backend host `i` (0 the primary, `n` secondary `n`).
    fn faulted(&self, i: usize) -> bool {
        let name = if i == 0 {
            "primary".to_string()
        } else {
            format!("secondary{i}")
        };
        debug_assert!(i != 1 || name == SECONDARY);
        self.plan.faults.iter().any(|(_, f)| f.names(&name))
    }

    fn crashed(&self, i: usize) -> bool {
        let name = if i == 0 {
            "primary".to_string()
        } else {
            format!("secondary{i}")
        };
        self.plan
            .faults
            .iter()
            .any(|(_, f)| matches!(f, Fault::Crash(h) if *h == name))
    }
}

/// Whether backend `i` (of `kind`, None for the primary) may end with `b.outcome`, given what
/// its host and its client did. One arm per outcome, no catch-all: a new outcome must be placed.
fn outcome_fits(fate: &Fate, i: usize, kind: Option<SecondaryKind>, b: &BackendReport) -> bool {
    use SecondaryKind::*;
    let faulted = fate.faulted(i);
    let secondary = kind.is_some();
    // A secondary that cannot keep up: only its budget, its deadline or the shared cap end it.
    let lags = matches!(kind, Some(NeverReads | SlowReader)) || (secondary && faulted);
    match b.outcome {
        Outcome::Ok => match kind {
            None | Some(Honest | Garbage | SlowReader) => true,
            Some(NeverReads) => b.bytes_sent == 0,
            Some(Resets) => false,
        },
        Outcome::Refused => faulted,
        Outcome::Reset => {
            faulted
                || kind == Some(Resets)
                || fate.client_vanished
                || (i == 0 && fate.plan.primary_closes_early)
        }
        Outcome::ConnectTimeout => faulted,
        Outcome::DetachedBudget | Outcome::DetachedDeadline => {
            lags || (secondary && fate.client_vanished)
        }
        Outcome::DetachedMemory => secondary,
        Outcome::IdleTimeout => faulted || fate.client_vanished || lags || fate.crashed(0),
        Outcome::ClientGone => fate.client_vanished,
        Outcome::DrainTimeout => fate.plan.drains(),
        Outcome::ClosedEarly | Outcome::InterceptorError | Outcome::NoDescriptors => false,
    }
}

/// For a framed session: every leg that finished `ok` reports the length and digest of what its
/// host wrote for this client; the comparison's verdict is what the hosts' bytes say.
fn check_answers(
    plan: &Plan,
    seen: &Observed,
    c: &ClientPlan,
    r: &SessionReport,
) -> Result<(), String> {
    let wrote = |i: usize| {
        seen.shared
            .answered
            .get(&(i, c.id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    for (i, b) in r.backends.iter().enumerate() {
        if b.outcome != Outcome::Ok {
            continue;
        }
        let w = wrote(i);
        let digest = xxhash_rust::xxh3::xxh3_64(w);
        if b.bytes_received != w.len() as u64 || b.digest != digest {
            return Err(format!(
                "session {} (client {}) backend {i} finished ok reporting {} bytes, digest {:016x}; its host wrote {}, digest {digest:016x}",
                r.conn.0,
                c.id,
                b.bytes_received,
                b.digest,
                w.len()
            ));
        }
    }
    let primary = &r.backends[0];
    for (k, s) in r.backends[1..].iter().enumerate() {
        if primary.outcome != Outcome::Ok || s.outcome != Outcome::Ok {
            continue;
        }
        let (p, w) = (wrote(0), wrote(k + 1));
        let first = p
            .iter()
            .zip(w)
            .position(|(a, b)| a != b)
            .map(|at| at as u64);
        let first = first.or((p.len() != w.len()).then(|| p.len().min(w.len()) as u64));
        let fits = match (first, s.matches_primary, s.first_difference) {
            (None, Some(true), None) => true,
            // The engine may stop comparing exactly (a backlog past the window) and judge by
            // length and digest alone: then it names no offset.
            (Some(at), Some(false), d) => d.is_none_or(|d| d == at),
            _ => false,
        };
        if !fits {
            return Err(format!(
                "session {} (client {}) secondary {} ({:?}) reported matches {:?}, first difference {:?}; the hosts' bytes differ first at {first:?}",
                r.conn.0,
                c.id,
                k + 1,
                plan.secondaries[k],
                s.matches_primary,
                s.first_difference
            ));
        }
    }
    Ok(())
}

/// The byte offset at which two arrival records first disagree on when a byte arrived, and
/// the two instants.
fn first_late_byte(
    a: &[(u64, Duration)],
    b: &[(u64, Duration)],
) -> Option<(u64, Duration, Duration)> {
    let (mut i, mut j, mut pos) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        let (ta, tb) = (a[i].1, b[j].1);
        if ta != tb {
            return Some((pos, ta, tb));
        }
        pos = a[i].0.min(b[j].0);
        if a[i].0 == pos {
            i += 1;
        }
        if b[j].0 == pos {
            j += 1;
        }
    }
    None
}

/// Secondary isolation: with and without the secondaries, every client receives the same bytes,
/// each at the same virtual instant, and finishes at the same instant.
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
                "client {} finished in only one of the twin runs",
                c.id
            ));
        };
        if a.received != b.received {
            return Err(format!(
                "client {} received {} bytes with the secondary, {} without",
                c.id,
                a.received.len(),
                b.received.len()
            ));
        }
        if let Some((at, ta, tb)) = first_late_byte(&a.arrivals, &b.arrivals) {
            return Err(format!(
                "client {}'s byte {at} arrived at {ta:?} with the secondary, {tb:?} without",
                c.id
            ));
        }
        if a.done_at != b.done_at {
            return Err(format!(
                "client {} finished at {:?} with the secondary, {:?} without",
                c.id, a.done_at, b.done_at
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::first_late_byte;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn isolation_sees_a_byte_that_arrives_late_though_the_stream_ends_on_time() {
        // Bytes 0..100 at 1 ms, 100..200 at 5 ms with the secondary; all at 1 and 5 ms without,
        // but split differently: the same arrivals, read in other pieces.
        let with = [(100, MS), (200, 5 * MS)];
        let same_split_otherwise = [(50, MS), (100, MS), (200, 5 * MS)];
        assert_eq!(first_late_byte(&with, &same_split_otherwise), None);
        // Byte 60 on arrives at 3 ms instead of 1 ms; the last byte still at 5 ms.
        let late = [(60, MS), (100, 3 * MS), (200, 5 * MS)];
        assert_eq!(first_late_byte(&late, &with), Some((60, 3 * MS, MS)));
    }

    #[test]
    fn isolation_compares_only_the_bytes_both_runs_received() {
        let short = [(10, MS)];
        let long = [(10, MS), (20, 2 * MS)];
        assert_eq!(first_late_byte(&short, &long), None);
    }
}
