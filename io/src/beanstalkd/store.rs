//! The archive: where far-future jobs wait while they are out of beanstalkd's memory.
//!
//! A [`Store`] is used from one thread at a time (the executor's or the re-injector's; each
//! opens its own). Every method that changes rows commits before it returns, durably: a job
//! [`Store::insert`] returned is on disk (or in the database's log) before the caller deletes it
//! from beanstalkd. Rows live through two states: `pending` (committed, maybe still in beanstalkd)
//! and `archived` (deleted from beanstalkd: the row is the only copy). Re-injection claims due
//! rows for a while ([`Store::claim_due`]); a claim that is not finished by then is free again, so
//! a proxy that died holding claims delays those jobs by at most the claim's length.

use std::fmt;
use std::time::Duration;

pub use fanout_engine::archive::{NewJob, Row, RowState};

/// How many rows are in each state, and how many are due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub archived: u64,
    /// Archived rows due within the re-injection lead.
    pub due: u64,
    /// Rows claimed by a re-injector now.
    pub claimed: u64,
}

/// Why a store call failed. The store is treated as unavailable until a call succeeds again.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "archive store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// The archive's operations; see the module doc for the states and their guarantees.
pub trait Store: Send {
    /// Commits `jobs` as `pending` rows in one transaction; their row ids, in order.
    fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, StoreError>;

    /// The jobs of `rows` left beanstalkd: they become `archived`.
    fn mark_archived(&mut self, rows: &[i64]) -> Result<(), StoreError>;

    /// Deletes `rows` (re-injected).
    fn remove(&mut self, rows: &[i64]) -> Result<(), StoreError>;

    /// Deletes those of `rows` still `pending`: jobs beanstalkd no longer had at the archiver's
    /// delete (a client deleted it, a worker took it). A row another proxy settled meanwhile is
    /// `archived` and stays.
    fn discard_pending(&mut self, rows: &[i64]) -> Result<(), StoreError>;

    /// Every `pending` row: after a crash, the archiver settles each one.
    fn pending(&mut self) -> Result<Vec<Row>, StoreError>;

    /// Claims up to `limit` archived rows due by `now_ms + lead` for `owner` until
    /// `now_ms + hold`, soonest first, skipping rows claimed by others whose claim has not
    /// expired.
    fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError>;

    /// The row counts, with `due` counted against `now_ms + lead`.
    fn counts(&mut self, now_ms: i64, lead: Duration) -> Result<Counts, StoreError>;
}

/// Where a store lives, from `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:PATH`: an embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// `mysql://...`: MySQL or MariaDB; the URL without `?table=`, and the table.
    Mysql { url: String, table: String },
    /// `postgres://...` (or `postgresql://`): PostgreSQL; the URL without `?table=`, and the
    /// table.
    Postgres { url: String, table: String },
}

/// The table a store keeps its rows in, unless the URL says `?table=NAME`.
pub const DEFAULT_TABLE: &str = "fanout_jobs";

/// `url` without a trailing `?table=NAME`, and the table (checked to be a plain identifier).
fn table_of(url: &str) -> Result<(String, String), String> {
    let Some((base, query)) = url.split_once("?table=") else {
        return Ok((url.to_string(), DEFAULT_TABLE.to_string()));
    };
    let plain = !query.is_empty()
        && query.len() <= 64
        && query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !query.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(format!(
            "{url}: a table is letters, digits and _, not starting with a digit"
        ));
    }
    Ok((base.to_string(), query.to_string()))
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => {
                Ok(StoreUrl::Sqlite(path.trim_start_matches("//").into()))
            }
            Some(("mysql", _)) => {
                let (url, table) = table_of(s)?;
                Ok(StoreUrl::Mysql { url, table })
            }
            Some(("postgres" | "postgresql", _)) => {
                let (url, table) = table_of(s)?;
                Ok(StoreUrl::Postgres { url, table })
            }
            _ => Err(format!(
                "{s}: a store is sqlite:PATH, mysql://USER@HOST:PORT/DB or \
                 postgres://USER@HOST:PORT/DB (optionally ?table=NAME)"
            )),
        }
    }
}

impl StoreUrl {
    /// Opens (creating the file or table if need be) the store.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            StoreUrl::Sqlite(path) => Box::new(super::sqlite::Sqlite::open(path)?),
            StoreUrl::Mysql { url, table } => Box::new(super::mysql::Mysql::open(url, table)?),
            StoreUrl::Postgres { url, table } => {
                Box::new(super::postgres::Postgres::open(url, table)?)
            }
        })
    }
}
