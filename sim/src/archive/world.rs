//! One run of the archive world: producers put jobs through `fanout beanstalkd`'s logic (the
//! engine's [`Archiver`] on the simulator's proxy driver, the engine's [`archiving`] and
//! [`reinjecting`] loops as tasks beside it) into the beanstalkd model, with the store model as
//! the archive; the application's worker takes every job the model makes ready. Faults come
//! from the plan: store outages and latency, proxy kills and restarts, server restarts.
//!
//! Hosts: `producers` (a client host, one task per producer), `proxy1` (and `proxy2` when two
//! share the store; each restarted after a kill as a new process: new engine, new queue, new
//! claim owner), `beanstalkd`. The store's rows, the
//! model's jobs and what producers heard live outside the hosts, as a database and a binlog
//! outlive the processes that use them.

use super::beanstalkd::{self, Beanstalk, BeanstalkRef, SimServer};
use super::plan::{ArchivePlan, HostFault, ARCHIVE_AFTER};
use super::store::{Rows, RowsRef, SimArchive};
use crate::conn::split;
use crate::driver::{run_proxy, ProxySpec};
use crate::effects::Effects;
use crate::observe::Observer;
use bytes::Bytes;
use fanout_engine::archive::{
    archiving, parse_records, reinjecting, Archiver, Counters, Fault, Host, Job, Level, Queue,
    Settings, Worker, ARCHIVE,
};
use fanout_engine::framing::beanstalkd::{ResponseFramer, ResponseKind};
use fanout_engine::{Config, ConnId, EffectError, EffectId, EffectRequest, Event};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

const PROXY_PORT: u16 = 11400;
/// The re-injection lead, poll interval and claim length (the flags, scaled to the run).
pub const LEAD: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(200);
const CLAIM: Duration = Duration::from_secs(3);
/// How long a producer waits for an answer before it gives the connection up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the archiver's beanstalkd calls may take (`--server-timeout`).
const SERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the application's worker takes ready jobs.
const WORKER_EVERY: Duration = Duration::from_millis(10);

/// What one put came to, as its producer saw it.
#[derive(Clone, Debug)]
pub struct Put {
    pub body: Vec<u8>,
    pub tube: String,
    pub pri: u32,
    pub delay: u32,
    pub ttr: u32,
    /// Virtual time the put was sent.
    pub sent_at: Duration,
    /// The answer's line and when it came; `None` if the connection ended first.
    pub answer: Option<(String, Duration)>,
}

/// What the run left for the oracles.
#[derive(Debug, Default)]
pub struct Outcome {
    pub puts: Vec<Put>,
    pub deliveries: Vec<beanstalkd::Delivery>,
    /// Jobs still in the model and rows still in the store at the end.
    pub left_in_server: usize,
    pub left_in_store: Vec<Vec<u8>>,
    /// The most jobs the model held at once.
    pub peak_in_server: usize,
    pub archived: u64,
    pub reinjected: u64,
    pub store_refused: u64,
    /// The engine's contract checker and the observer's findings.
    pub violations: Vec<String>,
    pub sim_error: Option<String>,
    /// A digest of everything that happened, equal for the same `(scenario, seed)`.
    pub digest: u64,
}

/// The executor's queue in the simulated proxy: bounded, lost with the proxy.
#[derive(Default)]
struct SimQueue {
    jobs: VecDeque<Job>,
    cap: usize,
}

/// The archiver's effects: hand the jobs to the queue at once, or refuse when it is full.
struct ArchiveEffects {
    queue: Rc<RefCell<SimQueue>>,
}

impl Effects for ArchiveEffects {
    fn execute(
        &self,
        _now: Duration,
        _conn: ConnId,
        id: EffectId,
        request: EffectRequest,
    ) -> Pin<Box<dyn Future<Output = Event>>> {
        let now_ms = now_ms();
        let jobs = (request.kind == ARCHIVE)
            .then(|| parse_records(&request.payload, now_ms))
            .flatten();
        let result = match jobs {
            None => Err(EffectError::Failed("not an archive request".into())),
            Some(jobs) => {
                let mut q = self.queue.borrow_mut();
                let room = q.cap.saturating_sub(q.jobs.len());
                let refused = jobs.len().saturating_sub(room);
                q.jobs.extend(jobs.into_iter().take(room));
                match refused {
                    0 => Ok(Bytes::from_static(b"queued")),
                    n => Err(EffectError::Unavailable(
                        format!("queue full: {n} jobs stay in beanstalkd").into(),
                    )),
                }
            }
        };
        Box::pin(async move { Event::EffectDone { id, result } })
    }
}

struct QueueEnd(Rc<RefCell<SimQueue>>);

impl Queue for QueueEnd {
    async fn next(&mut self, max: usize) -> Option<Vec<Job>> {
        let take = |q: &Rc<RefCell<SimQueue>>| {
            let mut q = q.borrow_mut();
            let n = q.jobs.len().min(max);
            q.jobs.drain(..n).collect::<Vec<_>>()
        };
        let batch = take(&self.0);
        if !batch.is_empty() {
            return Some(batch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some(take(&self.0))
    }
}

/// Virtual milliseconds since the simulation started (the archiver's wall clock).
fn now_ms() -> i64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as i64)
}

/// Where the archiver's loops run in the simulator.
struct SimHost {
    rows: RowsRef,
}

impl Host for SimHost {
    type Archive = SimArchive;
    type Server = TimedServer;

    async fn open_archive(&mut self) -> Result<SimArchive, Fault> {
        Ok(SimArchive(self.rows.clone()))
    }

    async fn connect(&mut self) -> Result<(TimedServer, String), Fault> {
        match tokio::time::timeout(SERVER_TIMEOUT, SimServer::connect("beanstalkd")).await {
            Ok(r) => r.map(|(s, id)| (TimedServer(s), id)),
            Err(_) => Err(Fault("connect timed out".into())),
        }
    }

    fn now_ms(&self) -> i64 {
        now_ms()
    }

    async fn sleep(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn stopping(&self) -> bool {
        false
    }

    fn log(&mut self, _: Level, _: std::fmt::Arguments<'_>) {}
}

/// [`SimServer`] with every call under the server timeout, as the io client's socket timeouts.
struct TimedServer(SimServer);

async fn timed<T>(f: impl Future<Output = Result<T, Fault>>) -> Result<T, Fault> {
    tokio::time::timeout(SERVER_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(Fault("beanstalkd timed out".into())))
}

impl fanout_engine::archive::Server for TimedServer {
    async fn use_tube(&mut self, tube: &str) -> Result<(), Fault> {
        timed(self.0.use_tube(tube)).await
    }
    async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, Fault> {
        timed(self.0.put(pri, delay, ttr, body)).await
    }
    async fn delete(&mut self, id: u64) -> Result<bool, Fault> {
        timed(self.0.delete(id)).await
    }
    async fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<bool>, Fault> {
        timed(self.0.delete_all(ids)).await
    }
    async fn peek(&mut self, id: u64) -> Result<Option<Vec<u8>>, Fault> {
        timed(self.0.peek(id)).await
    }
    async fn stats_job(
        &mut self,
        id: u64,
    ) -> Result<Option<fanout_engine::archive::JobStats>, Fault> {
        timed(self.0.stats_job(id)).await
    }
}

/// The engine limits of the simulated archiving proxy.
fn config() -> Config {
    Config {
        max_connections: 100,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// State shared by the proxies and their incarnations.
struct ProxyWorld {
    plan: ArchivePlan,
    rows: RowsRef,
    counters: Rc<Counters>,
    obs: Rc<RefCell<Observer>>,
    /// Processes started so far (names each one's claims).
    incarnation: RefCell<u32>,
}

/// The host name of proxy `n`.
fn proxy_host(n: usize) -> String {
    format!("proxy{}", n + 1)
}

/// One incarnation of the proxy process: the engine with the archiver, and both loops.
async fn proxy(w: Rc<ProxyWorld>) -> turmoil::Result {
    let owner = {
        let mut n = w.incarnation.borrow_mut();
        *n += 1;
        format!("process-{n}")
    };
    let queue = Rc::new(RefCell::new(SimQueue {
        jobs: VecDeque::new(),
        cap: w.plan.queue,
    }));
    let settings = Settings {
        batch: w.plan.batch,
        lead: LEAD,
        every: EVERY,
        claim: CLAIM,
        owner,
        stats_every: Duration::from_secs(3600),
        #[cfg(feature = "sim-mutants")]
        mutant: crate::mutants::current_archive(),
    };
    {
        let (w, queue, settings) = (w.clone(), queue.clone(), settings.clone());
        tokio::task::spawn_local(async move {
            let host = SimHost {
                rows: w.rows.clone(),
            };
            let mut worker = Worker::new(host, settings, &w.counters);
            archiving(&mut worker, &mut QueueEnd(queue)).await;
        });
    }
    {
        let w = w.clone();
        tokio::task::spawn_local(async move {
            let host = SimHost {
                rows: w.rows.clone(),
            };
            let mut worker = Worker::new(host, settings, &w.counters);
            reinjecting(&mut worker).await;
        });
    }
    let spec = ProxySpec {
        cfg: config(),
        port: PROXY_PORT,
        backends: vec![("beanstalkd".into(), beanstalkd::PORT)],
        capture: None,
        events: Vec::new(),
    };
    let archiver = Archiver {
        archive_after: ARCHIVE_AFTER,
        max_job_size: 65_535,
        warn: |_| {},
    };
    let effects: Rc<dyn Effects> = Rc::new(ArchiveEffects { queue });
    run_proxy(spec, archiver, Some(effects), w.obs.clone()).await
}

/// One producer: `use`s its tube, then puts its jobs, `pipeline` at a time, reconnecting when
/// its connection fails. A put whose answer never came is recorded without one.
async fn producer(
    index: usize,
    via: String,
    jobs: Vec<super::plan::PlannedJob>,
    pipeline: usize,
    puts: Rc<RefCell<Vec<Put>>>,
) -> turmoil::Result {
    let tube = format!("tube-{index}");
    let mut next = 0;
    while next < jobs.len() {
        let Ok(stream) = turmoil::net::TcpStream::connect((via.as_str(), PROXY_PORT)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut rd, mut wr) = split(stream);
        let mut framer = ResponseFramer::new(1 << 20);
        let mut buf = vec![0u8; 4096];
        // Reads the next answer line, or `None` when the connection ends or stalls.
        macro_rules! answer {
            () => {
                loop {
                    match framer.pop() {
                        Ok(Some(r)) => break Some(r),
                        Err(_) => break None,
                        Ok(None) => {}
                    }
                    match tokio::time::timeout(ANSWER_TIMEOUT, rd.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => framer.push(Bytes::copy_from_slice(&buf[..n])),
                        _ => break None,
                    }
                }
            };
        }
        if wr
            .write_all(format!("use {tube}\r\n").as_bytes())
            .await
            .is_err()
        {
            continue;
        }
        match answer!() {
            Some(r) if r.kind == ResponseKind::Using(tube.clone()) => {}
            _ => continue,
        }
        'conn: while next < jobs.len() {
            let round: Vec<usize> = (next..jobs.len()).take(pipeline).collect();
            for &i in &round {
                tokio::time::sleep(Duration::from_millis(jobs[i].gap_ms)).await;
            }
            let sent_at = turmoil::sim_elapsed().unwrap_or_default();
            let mut req = Vec::new();
            for &i in &round {
                let j = &jobs[i];
                let body = format!("job {index}-{i} of seed").into_bytes();
                req.extend_from_slice(
                    format!("put {} {} {} {}\r\n", j.pri, j.delay, j.ttr, body.len()).as_bytes(),
                );
                req.extend_from_slice(&body);
                req.extend_from_slice(b"\r\n");
                puts.borrow_mut().push(Put {
                    body,
                    tube: tube.clone(),
                    pri: j.pri,
                    delay: j.delay,
                    ttr: j.ttr,
                    sent_at,
                    answer: None,
                });
            }
            next += round.len();
            let first = puts.borrow().len() - round.len();
            if wr.write_all(&req).await.is_err() {
                break 'conn;
            }
            for k in 0..round.len() {
                let Some(r) = answer!() else {
                    break 'conn;
                };
                let line = String::from_utf8_lossy(&r.line).trim_end().to_string();
                let at = turmoil::sim_elapsed().unwrap_or_default();
                puts.borrow_mut()[first + k].answer = Some((line, at));
            }
        }
    }
    Ok(())
}

/// Runs the plan's world to its horizon.
pub fn simulate(plan: &ArchivePlan) -> Outcome {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(plan.horizon + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .rng_seed(plan.seed)
        .build();
    let model: BeanstalkRef = Beanstalk::new("server-1".into());
    let rows = Rows::new(plan.store.clone(), plan.seed);
    let cfg = config();
    let world = Rc::new(ProxyWorld {
        plan: plan.clone(),
        rows: rows.clone(),
        counters: Rc::default(),
        obs: Rc::new(RefCell::new(Observer::new(&cfg))),
        incarnation: RefCell::new(0),
    });
    {
        let model = model.clone();
        sim.host("beanstalkd", move || beanstalkd::serve(model.clone()));
    }
    for n in 0..plan.proxies {
        let world = world.clone();
        sim.host(proxy_host(n), move || proxy(world.clone()));
    }
    let puts: Rc<RefCell<Vec<Put>>> = Rc::default();
    {
        let puts = puts.clone();
        let producers = plan.producers.clone();
        let pipeline = plan.pipeline;
        let proxies = plan.proxies;
        sim.client("producers", async move {
            let tasks: Vec<_> = producers
                .into_iter()
                .enumerate()
                .map(|(i, jobs)| {
                    let via = proxy_host(i % proxies);
                    tokio::task::spawn_local(producer(i, via, jobs, pipeline, puts.clone()))
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            // The client host stays up to the horizon: the run ends there, not when it ends.
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    let mut faults = plan.faults.iter().peekable();
    let mut worked = Duration::ZERO;
    let mut sim_error = None;
    let mut restarts = 1;
    while sim.elapsed() < plan.horizon {
        while let Some((_, fault)) = faults.next_if(|(at, _)| *at <= sim.elapsed()) {
            match fault {
                HostFault::KillProxy(n) => sim.crash(proxy_host(*n)),
                HostFault::StartProxy(n) => sim.bounce(proxy_host(*n)),
                HostFault::RestartServer => {
                    restarts += 1;
                    let mut m = model.borrow_mut();
                    m.instance = format!("server-{restarts}");
                    m.restarts += 1;
                    drop(m);
                    sim.bounce("beanstalkd");
                }
            }
        }
        if let Err(e) = sim.step() {
            sim_error = Some(e.to_string());
            break;
        }
        if sim.elapsed() >= worked + WORKER_EVERY {
            worked = sim.elapsed();
            model.borrow_mut().take_ready(worked);
        }
    }
    let m = model.borrow();
    let r = rows.borrow();
    let counters = &world.counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let puts = puts.borrow().clone();
    let mut out = Outcome {
        puts,
        deliveries: m.deliveries.clone(),
        left_in_server: m.len(),
        left_in_store: r.bodies(),
        peak_in_server: m.peak_jobs,
        archived: load(&counters.archived),
        reinjected: load(&counters.reinjected),
        store_refused: r.refused,
        violations: world.obs.borrow().violations.clone(),
        sim_error,
        digest: 0,
    };
    out.digest = digest(&out);
    out
}

fn digest(o: &Outcome) -> u64 {
    use std::fmt::Write;
    let mut s = String::new();
    for p in &o.puts {
        let _ = write!(s, "{:?}{:?}{:?};", p.body, p.sent_at, p.answer);
    }
    for d in &o.deliveries {
        let _ = write!(s, "{:?}{:?};", d.body, d.at);
    }
    let _ = write!(s, "{} {} {}", o.archived, o.reinjected, o.peak_in_server);
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}
