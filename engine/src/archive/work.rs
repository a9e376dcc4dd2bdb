//! The archiver's two background loops, each run by a driver on a [`Worker`] of its own:
//!
//! - [`archiving`] takes queued jobs in batches: commits them to the store as `pending` rows (one
//!   transaction), deletes each from beanstalkd, and marks the rows `archived`. A job beanstalkd
//!   no longer has at that delete is archived all the same (duplicate window 2 in
//!   `docs/BEANSTALKD.md`). Before its first batch, and after every reconnection, it settles the
//!   `pending` rows a crash left.
//! - [`reinjecting`] claims archived rows due within the lead, puts each back into its tube with
//!   its priority, ttr and the delay that remains (rounded up, so never early), then removes the
//!   rows.
//!
//! Both drop a link that failed, back off (100 ms doubling to 5 s) and retry; neither ever drops
//! a job: the store commit comes before the delete from beanstalkd, and the put back before the
//! row's removal.

use super::ports::{Archive, Fault, Host, Level, Queue, Server};
use super::records::{Job, NewJob};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The loops' knobs (the `fanout beanstalkd` flags of the same names).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Jobs per store transaction, and rows per claim.
    pub batch: usize,
    /// Re-inject jobs due within this long.
    pub lead: Duration,
    /// How often the re-injector looks for due jobs when it found none.
    pub every: Duration,
    /// How long a claim keeps other proxies off its rows.
    pub claim: Duration,
    /// Names this proxy's claims.
    pub owner: String,
    /// How often the re-injection loop logs the counters.
    pub stats_every: Duration,
    /// A deliberate bug (the simulator's self-test).
    #[cfg(feature = "sim-mutants")]
    pub mutant: Option<super::ArchiveMutant>,
}

/// Whether the deliberate bug `$m` is on (never, without the `sim-mutants` feature).
#[cfg(feature = "sim-mutants")]
macro_rules! mutant {
    ($settings:expr, $m:ident) => {
        $settings.mutant == Some(super::ArchiveMutant::$m)
    };
}
#[cfg(not(feature = "sim-mutants"))]
macro_rules! mutant {
    ($settings:expr, $m:ident) => {
        false
    };
}

/// What the archiver has done so far, shared by its loops and its executor.
#[derive(Debug, Default)]
pub struct Counters {
    pub queued: AtomicU64,
    pub refused: AtomicU64,
    pub archived: AtomicU64,
    /// Jobs beanstalkd no longer had when the archiver came to delete them (archived all the
    /// same).
    pub gone: AtomicU64,
    pub reinjected: AtomicU64,
    pub failures: AtomicU64,
}

impl Counters {
    /// The counters as one log line.
    pub fn line(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "archive: queued {} refused {} archived {} gone {} re-injected {} failures {}",
            n(&self.queued),
            n(&self.refused),
            n(&self.archived),
            n(&self.gone),
            n(&self.reinjected),
            n(&self.failures)
        )
    }
}

/// How far the batch in hand got.
#[derive(Clone, Debug)]
enum InHand {
    /// Committed as pending rows (row, id in beanstalkd), ids given by server process `of`.
    Committed { of: String, rows: Vec<(i64, u64)> },
    /// Deleted from beanstalkd: the rows whose jobs it deleted go archived, the rows of jobs it
    /// no longer had go (unless settled meanwhile).
    Deleted { left: Vec<i64>, gone: Vec<i64> },
}

/// Why a batch could not be finished: which link to drop.
enum Trouble {
    Store(Fault),
    Server(Fault),
}

/// One loop's links (a store and a beanstalkd connection, each opened when first needed and
/// dropped when it fails) and its host.
pub struct Worker<'c, H: Host> {
    pub host: H,
    settings: Settings,
    counters: &'c Counters,
    store: Option<H::Archive>,
    server: Option<(H::Server, String)>,
    backoff: Duration,
    /// The batch in hand once the store committed it: a retry after a later step failed goes
    /// on from where that one stopped, never commits or deletes twice.
    in_hand: Option<InHand>,
    /// Jobs settled rows left in beanstalkd (the rows are archived first), with the server
    /// process that holds them: deleted before anything else, retried until done.
    unsettled: Option<(String, Vec<u64>)>,
    /// Rows put back into beanstalkd whose removal from the store failed: removed before
    /// anything is claimed again, never put back twice (this loop claims its own rows again).
    put_back: Vec<i64>,
}

impl<H: Host> std::fmt::Debug for Worker<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("settings", &self.settings)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const LAST_BACKOFF: Duration = Duration::from_secs(5);

impl<'c, H: Host> Worker<'c, H> {
    pub fn new(host: H, settings: Settings, counters: &'c Counters) -> Self {
        Worker {
            host,
            settings,
            counters,
            store: None,
            server: None,
            backoff: FIRST_BACKOFF,
            in_hand: None,
            unsettled: None,
            put_back: Vec::new(),
        }
    }

    async fn store(&mut self) -> Result<&mut H::Archive, Trouble> {
        if self.store.is_none() {
            self.store = Some(self.host.open_archive().await.map_err(Trouble::Store)?);
        }
        Ok(self.store.as_mut().expect("just opened"))
    }

    /// The connection and the server process's id; `fresh` says it was just opened.
    async fn server(&mut self) -> Result<(&mut H::Server, String, bool), Trouble> {
        let fresh = self.server.is_none();
        if fresh {
            self.server = Some(self.host.connect().await.map_err(Trouble::Server)?);
        }
        let (c, instance) = self.server.as_mut().expect("just opened");
        Ok((c, instance.clone(), fresh))
    }

    /// Something failed: drop both links and wait, longer each time in a row.
    async fn failed(&mut self, what: &str, trouble: Trouble) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let e = match trouble {
            Trouble::Store(e) => format!("archive store: {e}"),
            Trouble::Server(e) => format!("beanstalkd: {e}"),
        };
        let wait = self.backoff;
        self.host.log(
            Level::Warn,
            format_args!("{what}: {e}; retrying in {wait:?}"),
        );
        self.store = None;
        self.server = None;
        self.host.sleep(wait).await;
        self.backoff = (wait * 2).min(LAST_BACKOFF);
    }

    fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// Settles the pending rows a crash left (on a fresh connection), then archives `batch`
    /// (possibly empty): commits it, deletes it from beanstalkd, marks it archived. Called again
    /// with the same batch after a failure, it goes on where that one stopped.
    async fn archive(&mut self, batch: &[Job]) -> Result<(), Trouble> {
        let (_, instance, fresh) = self.server().await?;
        if fresh {
            self.settle(&instance).await?;
        }
        if let Some((of, ids)) = self.unsettled.clone() {
            // Ids of another server process name other jobs here (or none): window 3.
            if of == instance {
                let (c, _, _) = self.server().await?;
                c.delete_all(&ids).await.map_err(Trouble::Server)?;
            }
            self.unsettled = None;
        }
        if self.in_hand.is_none() && !batch.is_empty() && mutant!(self.settings, DeleteBeforeCommit)
        {
            let ids: Vec<u64> = batch.iter().map(Job::id).collect();
            let (c, _, _) = self.server().await?;
            c.delete_all(&ids).await.map_err(Trouble::Server)?;
            let rows = self.commit(batch, &instance).await?;
            self.in_hand = Some(InHand::Deleted {
                left: rows.iter().map(|&(row, _)| row).collect(),
                gone: Vec::new(),
            });
        }
        if self.in_hand.is_none() && !batch.is_empty() {
            let rows = self.commit(batch, &instance).await?;
            self.in_hand = Some(InHand::Committed {
                of: instance.clone(),
                rows,
            });
        }
        if let Some(InHand::Committed { of, rows }) = self.in_hand.clone() {
            self.in_hand = Some(if of == instance {
                self.delete_from_server(&rows).await?
            } else {
                // Committed under a server process that has since restarted: its ids name
                // other jobs (or none) here; the rows are archived as they are (window 3).
                InHand::Deleted {
                    left: rows.iter().map(|&(row, _)| row).collect(),
                    gone: Vec::new(),
                }
            });
        }
        if let Some(InHand::Deleted { left, gone }) = self.in_hand.clone() {
            let store = self.store().await?;
            if !left.is_empty() {
                store.mark_archived(&left).await.map_err(Trouble::Store)?;
            }
            if !gone.is_empty() {
                store.discard_pending(&gone).await.map_err(Trouble::Store)?;
            }
            self.counters
                .archived
                .fetch_add(left.len() as u64, Ordering::Relaxed);
            self.counters
                .gone
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            self.in_hand = None;
        }
        Ok(())
    }

    /// Commits `batch` as pending rows: the row ids, with each job's id in beanstalkd.
    async fn commit(&mut self, batch: &[Job], instance: &str) -> Result<Vec<(i64, u64)>, Trouble> {
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                Job::Put {
                    id,
                    pri,
                    delay,
                    ttr,
                    tube,
                    body,
                    queued_ms,
                } => jobs.push(NewJob {
                    tube: tube.clone(),
                    pri: *pri,
                    ttr: *ttr,
                    due_ms: queued_ms + i64::from(*delay) * 1000,
                    body: body.clone(),
                    server_id: *id,
                    server_instance: instance.to_string(),
                }),
                Job::Release {
                    id,
                    pri,
                    delay,
                    queued_ms,
                } => {
                    let (c, _, _) = self.server().await?;
                    let stats = c.stats_job(*id).await.map_err(Trouble::Server)?;
                    let body = c.peek(*id).await.map_err(Trouble::Server)?;
                    match (stats, body) {
                        (Some(s), Some(body)) if s.state == "delayed" => jobs.push(NewJob {
                            tube: s.tube,
                            pri: *pri,
                            ttr: s.ttr,
                            due_ms: queued_ms + i64::from(*delay) * 1000,
                            body,
                            server_id: *id,
                            server_instance: instance.to_string(),
                        }),
                        // Gone, or no longer delayed (kicked, reserved): not ours to take.
                        _ => {
                            self.counters.gone.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        let ids: Vec<u64> = jobs.iter().map(|j| j.server_id).collect();
        let rows = self
            .store()
            .await?
            .insert(&jobs)
            .await
            .map_err(Trouble::Store)?;
        Ok(rows.into_iter().zip(ids).collect())
    }

    /// The rows are committed: delete their jobs from beanstalkd (pipelined). The rows of the
    /// jobs it deleted are then marked archived. A job beanstalkd no longer had was deleted by a
    /// client or taken by a worker (it came due while the batch was on its way): its row goes,
    /// unless another proxy sharing the store settled it meanwhile (then the row is archived,
    /// that proxy deleted the job, and the row is its only copy: it stays).
    async fn delete_from_server(&mut self, rows: &[(i64, u64)]) -> Result<InHand, Trouble> {
        let ids: Vec<u64> = rows.iter().map(|&(_, id)| id).collect();
        let (c, _, _) = self.server().await?;
        let deleted = c.delete_all(&ids).await.map_err(Trouble::Server)?;
        let (mut left, mut gone) = (Vec::new(), Vec::new());
        for (&(row, _), deleted) in rows.iter().zip(deleted) {
            match deleted {
                true => left.push(row),
                false => gone.push(row),
            }
        }
        Ok(InHand::Deleted { left, gone })
    }

    /// Pending rows (committed; the job may still be in beanstalkd), after a crash or on a
    /// proxy that just started beside others: each is marked archived first, then, on the same
    /// server process, its job is deleted. Marked first, so a proxy whose batch this is and
    /// whose delete finds the job gone keeps the row. The price, in crash windows only: a job a
    /// client deleted or a worker took before the settling comes back (window 2); a row from
    /// another server process is archived as it is, its job maybe still there (window 3).
    async fn settle(&mut self, instance: &str) -> Result<(), Trouble> {
        let mut pending = self
            .store()
            .await?
            .pending()
            .await
            .map_err(Trouble::Store)?;
        // The batch in hand is this loop's own, not a crash's: its retry finishes it.
        match &self.in_hand {
            Some(InHand::Committed { rows, .. }) => {
                pending.retain(|r| !rows.iter().any(|&(row, _)| row == r.row));
            }
            Some(InHand::Deleted { left, gone }) => {
                pending.retain(|r| !left.contains(&r.row) && !gone.contains(&r.row));
            }
            None => {}
        }
        if pending.is_empty() {
            return Ok(());
        }
        self.host.log(
            Level::Info,
            format_args!("settling {} pending archive rows", pending.len()),
        );
        let rows: Vec<i64> = pending.iter().map(|r| r.row).collect();
        self.store()
            .await?
            .mark_archived(&rows)
            .await
            .map_err(Trouble::Store)?;
        let ids: Vec<u64> = pending
            .iter()
            .filter(|r| r.job.server_instance == instance)
            .map(|r| r.job.server_id)
            .collect();
        self.unsettled = Some((instance.to_string(), ids));
        Ok(())
    }

    /// Removes the rows put back into beanstalkd. They stay listed until the store confirms, so
    /// a failed removal is retried before the next claim, never put back twice.
    async fn remove_put_back(&mut self) -> Result<(), Trouble> {
        if self.put_back.is_empty() {
            return Ok(());
        }
        let rows = self.put_back.clone();
        self.store()
            .await?
            .remove(&rows)
            .await
            .map_err(Trouble::Store)?;
        self.put_back.clear();
        Ok(())
    }

    /// Puts one claimed batch of due rows back; how many.
    async fn reinject_due(&mut self) -> Result<usize, Trouble> {
        self.remove_put_back().await?;
        let now = self.host.now_ms();
        let s = self.settings.clone();
        let rows = self
            .store()
            .await?
            .claim_due(&s.owner, now, s.lead, s.claim, s.batch)
            .await
            .map_err(Trouble::Store)?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Rows put back are removed even when a later put fails, so no row goes back twice for
        // anything short of a crash between a put and this removal (duplicate window 1).
        let mut done = Vec::with_capacity(rows.len());
        let mut trouble = None;
        match self.server().await.map(|_| ()) {
            Err(t) => trouble = Some(t),
            Ok(()) => {
                let (c, _) = self.server.as_mut().expect("connected");
                for row in &rows {
                    let left_ms = (row.job.due_ms - self.host.now_ms()).max(0);
                    let mut left = u32::try_from((left_ms + 999) / 1000).unwrap_or(u32::MAX);
                    if mutant!(s, ReinjectWithoutDelay) {
                        left = 0;
                    }
                    let put = match c.use_tube(&row.job.tube).await {
                        Ok(()) => c.put(row.job.pri, left, row.job.ttr, &row.job.body).await,
                        Err(e) => Err(e),
                    };
                    match put {
                        Ok(_) => done.push(row.row),
                        Err(e) => {
                            trouble = Some(Trouble::Server(e));
                            break;
                        }
                    }
                }
            }
        }
        let n = done.len();
        self.counters
            .reinjected
            .fetch_add(n as u64, Ordering::Relaxed);
        if !done.is_empty() && !mutant!(s, ReinjectKeepsRows) {
            self.put_back = done;
            self.remove_put_back().await?;
        }
        match trouble {
            Some(t) => Err(t),
            None => Ok(n),
        }
    }
}

/// The archiving loop: until the host stops or the queue closes, archives what the queue hands
/// over, a batch at a time, retrying a batch until it is done.
pub async fn archiving<H: Host, Q: Queue>(w: &mut Worker<'_, H>, queue: &mut Q) {
    let mut batch: Vec<Job> = Vec::new();
    while !w.host.stopping() {
        if batch.is_empty() {
            match queue.next(w.settings.batch).await {
                Some(jobs) => batch = jobs,
                None => return,
            }
        }
        match w.archive(&batch).await {
            Ok(()) => {
                batch.clear();
                w.succeeded();
            }
            Err(t) => w.failed("archiving", t).await,
        }
    }
}

/// The re-injection loop: until the host stops, puts due rows back, looking again every
/// `settings.every` when none were due, and logs the counters every `settings.stats_every`.
pub async fn reinjecting<H: Host>(w: &mut Worker<'_, H>) {
    let mut logged = w.host.now_ms();
    while !w.host.stopping() {
        let now = w.host.now_ms();
        if now - logged >= w.settings.stats_every.as_millis() as i64 {
            logged = now;
            let line = w.counters.line();
            w.host.log(Level::Info, format_args!("{line}"));
        }
        match w.reinject_due().await {
            Ok(0) => {
                w.succeeded();
                let every = w.settings.every;
                w.host.sleep(every).await;
            }
            Ok(_) => w.succeeded(),
            Err(t) => w.failed("re-injecting", t).await,
        }
    }
}
