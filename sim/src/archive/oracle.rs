//! What every archive run must show, judged from what producers heard, what the application's
//! worker took, and what is left at the horizon (by then every job is due and back).
//!
//! - **lost**: every job a producer heard `INSERTED` for was delivered.
//! - **early**: no job was delivered before its delay (counted from when the put was sent).
//! - **duplicates**: a job delivered twice only in a named crash window: at most one batch and
//!   one lost answer per proxy kill or server restart, none in a run without either.
//! - **answers**: every answer a producer heard is the model's `INSERTED <id>`, ids all
//!   different, and came within the network's cost (a slow or absent store stalls nobody).
//! - **archived**: with no fault that drops the queue or refuses it, every far job went through
//!   the store (the archiver did its job, the oracles above are not passed by doing nothing).
//! - **drained**: at the horizon nothing is left in beanstalkd or in the store.
//! - **contract**: the engine's contract checker found nothing.

use super::plan::{ArchivePlan, ArchiveScenario, ARCHIVE_AFTER};
use super::world::Outcome;
use std::collections::BTreeMap;
use std::time::Duration;

/// An answer slower than this is a stall: the network costs 4 ms a round trip through the proxy.
pub const STALL: Duration = Duration::from_millis(50);

/// One oracle's finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub oracle: &'static str,
    pub detail: String,
}

fn fail(out: &mut Vec<Failure>, oracle: &'static str, detail: String) {
    out.push(Failure { oracle, detail });
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Judges one run.
pub fn check(plan: &ArchivePlan, o: &Outcome) -> Vec<Failure> {
    let mut out = Vec::new();
    if let Some(e) = &o.sim_error {
        fail(&mut out, "simulation", e.clone());
    }
    let mut delivered: BTreeMap<&[u8], Vec<Duration>> = BTreeMap::new();
    for d in &o.deliveries {
        delivered.entry(&d.body).or_default().push(d.at);
    }
    let mut ids = BTreeMap::new();
    for p in &o.puts {
        let got = delivered.get(&p.body[..]);
        if let Some((line, at)) = &p.answer {
            let id = line
                .strip_prefix("INSERTED ")
                .and_then(|n| n.parse::<u64>().ok());
            match id {
                None => fail(
                    &mut out,
                    "answers",
                    format!("{}: answered {line:?}", text(&p.body)),
                ),
                Some(id) => {
                    if let Some(other) = ids.insert(id, &p.body) {
                        fail(
                            &mut out,
                            "answers",
                            format!("{} and {} both heard id {id}", text(other), text(&p.body)),
                        );
                    }
                }
            }
            if *at - p.sent_at > STALL {
                fail(
                    &mut out,
                    "answers",
                    format!("{}: answered after {:?}", text(&p.body), *at - p.sent_at),
                );
            }
            if got.is_none() {
                let place = if o.left_in_store.contains(&p.body) {
                    "its row is still in the store"
                } else {
                    "it is nowhere"
                };
                fail(
                    &mut out,
                    "lost",
                    format!(
                        "{} was INSERTED and never delivered: {place}",
                        text(&p.body)
                    ),
                );
            }
        }
        let due = p.sent_at + Duration::from_secs(p.delay.into());
        for &at in got.into_iter().flatten() {
            if at < due {
                fail(
                    &mut out,
                    "early",
                    format!(
                        "{} (delay {} s) delivered at {at:?}, {:?} before it was due",
                        text(&p.body),
                        p.delay,
                        due - at
                    ),
                );
            }
        }
    }
    let extra: usize = delivered.values().map(|v| v.len() - 1).sum();
    let allowed = plan.crash_windows() * (plan.batch + 1);
    if extra > allowed {
        let twice: Vec<String> = delivered
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .take(5)
            .map(|(b, v)| format!("{} ×{}", text(b), v.len()))
            .collect();
        fail(
            &mut out,
            "duplicates",
            format!(
                "{extra} duplicate deliveries, {allowed} allowed ({} crash windows × batch {} + 1): {}",
                plan.crash_windows(),
                plan.batch,
                twice.join(", ")
            ),
        );
    }
    let far = o
        .puts
        .iter()
        .filter(|p| p.answer.is_some() && p.delay >= ARCHIVE_AFTER)
        .count() as u64;
    if plan.scenario == ArchiveScenario::Healthy && o.archived != far {
        fail(
            &mut out,
            "archived",
            format!("{far} far jobs were put, {} archived", o.archived),
        );
    }
    if o.left_in_server != 0 || !o.left_in_store.is_empty() {
        fail(
            &mut out,
            "drained",
            format!(
                "at the horizon beanstalkd holds {} jobs and the store {} rows",
                o.left_in_server,
                o.left_in_store.len()
            ),
        );
    }
    for v in o.violations.iter().take(5) {
        fail(&mut out, "contract", v.clone());
    }
    out
}
