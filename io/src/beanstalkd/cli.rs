//! `fanout beanstalkd`: the archiving proxy's command line.
//!
//! ```text
//! fanout beanstalkd --listen ADDR --server ADDR --archive-after DUR [--store URL] [...] [COMMON]
//! fanout beanstalkd status [--store URL] [--reinject-lead DUR]
//! ```

use super::executor::{now_ms, ArchiveConfig, ArchiveExecutor, STATS_EVERY};
use super::store::StoreUrl;
use crate::cli::Common;
use crate::error::Error;
use crate::host::{self, HostArgs};
use crate::units::parse_duration;
use clap::{Args, Parser, Subcommand};
use fanout_engine::archive::{Archiver, Settings};
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The beanstalkd archiving proxy: far-future jobs move out of beanstalkd's memory into a
/// durable store and are put back shortly before they are due (docs/BEANSTALKD.md).
#[derive(Debug, Parser)]
#[command(name = "fanout beanstalkd", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    status: Option<Status>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Status {
    /// Print the archive's row counts: pending (committed, leaving beanstalkd), archived, due
    /// within the lead, claimed by a re-injector.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Where archived jobs wait: sqlite:PATH, mysql://USER@HOST:PORT/DB or
    /// postgres://USER@HOST:PORT/DB (the two shareable by several proxies; ?table=NAME picks the
    /// table, fanout_jobs by default).
    #[arg(long, value_name = "URL", default_value = "sqlite:fanout-archive.db")]
    store: StoreUrl,
    /// Jobs due within this long are put back into beanstalkd.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "60s")]
    reinject_lead: Duration,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Address to listen on for beanstalkd clients.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The beanstalkd server: HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    server: Option<String>,
    /// Archive jobs put or released with at least this delay.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    archive_after: Option<Duration>,
    #[command(flatten)]
    store: StoreArgs,
    /// The server's maximum job size (its -z) [default: 65535].
    #[arg(long, value_name = "BYTES", default_value_t = 65_535)]
    max_job_size: u32,
    /// How often due jobs are looked for.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    reinject_every: Duration,
    /// Jobs waiting to be archived, held whole; past it they are kept by id and read back from
    /// beanstalkd later.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    archive_queue: usize,
    /// Jobs kept by id past --archive-queue (16 bytes each); past it a job stays in beanstalkd.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    archive_overflow: usize,
    /// Jobs per store transaction.
    #[arg(long, value_name = "N", default_value_t = 500)]
    archive_batch: usize,
    /// How long a re-injector's claim keeps other proxies sharing the store off its rows: the
    /// longest a killed proxy's claimed jobs wait to be put back by another (or by itself
    /// restarted).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    claim: Duration,
    /// Timeout of each call the archiver makes to beanstalkd.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    server_timeout: Duration,
    #[command(flatten)]
    common: Common,
}

/// Runs `fanout beanstalkd ARGS...` (`argv` starts with the program name).
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.status {
        Some(Status::Status { store }) => status(&store),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout beanstalkd: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn status(args: &StoreArgs) -> Result<(), Error> {
    let mut store = args
        .store
        .open()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let c = store
        .counts(now_ms(), args.reinject_lead)
        .map_err(|e| Error::Runtime(e.to_string()))?;
    println!(
        "pending {}\narchived {}\ndue {}\nclaimed {}",
        c.pending, c.archived, c.due, c.claimed
    );
    Ok(())
}

fn run(args: RunArgs) -> Result<(), Error> {
    let need = |flag: &str| Error::Usage(format!("fanout beanstalkd needs {flag}"));
    let server = args.server.ok_or_else(|| need("--server ADDR"))?;
    let archive_after = args
        .archive_after
        .ok_or_else(|| need("--archive-after DUR"))?;
    let archive_after = u32::try_from(archive_after.as_secs())
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            Error::Usage("--archive-after must be at least 1s and at most u32::MAX seconds".into())
        })?;
    if args.archive_queue == 0 || args.archive_batch == 0 {
        return Err(Error::Usage(
            "--archive-queue and --archive-batch must be at least 1".into(),
        ));
    }
    let mut common = args.common;
    // Workers wait on `reserve` for as long as they like: cut no session for being quiet
    // unless told to.
    common
        .idle_timeout
        .get_or_insert(Duration::from_secs(24 * 3600));
    let host_args = HostArgs {
        listen: args.listen,
        to: vec![server.clone()],
        effect_workers: Some(1),
        effect_queue: None,
        common,
    };
    let cfg = ArchiveConfig {
        server,
        store: args.store.store,
        queue: args.archive_queue,
        overflow: args.archive_overflow,
        timeout: args.server_timeout,
        settings: Settings {
            batch: args.archive_batch,
            lead: args.store.reinject_lead,
            every: args.reinject_every,
            claim: args.claim,
            owner: format!("fanout-{}", std::process::id()),
            stats_every: STATS_EVERY,
        },
    };
    // An unreachable or unusable store stops the start (exit 1): archiving to nowhere would
    // only leave every job in beanstalkd.
    let executor = ArchiveExecutor::start(cfg).map_err(|e| Error::Runtime(e.to_string()))?;
    let archiver = Archiver {
        archive_after,
        max_job_size: args.max_job_size,
        warn: |line| tracing::warn!("{line}"),
    };
    host::run(
        "fanout beanstalkd",
        host_args,
        move || archiver.clone(),
        Some(Arc::new(executor)),
    )
}
