//! The archiver's effects and its two background threads.
//!
//! - [`ArchiveExecutor`] answers the interceptor's effects by queueing the job (bounded: past
//!   `queue` jobs an effect is refused and that job simply stays in beanstalkd).
//! - The **archiving thread** takes queued jobs in batches: commits them to the store as
//!   `pending` rows (one transaction), deletes each from beanstalkd on its own connection, and
//!   marks the rows `archived` (or removes a row whose job beanstalkd no longer has for it: a
//!   worker reserved or deleted it meanwhile). Before its first batch, and after every
//!   reconnection, it settles the `pending` rows a crash left (see `docs/BEANSTALKD.md`).
//! - The **re-injection thread** claims archived rows due within `lead`, puts each back into
//!   its tube with its priority, ttr and the delay that remains, then deletes the rows.
//!
//! Both threads open their own store and their own beanstalkd connection, retry with back-off
//! when either is unavailable, and stop when the executor is dropped.

use super::client::{Client, ClientError};
use super::store::{NewJob, Store, StoreError, StoreUrl};
use crate::effects::Executor;
use fanout_engine::{EffectError, EffectRequest, EffectResult};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the archiver's threads run.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub server: String,
    pub store: StoreUrl,
    /// Jobs waiting for the archiving thread, whole.
    pub queue: usize,
    /// Past `queue`, jobs kept by id only (16 bytes each), read back from beanstalkd once the
    /// queue drained; past this many too, a job is refused and stays in beanstalkd.
    pub overflow: usize,
    /// Jobs per store transaction.
    pub batch: usize,
    /// Re-inject jobs due within this long.
    pub lead: Duration,
    /// How often the re-injector looks for due jobs.
    pub every: Duration,
    /// How long a re-injector's claim keeps other proxies off its rows.
    pub claim: Duration,
    /// Timeout of every call to beanstalkd.
    pub timeout: Duration,
    /// Names this proxy's claims.
    pub owner: String,
}

/// What the archiver has done so far (logged periodically).
#[derive(Debug, Default)]
pub struct Counters {
    pub queued: AtomicU64,
    pub refused: AtomicU64,
    pub archived: AtomicU64,
    /// Jobs beanstalkd no longer had when the archiver came to delete them (archived all the
    /// same; see `delete_from_server`).
    pub gone: AtomicU64,
    pub reinjected: AtomicU64,
    pub failures: AtomicU64,
}

/// How often the re-injection thread logs the counters.
const STATS_EVERY: Duration = Duration::from_secs(10);

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

/// The jobs the queue had no room for, shared by the executor and the archiving thread.
type Overflow = Arc<std::sync::Mutex<std::collections::VecDeque<Job>>>;

/// A job on its way to the archive.
#[derive(Debug)]
enum Job {
    /// From a put: everything known but the due time, which counts from now.
    Put {
        id: u64,
        pri: u32,
        delay: u32,
        ttr: u32,
        tube: String,
        body: Vec<u8>,
        queued_ms: i64,
    },
    /// From a release: tube, ttr and body are read from beanstalkd.
    Release {
        id: u64,
        pri: u32,
        delay: u32,
        queued_ms: i64,
    },
}

impl Job {
    /// The job by its id alone: what is needed to read it back from beanstalkd (as a release).
    fn by_id(self) -> Job {
        match self {
            Job::Put {
                id,
                pri,
                delay,
                queued_ms,
                ..
            } => Job::Release {
                id,
                pri,
                delay,
                queued_ms,
            },
            release => release,
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The jobs of an archive effect's payload (see [`super::archiver::ARCHIVE`]); `None` if it is
/// not one.
fn parse(request: &EffectRequest) -> Option<Vec<Job>> {
    if request.kind != super::archiver::ARCHIVE {
        return None;
    }
    let queued_ms = now_ms();
    let mut p = &request.payload[..];
    let mut jobs = Vec::new();
    while !p.is_empty() {
        let nl = p.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&p[..nl]).ok()?;
        p = &p[nl + 1..];
        let mut w = head.split(' ');
        let mut num = || w.next()?.parse::<u64>().ok();
        match head.as_bytes().first() {
            Some(b'P') => {
                let _ = num(); // the record's letter
                let (id, pri, delay, ttr) = (num()?, num()? as u32, num()? as u32, num()? as u32);
                let mut w = head.rsplitn(3, ' ');
                let len: usize = w.next()?.parse().ok()?;
                let tube = w.next()?.to_string();
                let body = p.get(..len)?.to_vec();
                p = &p[len..];
                jobs.push(Job::Put {
                    id,
                    pri,
                    delay,
                    ttr,
                    tube,
                    body,
                    queued_ms,
                });
            }
            Some(b'R') => {
                let _ = num();
                jobs.push(Job::Release {
                    id: num()?,
                    pri: num()? as u32,
                    delay: num()? as u32,
                    queued_ms,
                });
            }
            _ => return None,
        }
    }
    Some(jobs)
}

/// The effect executor and its threads.
pub struct ArchiveExecutor {
    tx: SyncSender<Job>,
    /// Jobs the queue had no room for, by id only, oldest first.
    overflow: Overflow,
    overflow_max: usize,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ArchiveExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveExecutor")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ArchiveExecutor {
    /// Opens the store once (so a bad `--store` fails at start), then starts both threads.
    pub fn start(cfg: ArchiveConfig) -> Result<ArchiveExecutor, StoreError> {
        drop(cfg.store.open()?);
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let overflow: Overflow = Arc::default();
        let overflow_max = cfg.overflow;
        let archiving = {
            let (cfg, counters, stop) = (cfg.clone(), counters.clone(), stop.clone());
            let overflow = overflow.clone();
            std::thread::Builder::new()
                .name("archive".into())
                .spawn(move || Archiving::new(cfg, counters, stop).run(rx, &overflow))
                .map_err(|e| StoreError(format!("cannot start the archiving thread: {e}")))?
        };
        let reinjecting = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("reinject".into())
                .spawn(move || reinject(cfg, counters, stop))
                .map_err(|e| StoreError(format!("cannot start the re-injection thread: {e}")))?
        };
        Ok(ArchiveExecutor {
            tx,
            overflow,
            overflow_max,
            counters,
            stop,
            threads: vec![archiving, reinjecting],
        })
    }
}

impl Drop for ArchiveExecutor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Executor for ArchiveExecutor {
    fn execute(&self, request: &EffectRequest) -> EffectResult {
        let Some(jobs) = parse(request) else {
            return Err(EffectError::Failed(
                format!("not an archive request: {}", request.kind).into(),
            ));
        };
        let (mut queued, mut refused) = (0u64, 0u64);
        for job in jobs {
            match self.tx.try_send(job) {
                Ok(()) => queued += 1,
                // The queue is full: keep just the job's id (it stays in beanstalkd), to read it
                // back from there once the queue has room, up to the overflow's bound.
                Err(TrySendError::Full(job)) => {
                    let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
                    if overflow.len() < self.overflow_max {
                        overflow.push_back(job.by_id());
                        queued += 1;
                    } else {
                        refused += 1;
                    }
                }
                Err(TrySendError::Disconnected(_)) => refused += 1,
            }
        }
        self.counters.queued.fetch_add(queued, Ordering::Relaxed);
        self.counters.refused.fetch_add(refused, Ordering::Relaxed);
        match refused {
            0 => Ok(fanout_engine::Bytes::from(format!("queued {queued}"))),
            _ => Err(EffectError::Unavailable(
                format!("archive queue full: {refused} jobs left in beanstalkd").into(),
            )),
        }
    }
}

/// A store and a beanstalkd connection, each (re)opened when needed.
struct Links {
    cfg: ArchiveConfig,
    store: Option<Box<dyn Store>>,
    server: Option<(Client, String)>,
    backoff: Duration,
}

impl Links {
    fn new(cfg: ArchiveConfig) -> Links {
        Links {
            cfg,
            store: None,
            server: None,
            backoff: Duration::from_millis(100),
        }
    }

    fn store(&mut self) -> Result<&mut Box<dyn Store>, StoreError> {
        if self.store.is_none() {
            self.store = Some(self.cfg.store.open()?);
        }
        Ok(self.store.as_mut().expect("just opened"))
    }

    /// The connection and the server process's `stats` id; `fresh` says it was just opened.
    fn server(&mut self) -> Result<(&mut Client, String, bool), ClientError> {
        let fresh = self.server.is_none();
        if fresh {
            let mut c = Client::connect(self.cfg.server.as_str(), self.cfg.timeout)?;
            let instance = c
                .stats()?
                .into_iter()
                .find(|(k, _)| k == "id")
                .map(|(_, v)| v)
                .unwrap_or_default();
            self.server = Some((c, instance));
        }
        let (c, i) = self.server.as_mut().expect("just opened");
        Ok((c, i.clone(), fresh))
    }

    /// Something failed: drop both links (they reopen on the next use) and wait a little,
    /// longer each time in a row (up to 5 s).
    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display, counters: &Counters) {
        counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{what}: {e}; retrying in {:?}", self.backoff);
        self.store = None;
        self.server = None;
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::from_millis(100);
    }
}

struct Archiving {
    links: Links,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

/// Why a batch could not be finished.
enum Trouble {
    Store(StoreError),
    Server(ClientError),
}

impl Archiving {
    fn new(cfg: ArchiveConfig, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Self {
        Archiving {
            links: Links::new(cfg),
            counters,
            stop,
        }
    }

    fn run(mut self, rx: Receiver<Job>, overflow: &Overflow) {
        let mut batch: Vec<Job> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if batch.is_empty() {
                while batch.len() < self.links.cfg.batch {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // The queue is drained: jobs it had no room for, read back from beanstalkd.
                if batch.is_empty() {
                    let mut o = overflow.lock().unwrap_or_else(|e| e.into_inner());
                    let n = o.len().min(self.links.cfg.batch);
                    batch.extend(o.drain(..n));
                }
                if batch.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(job) => batch.push(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            match self.archive(&batch) {
                Ok(()) => {
                    batch.clear();
                    self.links.succeeded();
                }
                Err(Trouble::Store(e)) => self.links.failed("archive store", &e, &self.counters),
                Err(Trouble::Server(e)) => self.links.failed("archiving", &e, &self.counters),
            }
        }
    }

    /// Settles the pending rows a crash left, then archives `batch` (possibly empty).
    fn archive(&mut self, batch: &[Job]) -> Result<(), Trouble> {
        let (_, instance, fresh) = self.links.server().map_err(Trouble::Server)?;
        if fresh {
            self.settle(&instance)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
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
                    server_instance: instance.clone(),
                }),
                Job::Release {
                    id,
                    pri,
                    delay,
                    queued_ms,
                } => {
                    let (c, _, _) = self.links.server().map_err(Trouble::Server)?;
                    let stats = c.stats_job(*id).map_err(Trouble::Server)?;
                    let body = c.peek(*id).map_err(Trouble::Server)?;
                    match (stats, body) {
                        (Some(s), Some(body)) if s.state == "delayed" => jobs.push(NewJob {
                            tube: s.tube,
                            pri: *pri,
                            ttr: s.ttr,
                            due_ms: queued_ms + i64::from(*delay) * 1000,
                            body,
                            server_id: *id,
                            server_instance: instance.clone(),
                        }),
                        // Gone, or no longer delayed (kicked, reserved): not ours to take.
                        _ => {
                            self.counters.gone.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        let rows = self
            .links
            .store()
            .map_err(Trouble::Store)?
            .insert(&jobs)
            .map_err(Trouble::Store)?;
        let pairs: Vec<(i64, u64)> = rows
            .into_iter()
            .zip(jobs.iter().map(|j| j.server_id))
            .collect();
        self.delete_from_server(&pairs)
    }

    /// The rows are committed: delete their jobs from beanstalkd (pipelined), then mark them
    /// archived. A job beanstalkd no longer has is archived all the same: another proxy sharing
    /// the store may have settled (and deleted) it while this batch was in flight, and dropping
    /// the row would lose it; the price is a duplicate for a job a worker kicked and took in that
    /// instant (named window 2 in docs/BEANSTALKD.md).
    fn delete_from_server(&mut self, rows: &[(i64, u64)]) -> Result<(), Trouble> {
        let (mut left, mut gone) = (Vec::new(), Vec::new());
        {
            let (c, _, _) = self.links.server().map_err(Trouble::Server)?;
            let ids: Vec<u64> = rows.iter().map(|&(_, id)| id).collect();
            let deleted = c.delete_all(&ids).map_err(Trouble::Server)?;
            for (&(row, _), deleted) in rows.iter().zip(deleted) {
                match deleted {
                    true => left.push(row),
                    false => gone.push(row),
                }
            }
        }
        let store = self.links.store().map_err(Trouble::Store)?;
        store.mark_archived(&left).map_err(Trouble::Store)?;
        store.mark_archived(&gone).map_err(Trouble::Store)?;
        self.counters
            .archived
            .fetch_add(left.len() as u64, Ordering::Relaxed);
        self.counters
            .gone
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Pending rows (committed; the job may still be in beanstalkd): on the same server
    /// process, a job still there is deleted now and one not there counts as deleted (named
    /// duplicate window 2); a row from another server process is archived as it is (window 3).
    fn settle(&mut self, instance: &str) -> Result<(), Trouble> {
        let pending = self
            .links
            .store()
            .map_err(Trouble::Store)?
            .pending()
            .map_err(Trouble::Store)?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!("settling {} pending archive rows", pending.len());
        let mut archived = Vec::new();
        {
            let (c, _, _) = self.links.server().map_err(Trouble::Server)?;
            for row in &pending {
                if row.job.server_instance == instance {
                    c.delete(row.job.server_id).map_err(Trouble::Server)?;
                }
                archived.push(row.row);
            }
        }
        self.links
            .store()
            .map_err(Trouble::Store)?
            .mark_archived(&archived)
            .map_err(Trouble::Store)
    }
}

/// The re-injection thread's loop.
fn reinject(cfg: ArchiveConfig, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let mut links = Links::new(cfg.clone());
    let mut logged = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if logged.elapsed() >= STATS_EVERY {
            logged = std::time::Instant::now();
            tracing::info!("{}", counters.line());
        }
        match reinject_due(&mut links, &cfg, &counters) {
            Ok(0) => {
                links.succeeded();
                // Sleep in short steps so a stop is seen quickly.
                let mut slept = Duration::ZERO;
                while slept < cfg.every && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    slept += Duration::from_millis(50);
                }
            }
            Ok(_) => links.succeeded(),
            Err(Trouble::Store(e)) => links.failed("re-injection store", &e, &counters),
            Err(Trouble::Server(e)) => links.failed("re-injecting", &e, &counters),
        }
    }
}

/// Puts one claimed batch of due rows back; how many.
fn reinject_due(
    links: &mut Links,
    cfg: &ArchiveConfig,
    counters: &Counters,
) -> Result<usize, Trouble> {
    let now = now_ms();
    let rows = links
        .store()
        .map_err(Trouble::Store)?
        .claim_due(&cfg.owner, now, cfg.lead, cfg.claim, cfg.batch)
        .map_err(Trouble::Store)?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Rows put back are removed even when a later put fails, so no row goes back twice for
    // anything short of a crash between a put and this removal (duplicate window 1).
    let mut done = Vec::with_capacity(rows.len());
    let mut trouble = None;
    match links.server() {
        Err(e) => trouble = Some(Trouble::Server(e)),
        Ok((c, _, _)) => {
            for row in &rows {
                let left_ms = (row.job.due_ms - now_ms()).max(0);
                let left = u32::try_from((left_ms + 999) / 1000).unwrap_or(u32::MAX);
                let put = c
                    .use_tube(&row.job.tube)
                    .and_then(|()| c.put(row.job.pri, left, row.job.ttr, &row.job.body));
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
    if !done.is_empty() {
        links
            .store()
            .map_err(Trouble::Store)?
            .remove(&done)
            .map_err(Trouble::Store)?;
        counters
            .reinjected
            .fetch_add(done.len() as u64, Ordering::Relaxed);
    }
    match trouble {
        Some(t) => Err(t),
        None => Ok(done.len()),
    }
}
