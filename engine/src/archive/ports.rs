//! What the archiver's background work needs from its driver, as traits.
//!
//! The io driver implements them with blocking calls (a store's SQL, a beanstalkd TCP client,
//! `thread::sleep`) and runs each loop on its own thread; the simulator implements them with a
//! store model, a beanstalkd client over turmoil sockets and turmoil's virtual clock. The
//! methods are `async` so the simulator can let virtual time pass (and crashes land) inside any
//! call; no caller needs the futures to be `Send`, as each loop runs on one thread.
#![allow(async_fn_in_trait)]

use super::records::{Job, JobStats, NewJob, Row};
use std::fmt;
use std::time::Duration;

/// Why a call to the store or to beanstalkd failed. The loop drops that link (it is reopened on
/// the next use) and retries after a back-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault(pub String);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The archive store. Every method that changes rows commits durably before it returns: a job
/// [`Archive::insert`] returned is on disk (or in the database's log) before the caller deletes
/// it from beanstalkd. Rows are `pending` (committed, maybe still in beanstalkd) or `archived`
/// (the row is the only copy). Re-injection claims due rows for a while
/// ([`Archive::claim_due`]); a claim not finished by then is free again.
pub trait Archive {
    /// Commits `jobs` as `pending` rows in one transaction; their row ids, in order.
    async fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, Fault>;
    /// The jobs of `rows` left beanstalkd: they become `archived`.
    async fn mark_archived(&mut self, rows: &[i64]) -> Result<(), Fault>;
    /// Deletes `rows` (re-injected).
    async fn remove(&mut self, rows: &[i64]) -> Result<(), Fault>;
    /// Deletes those of `rows` still `pending` (jobs beanstalkd no longer had at the archiver's
    /// delete: a client deleted it, a worker took it); a row another proxy settled meanwhile is
    /// `archived` and stays.
    async fn discard_pending(&mut self, rows: &[i64]) -> Result<(), Fault>;
    /// Every `pending` row: after a crash, the archiver settles each one.
    async fn pending(&mut self) -> Result<Vec<Row>, Fault>;
    /// Claims up to `limit` archived rows due by `now_ms + lead` for `owner` until
    /// `now_ms + hold`, soonest first, skipping rows claimed by others whose claim has not
    /// expired.
    async fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, Fault>;
}

/// One connection to beanstalkd, one command at a time (except [`Server::delete_all`]).
pub trait Server {
    /// `use <tube>` (skipped when it is the tube in use already).
    async fn use_tube(&mut self, tube: &str) -> Result<(), Fault>;
    /// `put`: the new job's id.
    async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, Fault>;
    /// `delete <id>`: whether beanstalkd had it.
    async fn delete(&mut self, id: u64) -> Result<bool, Fault>;
    /// `delete` for every id, pipelined: for each, whether beanstalkd had it.
    async fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<bool>, Fault>;
    /// `peek <id>`: the job's body, if it exists.
    async fn peek(&mut self, id: u64) -> Result<Option<Vec<u8>>, Fault>;
    /// `stats-job <id>`, if the job exists.
    async fn stats_job(&mut self, id: u64) -> Result<Option<JobStats>, Fault>;
}

/// The executor's side of the archive effects: jobs waiting to be archived.
pub trait Queue {
    /// Up to `max` waiting jobs; with none waiting, waits a little (at most a fraction of a
    /// second) for one and returns what came, possibly nothing. `None` once no job can come
    /// any more (the executor is gone).
    async fn next(&mut self, max: usize) -> Option<Vec<Job>>;
}

/// How loud a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// Everything else a loop needs from where it runs.
pub trait Host {
    type Archive: Archive;
    type Server: Server;
    /// Opens the store.
    async fn open_archive(&mut self) -> Result<Self::Archive, Fault>;
    /// Connects to beanstalkd: the connection and the server process's `stats` `id`.
    async fn connect(&mut self) -> Result<(Self::Server, String), Fault>;
    /// Milliseconds since the Unix epoch (or, in the simulator, since its start).
    fn now_ms(&self) -> i64;
    /// Waits `d`, or less if the host is stopping.
    async fn sleep(&mut self, d: Duration);
    /// The loop should return.
    fn stopping(&self) -> bool;
    fn log(&mut self, level: Level, line: fmt::Arguments<'_>);
}
