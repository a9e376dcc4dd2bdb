//! The archiver's executor and its two threads: the io side of [`fanout_engine::archive`].
//!
//! - [`ArchiveExecutor`] answers the interceptor's effects by queueing the jobs (bounded: past
//!   `queue` jobs they are kept by id only, past `overflow` more an effect is refused and those
//!   jobs simply stay in beanstalkd).
//! - The **archiving thread** and the **re-injection thread** each run one of the engine's loops
//!   ([`archiving`], [`reinjecting`]) with `pollster::block_on`, on ports that block: the store's
//!   SQL ([`Blocking`]), a beanstalkd [`Client`] under `--server-timeout`, `thread::sleep`. Both
//!   stop when the executor is dropped.

use super::client::Client;
use super::store::{Store, StoreError, StoreUrl};
use crate::effects::Executor;
use fanout_engine::archive::{
    archiving, parse_records, reinjecting, Archive, Counters, Fault, Host, Job, JobStats, Level,
    NewJob, Queue, Row, Server, Settings, Worker, ARCHIVE,
};
use fanout_engine::{EffectError, EffectRequest, EffectResult};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// Timeout of every call to beanstalkd.
    pub timeout: Duration,
    /// The loops' knobs.
    pub settings: Settings,
}

/// How often the re-injection thread logs the counters.
pub const STATS_EVERY: Duration = Duration::from_secs(10);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Jobs waiting for the archiving thread, shared with the executor: whole jobs up to `cap`,
/// then, up to `overflow_max`, jobs by id only (read back from beanstalkd once the whole ones
/// are done). One lock per effect, not per job.
struct Waiting {
    whole: VecDeque<Job>,
    by_id: VecDeque<Job>,
    cap: usize,
    overflow_max: usize,
    /// The executor is gone: no job can come any more.
    closed: bool,
}

#[derive(Clone)]
struct Shared(Arc<(Mutex<Waiting>, Condvar)>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The effect executor and its threads.
pub struct ArchiveExecutor {
    waiting: Shared,
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
        let waiting = Shared(Arc::new((
            Mutex::new(Waiting {
                whole: VecDeque::new(),
                by_id: VecDeque::new(),
                cap: cfg.queue.max(1),
                overflow_max: cfg.overflow,
                closed: false,
            }),
            Condvar::new(),
        )));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| StoreError(format!("cannot start the {name} thread: {e}")))
        };
        let host = IoHost {
            cfg: cfg.clone(),
            stop: stop.clone(),
        };
        let archive = {
            let (host, counters, waiting) = (host.clone(), counters.clone(), waiting.clone());
            let settings = cfg.settings.clone();
            spawn(
                "archive",
                Box::new(move || {
                    background();
                    let mut queue = IoQueue(waiting);
                    let mut w = Worker::new(host, settings, &counters);
                    pollster::block_on(archiving(&mut w, &mut queue));
                }),
            )?
        };
        let reinject = {
            let counters = counters.clone();
            let settings = cfg.settings.clone();
            spawn(
                "reinject",
                Box::new(move || {
                    let mut w = Worker::new(host, settings, &counters);
                    pollster::block_on(reinjecting(&mut w));
                }),
            )?
        };
        Ok(ArchiveExecutor {
            waiting,
            counters,
            stop,
            threads: vec![archive, reinject],
        })
    }
}

impl Drop for ArchiveExecutor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.waiting.lock().closed = true;
        self.waiting.0 .1.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Executor for ArchiveExecutor {
    /// An archive effect only moves jobs onto the bounded queue (one short lock, which the
    /// archiving thread also holds only to take a batch): the loop runs it itself.
    fn runs_inline(&self, request: &EffectRequest) -> bool {
        request.kind == ARCHIVE
    }

    fn execute(&self, request: &EffectRequest) -> EffectResult {
        let jobs = match request.kind.as_str() {
            ARCHIVE => parse_records(&request.payload, now_ms()),
            _ => None,
        };
        let Some(jobs) = jobs else {
            return Err(EffectError::Failed(
                format!("not an archive request: {}", request.kind).into(),
            ));
        };
        let (mut queued, mut refused) = (0u64, 0u64);
        {
            let mut w = self.waiting.lock();
            for job in jobs {
                if w.whole.len() < w.cap {
                    w.whole.push_back(job);
                } else if w.by_id.len() < w.overflow_max {
                    // The queue is full: keep just the job's id (it stays in beanstalkd), to
                    // read it back from there once the queue has room.
                    w.by_id.push_back(job.by_id());
                } else {
                    refused += 1;
                    continue;
                }
                queued += 1;
            }
        }
        if queued > 0 {
            self.waiting.0 .1.notify_one();
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

/// Lowers the calling thread's scheduling priority (nice 10): archiving is background work
/// that catches up when the traffic leaves CPU to spare, never work the puts wait behind. (On
/// Linux a thread has its own nice value; elsewhere this is a no-op.)
fn background() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on failure the
        // thread simply keeps its priority.
        let r = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if r != 0 {
            tracing::debug!(
                "archiving keeps its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The archiving thread's end of the queue.
struct IoQueue(Shared);

impl Queue for IoQueue {
    async fn next(&mut self, max: usize) -> Option<Vec<Job>> {
        let mut w = self.0.lock();
        if w.whole.is_empty() && w.by_id.is_empty() && !w.closed {
            w = self
                .0
                 .0
                 .1
                .wait_timeout(w, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if w.closed {
            return None;
        }
        // Whole jobs first; the queue drained, jobs it had no room for, read back from
        // beanstalkd.
        let n = w.whole.len().min(max);
        let mut batch: Vec<Job> = w.whole.drain(..n).collect();
        if batch.is_empty() {
            let n = w.by_id.len().min(max);
            batch.extend(w.by_id.drain(..n));
        }
        Some(batch)
    }
}

/// Where the loops run in the production binary: real stores, real sockets, the wall clock.
#[derive(Clone)]
struct IoHost {
    cfg: ArchiveConfig,
    stop: Arc<AtomicBool>,
}

impl Host for IoHost {
    type Archive = Blocking;
    type Server = Client;

    async fn open_archive(&mut self) -> Result<Blocking, Fault> {
        self.cfg.store.open().map(Blocking).map_err(fault)
    }

    async fn connect(&mut self) -> Result<(Client, String), Fault> {
        let mut c = Client::connect(self.cfg.server.as_str(), self.cfg.timeout).map_err(fault)?;
        let instance = c
            .stats()
            .map_err(fault)?
            .into_iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok((c, instance))
    }

    fn now_ms(&self) -> i64 {
        now_ms()
    }

    async fn sleep(&mut self, d: Duration) {
        // In short steps, so a stop is seen quickly.
        let step = Duration::from_millis(50);
        let mut slept = Duration::ZERO;
        while slept < d && !self.stopping() {
            std::thread::sleep(step.min(d - slept));
            slept += step;
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn log(&mut self, level: Level, line: std::fmt::Arguments<'_>) {
        match level {
            Level::Info => tracing::info!("{line}"),
            Level::Warn => tracing::warn!("{line}"),
        }
    }
}

fn fault(e: impl std::fmt::Display) -> Fault {
    Fault(e.to_string())
}

/// A [`Store`] as the loops' [`Archive`] port: each call blocks until it committed.
struct Blocking(Box<dyn Store>);

impl Archive for Blocking {
    async fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, Fault> {
        self.0.insert(jobs).map_err(fault)
    }

    async fn mark_archived(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.0.mark_archived(rows).map_err(fault)
    }

    async fn remove(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.0.remove(rows).map_err(fault)
    }

    async fn discard_pending(&mut self, rows: &[i64]) -> Result<(), Fault> {
        self.0.discard_pending(rows).map_err(fault)
    }

    async fn pending(&mut self) -> Result<Vec<Row>, Fault> {
        self.0.pending().map_err(fault)
    }

    async fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, Fault> {
        self.0
            .claim_due(owner, now_ms, lead, hold, limit)
            .map_err(fault)
    }
}

/// The blocking client as the loops' [`Server`] port.
impl Server for Client {
    async fn use_tube(&mut self, tube: &str) -> Result<(), Fault> {
        Client::use_tube(self, tube).map_err(fault)
    }

    async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, Fault> {
        Client::put(self, pri, delay, ttr, body).map_err(fault)
    }

    async fn delete(&mut self, id: u64) -> Result<bool, Fault> {
        Client::delete(self, id).map_err(fault)
    }

    async fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<bool>, Fault> {
        Client::delete_all(self, ids).map_err(fault)
    }

    async fn peek(&mut self, id: u64) -> Result<Option<Vec<u8>>, Fault> {
        Client::peek(self, id).map_err(fault)
    }

    async fn stats_job(&mut self, id: u64) -> Result<Option<JobStats>, Fault> {
        Client::stats_job(self, id).map_err(fault)
    }
}
