//! The properties every run must satisfy. Each check returns the first violation as one line
//! naming the property.

use crate::run::Observed;
use crate::scenario::{Plan, SecondaryKind};
use fanout_engine::{Outcome, Role};

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
    if let Some(v) = seen.obs.violations.first() {
        return Err(format!("invariant: {v}"));
    }
    for c in &plan.clients {
        let Some(got) = seen.shared.clients.get(&c.id) else {
            return Err(format!("liveness: client {} never finished", c.id));
        };
        if got.vanished {
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
    check_reports(plan, seen)
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
        for (s, kind) in r.backends[1..].iter().zip(&plan.secondaries) {
            let ok = s.outcome == Outcome::Ok;
            let fits = match kind {
                SecondaryKind::NeverReads => {
                    // It can only finish by being cut loose (or if it was sent nothing at all).
                    matches!(
                        s.outcome,
                        Outcome::DetachedBudget | Outcome::DetachedDeadline | Outcome::ClosedEarly
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
