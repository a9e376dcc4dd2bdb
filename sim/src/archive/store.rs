//! The store model: the archive's rows in memory, outside every host, so they outlive a proxy's
//! crash as a database's committed rows do. Each call takes a virtual latency drawn from the
//! run's seed, and commits at a seeded point of it: before the wait (the commit happened but a
//! crash, or the caller's end, may lose the answer) or after it (a crash during the wait loses
//! the transaction whole). During an outage every call fails.

use fanout_engine::archive::{Archive, Fault, NewJob, Row, RowState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// How the store behaves in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePlan {
    /// Latency of a call, uniform in `[lo, hi]` milliseconds.
    pub latency_ms: (u64, u64),
    /// Virtual-time windows `[from, to)` in which every call fails.
    pub outages: Vec<(Duration, Duration)>,
}

#[derive(Debug)]
struct Stored {
    job: NewJob,
    state: RowState,
    /// Claimed by `owner` until this many milliseconds.
    claim: Option<(String, i64)>,
}

/// The rows, and what the oracles need to know about the calls.
#[derive(Debug)]
pub struct Rows {
    rows: BTreeMap<i64, Stored>,
    next_row: i64,
    plan: StorePlan,
    rng: ChaCha8Rng,
    /// Calls that failed for an outage.
    pub refused: u64,
    /// The most rows held at once.
    pub peak: usize,
}

pub type RowsRef = Rc<RefCell<Rows>>;

impl Rows {
    pub fn new(plan: StorePlan, seed: u64) -> RowsRef {
        Rc::new(RefCell::new(Rows {
            rows: BTreeMap::new(),
            next_row: 1,
            plan,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5707e),
            refused: 0,
            peak: 0,
        }))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The bodies of the rows held now.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.rows.values().map(|s| s.job.body.clone()).collect()
    }

    fn down(&self) -> bool {
        let now = turmoil::sim_elapsed().unwrap_or_default();
        self.plan.outages.iter().any(|&(a, b)| a <= now && now < b)
    }
}

/// One proxy's connection to the store model.
pub struct SimArchive(pub RowsRef);

impl SimArchive {
    /// Waits the call's latency and applies `op` at its commit point, unless the store is down.
    async fn call<T>(&mut self, op: impl FnOnce(&mut Rows) -> T) -> Result<T, Fault> {
        let (latency, commit_first) = {
            let mut r = self.0.borrow_mut();
            let (lo, hi) = r.plan.latency_ms;
            let latency = Duration::from_millis(r.rng.random_range(lo..=hi));
            (latency, r.rng.random_bool(0.5))
        };
        let apply = |rows: &RowsRef| {
            let mut r = rows.borrow_mut();
            if r.down() {
                r.refused += 1;
                return Err(Fault("the store is unavailable".into()));
            }
            let out = op(&mut r);
            r.peak = r.peak.max(r.rows.len());
            Ok(out)
        };
        if commit_first {
            let out = apply(&self.0);
            tokio::time::sleep(latency).await;
            out
        } else {
            tokio::time::sleep(latency).await;
            apply(&self.0)
        }
    }
}

impl Archive for SimArchive {
    async fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, Fault> {
        self.call(|r| {
            jobs.iter()
                .map(|job| {
                    let row = r.next_row;
                    r.next_row += 1;
                    r.rows.insert(
                        row,
                        Stored {
                            job: job.clone(),
                            state: RowState::Pending,
                            claim: None,
                        },
                    );
                    row
                })
                .collect()
        })
        .await
    }

    async fn mark_archived(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.call(|r| {
            for row in rows {
                if let Some(s) = r.rows.get_mut(row) {
                    s.state = RowState::Archived;
                }
            }
        })
        .await
    }

    async fn remove(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.call(|r| {
            for row in rows {
                r.rows.remove(row);
            }
        })
        .await
    }

    async fn discard_pending(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.call(|r| {
            for row in rows {
                if r.rows
                    .get(row)
                    .is_some_and(|s| s.state == RowState::Pending)
                {
                    r.rows.remove(row);
                }
            }
        })
        .await
    }

    async fn pending(&mut self) -> Result<Vec<Row>, Fault> {
        self.call(|r| {
            r.rows
                .iter()
                .filter(|(_, s)| s.state == RowState::Pending)
                .map(|(&row, s)| Row {
                    row,
                    job: s.job.clone(),
                    state: s.state,
                })
                .collect()
        })
        .await
    }

    async fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, Fault> {
        let by = now_ms + lead.as_millis() as i64;
        let until = now_ms + hold.as_millis() as i64;
        self.call(|r| {
            let mut due: Vec<(i64, i64)> = r
                .rows
                .iter()
                .filter(|(_, s)| s.state == RowState::Archived && s.job.due_ms <= by)
                .filter(|(_, s)| match &s.claim {
                    Some((o, till)) => o == owner || *till <= now_ms,
                    None => true,
                })
                .map(|(&row, s)| (s.job.due_ms, row))
                .collect();
            due.sort_unstable();
            due.truncate(limit);
            due.into_iter()
                .map(|(_, row)| {
                    let s = r.rows.get_mut(&row).expect("listed");
                    s.claim = Some((owner.to_string(), until));
                    Row {
                        row,
                        job: s.job.clone(),
                        state: s.state,
                    }
                })
                .collect()
        })
        .await
    }
}
