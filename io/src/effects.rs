//! Carrying out the engine's effects: a bounded pool of worker threads, never the event loop.
//!
//! The engine emits `Command::Effect { id, request }`; the driver hands the request to
//! `Lane::submit`, which never blocks: a full queue (or a pool that stopped) is answered at once
//! with [`EffectError::Unavailable`]. A worker runs the program's [`Executor`], catches a panic
//! (it becomes [`EffectError::Failed`]), sends the result down the submitting loop's channel and
//! wakes that loop's `Poll` through a [`mio::Waker`]. The loop then feeds each result to the
//! engine as `Event::EffectDone` through its one `handle` call, so a capture records it and a
//! replay needs no executor at all.
//!
//! One pool serves every event loop of a proxy (`--threads N`): the queue bound and the worker
//! count are the process's, as an operator sets them. Each loop has its own `Lane`: its own
//! result channel and waker. The pool stops when the proxy's loops have ended
//! (`Pool::shutdown`): jobs still queued are dropped (no loop waits for them any more), and
//! workers busy in the executor get a grace period to return before they are left behind.

use fanout_engine::{EffectError, EffectId, EffectRequest, EffectResult};
use mio::{Registry, Token, Waker};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs effect requests. The program supplies one; the pool calls it from its worker threads, so
/// it may block (a database write, a call to a service) without stalling any event loop.
///
/// `kind` and `payload` mean what the program's interceptor and its executor agree on. A panic
/// is caught and answered as [`EffectError::Failed`]; the worker goes on with the next request.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, request: &EffectRequest) -> EffectResult;

    /// Whether `request` is a bounded hand-over that never blocks (a push onto an in-memory
    /// queue some thread of the executor's own drains), which the event loop may then run
    /// itself: its result goes to the engine in the same turn, without the two thread hand-offs
    /// and wake-ups a worker costs. Anything that may wait (a disk, a lock held across I/O, a
    /// network call) must say no, the default.
    fn runs_inline(&self, _request: &EffectRequest) -> bool {
        false
    }
}

/// The pool's size: worker threads and requests waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads running the executor [default: 4].
    pub workers: usize,
    /// Requests that may wait for a worker; past it a request is refused at once with
    /// `EffectError::Unavailable("effect queue full")` [default: 1024].
    pub queue: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 4,
            queue: 1024,
        }
    }
}

impl PoolConfig {
    /// Both at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--effect-workers must be at least 1".into());
        }
        if self.queue == 0 {
            return Err("--effect-queue must be at least 1".into());
        }
        Ok(())
    }
}

/// How long [`Pool::shutdown`] waits for workers still inside the executor.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A finished effect on its way back to the loop that asked for it.
type Done = (EffectId, EffectResult);

struct Job {
    id: EffectId,
    request: EffectRequest,
    reply: Sender<Done>,
    waker: Arc<Waker>,
}

/// What the workers and the lanes share with the pool.
#[derive(Default)]
struct Shared {
    /// The queue's sending end; `None` once the pool stopped, which closes the queue at once
    /// however many lanes are still alive.
    jobs: Mutex<Option<SyncSender<Job>>>,
    /// Set when the pool stops: jobs still queued are dropped, not run.
    stopping: AtomicBool,
    /// Workers still running, for the shutdown's bounded wait.
    alive: Mutex<usize>,
    exited: Condvar,
}

/// The worker threads and their queue.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    executor: Arc<dyn Executor>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Locks `m`, ignoring poisoning: every critical section here leaves its data consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// Starts `config.workers` threads running `executor`.
    pub(crate) fn start(executor: Arc<dyn Executor>, config: PoolConfig) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            jobs: Mutex::new(Some(tx)),
            ..Shared::default()
        });
        let mut pool = Pool {
            shared: Arc::clone(&shared),
            workers: Vec::new(),
            executor: executor.clone(),
        };
        for n in 0..config.workers.max(1) {
            let (rx, shared, executor) = (Arc::clone(&rx), Arc::clone(&shared), executor.clone());
            *lock(&shared.alive) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("fanout-effect-{n}"))
                .spawn(move || work(&rx, &shared, &*executor));
            match spawned {
                Ok(handle) => pool.workers.push(handle),
                Err(e) => {
                    *lock(&pool.shared.alive) -= 1;
                    return Err(e); // `pool` drops here and stops the workers already started
                }
            }
        }
        Ok(pool)
    }

    /// A lane for one event loop: submissions go to this pool, results come back to the loop's
    /// `Poll` as readiness of `token`.
    pub(crate) fn lane(&self, registry: &Registry, token: Token) -> std::io::Result<Lane> {
        let (reply, done) = mpsc::channel();
        Ok(Lane {
            shared: Arc::clone(&self.shared),
            executor: Arc::clone(&self.executor),
            reply,
            done,
            waker: Arc::new(Waker::new(registry, token)?),
        })
    }

    /// Stops the pool: the queue closes (a lane's `submit` answers `Unavailable` from now on),
    /// queued jobs are dropped, idle workers exit, and workers inside the executor get
    /// [`SHUTDOWN_GRACE`] to return before they are left behind. Called when the proxy's loops
    /// have ended, and on drop.
    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        drop(lock(&self.shared.jobs).take());
        let alive = lock(&self.shared.alive);
        let (alive, _) = self
            .shared
            .exited
            .wait_timeout_while(alive, SHUTDOWN_GRACE, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        if *alive > 0 {
            tracing::warn!(
                "{} effect worker(s) still inside the executor {SHUTDOWN_GRACE:?} after the \
                 event loops ended; not waiting for them",
                *alive
            );
            self.workers.clear();
            return;
        }
        drop(alive);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker: takes jobs until the queue is closed, runs each unless the pool is stopping.
fn work(jobs: &Mutex<Receiver<Job>>, shared: &Shared, executor: &dyn Executor) {
    loop {
        // Hold the lock only to take a job, never while running it.
        let job = lock(jobs).recv();
        let Ok(job) = job else { break };
        if shared.stopping.load(Ordering::SeqCst) {
            continue;
        }
        let result = run(executor, &job.request);
        // The loop may have ended meanwhile; then nobody waits for this result.
        if job.reply.send((job.id, result)).is_ok() {
            if let Err(e) = job.waker.wake() {
                tracing::warn!("effect {}: cannot wake its event loop: {e}", job.id.0);
            }
        }
    }
    *lock(&shared.alive) -= 1;
    shared.exited.notify_all();
}

/// Runs one request, turning a panic into `Failed`.
fn run(executor: &dyn Executor, request: &EffectRequest) -> EffectResult {
    catch_unwind(AssertUnwindSafe(|| executor.execute(request))).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!("effect executor panicked on {:?}: {why}", request.kind);
        Err(EffectError::Failed(
            format!("the executor panicked: {why}").into(),
        ))
    })
}

/// One event loop's connection to the pool.
pub(crate) struct Lane {
    shared: Arc<Shared>,
    executor: Arc<dyn Executor>,
    reply: Sender<Done>,
    done: Receiver<Done>,
    waker: Arc<Waker>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

impl Lane {
    /// Queues `request`; never blocks. `Err` is the answer to give the engine now: the queue is
    /// full, or the pool has stopped.
    pub(crate) fn submit(&self, id: EffectId, request: EffectRequest) -> Result<(), EffectError> {
        let job = Job {
            id,
            request,
            reply: self.reply.clone(),
            waker: Arc::clone(&self.waker),
        };
        let stopped = || EffectError::Unavailable("effect executor stopped".into());
        match lock(&self.shared.jobs).as_ref().map(|q| q.try_send(job)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => {
                Err(EffectError::Unavailable("effect queue full".into()))
            }
            Some(Err(TrySendError::Disconnected(_))) | None => Err(stopped()),
        }
    }

    /// The result of `request` run here, on the calling loop, if the executor says it
    /// [runs inline](Executor::runs_inline); a panic is caught as on a worker.
    pub(crate) fn inline(&self, request: &EffectRequest) -> Option<EffectResult> {
        self.executor
            .runs_inline(request)
            .then(|| run(&*self.executor, request))
    }

    /// Results that arrived since the last call, in the order they finished.
    pub(crate) fn completed(&self) -> impl Iterator<Item = Done> + '_ {
        self.done.try_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mio::{Events, Poll};
    use std::time::Instant;

    const WAKE: Token = Token(7);

    /// Echoes the payload, or does what its kind says.
    struct Scripted {
        /// Each `block` request reports that it started, then waits for a go.
        started: Mutex<Sender<()>>,
        go: Mutex<Receiver<()>>,
    }

    impl Executor for Scripted {
        fn runs_inline(&self, request: &EffectRequest) -> bool {
            request.kind.starts_with("inline")
        }

        fn execute(&self, request: &EffectRequest) -> EffectResult {
            match request.kind.as_str() {
                "echo" => Ok(request.payload.clone()),
                "inline-thread" => Ok(Bytes::from(
                    std::thread::current().name().unwrap_or("").to_string(),
                )),
                "inline-panic" => panic!("deliberate inline panic"),
                "fail" => Err(EffectError::Failed("refused".into())),
                "panic" => panic!("deliberate test panic"),
                "block" => {
                    let _ = self.started.lock().unwrap().send(());
                    let _ = self
                        .go
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                    Ok(Bytes::new())
                }
                other => Err(EffectError::Failed(format!("unknown kind {other}").into())),
            }
        }
    }

    struct Rig {
        pool: Pool,
        poll: Poll,
        lane: Lane,
        started: Receiver<()>,
        go: Sender<()>,
    }

    fn rig(workers: usize, queue: usize) -> Rig {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let exec = Arc::new(Scripted {
            started: Mutex::new(started_tx),
            go: Mutex::new(go_rx),
        });
        let pool = Pool::start(exec, PoolConfig { workers, queue }).unwrap();
        let poll = Poll::new().unwrap();
        let lane = pool.lane(poll.registry(), WAKE).unwrap();
        Rig {
            pool,
            poll,
            lane,
            started,
            go,
        }
    }

    fn req(kind: &str, payload: &'static [u8]) -> EffectRequest {
        EffectRequest::new(kind, Bytes::from_static(payload))
    }

    /// Polls for the waker and collects results until `n` have arrived (10 s at most).
    fn collect(rig: &mut Rig, n: usize) -> Vec<Done> {
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} results came back",
                got.len()
            );
            rig.poll.poll(&mut events, Some(left)).unwrap();
            if events.iter().any(|e| e.token() == WAKE) {
                got.extend(rig.lane.completed());
            }
        }
        got
    }

    #[test]
    fn results_come_back_through_the_waker() {
        let mut rig = rig(2, 8);
        rig.lane.submit(EffectId(1), req("echo", b"one")).unwrap();
        rig.lane.submit(EffectId(2), req("fail", b"")).unwrap();
        let mut got = collect(&mut rig, 2);
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            [
                (EffectId(1), Ok(Bytes::from_static(b"one"))),
                (EffectId(2), Err(EffectError::Failed("refused".into()))),
            ]
        );
        rig.pool.shutdown();
    }

    #[test]
    fn an_effect_the_executor_runs_inline_is_answered_on_the_calling_thread() {
        let rig = rig(1, 8);
        std::thread::Builder::new()
            .name("the-loop".into())
            .spawn(move || {
                assert_eq!(
                    rig.lane.inline(&req("inline-thread", b"")),
                    Some(Ok(Bytes::from_static(b"the-loop")))
                );
                assert!(matches!(
                    rig.lane.inline(&req("inline-panic", b"")),
                    Some(Err(EffectError::Failed(_)))
                ));
                assert_eq!(
                    rig.lane.inline(&req("echo", b"x")),
                    None,
                    "not inline: the pool's"
                );
                rig.pool.shutdown();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_full_queue_is_refused_at_once_not_blocked() {
        let mut rig = rig(1, 1);
        rig.lane.submit(EffectId(1), req("block", b"")).unwrap();
        rig.started
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker took the first job");
        // The worker is busy; one job fits in the queue, the next does not.
        rig.lane
            .submit(EffectId(2), req("echo", b"queued"))
            .unwrap();
        let before = Instant::now();
        let refused = rig.lane.submit(EffectId(3), req("echo", b"refused"));
        assert!(before.elapsed() < Duration::from_secs(1), "submit blocked");
        assert_eq!(
            refused,
            Err(EffectError::Unavailable("effect queue full".into()))
        );
        rig.go.send(()).unwrap();
        let mut got = collect(&mut rig, 2);
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got[0], (EffectId(1), Ok(Bytes::new())));
        assert_eq!(got[1], (EffectId(2), Ok(Bytes::from_static(b"queued"))));
        rig.pool.shutdown();
    }

    #[test]
    fn a_panicking_executor_fails_the_effect_and_the_worker_goes_on() {
        let mut rig = rig(1, 8);
        rig.lane.submit(EffectId(1), req("panic", b"")).unwrap();
        rig.lane.submit(EffectId(2), req("echo", b"after")).unwrap();
        let got = collect(&mut rig, 2);
        match &got[0] {
            (EffectId(1), Err(EffectError::Failed(why))) => {
                assert!(why.contains("deliberate test panic"), "{why}")
            }
            other => panic!("expected the panic as Failed, got {other:?}"),
        }
        assert_eq!(got[1], (EffectId(2), Ok(Bytes::from_static(b"after"))));
        rig.pool.shutdown();
    }

    #[test]
    fn a_stopped_pool_refuses_at_once_and_its_workers_exit() {
        let Rig { pool, lane, .. } = rig(3, 8);
        let shared = Arc::clone(&pool.shared);
        let before = Instant::now();
        pool.shutdown();
        assert!(
            before.elapsed() < Duration::from_secs(1),
            "shutdown waited for a lane that is still alive"
        );
        assert_eq!(*shared.alive.lock().unwrap(), 0, "workers still running");
        assert_eq!(
            lane.submit(EffectId(1), req("echo", b"late")),
            Err(EffectError::Unavailable("effect executor stopped".into()))
        );
    }
}
