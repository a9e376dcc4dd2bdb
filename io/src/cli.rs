//! The command line and the config file, turned into [`Settings`].
//!
//! Four forms (see CONTRACT.md):
//!
//! ```text
//! fanout relay   --listen ADDR --to ADDR [COMMON]
//! fanout duplex  --listen ADDR --primary ADDR --secondary ADDR [--secondary ADDR ...] [COMMON]
//! fanout balance --listen ADDR --to ADDR [--to ADDR ...] [--strategy S] [--retry-after DUR]
//!                [--seed N] [COMMON]
//! fanout -l PORT|ADDR -r ADDR [-d ADDR,ADDR,...] [COMMON]          (the em-proxy form)
//! ```
//!
//! and the capture tools, which run no proxy ([`Invocation`]):
//!
//! ```text
//! fanout capture inspect FILE [--json]
//! fanout replay --engine FILE
//! fanout replay FILE --to ADDR [--speed X] [--concurrency 1,2,4,...] [--timeout DUR] [--expect-recorded]
//! ```
//!
//! Programs built on [`crate::host`] take balance's upstream table too:
//! `PROGRAM --listen ADDR --to ADDR [--to ADDR ...] [COMMON]`; both are resolved by the same code
//! (`upstream_settings`).
//!
//! `--config FILE` reads a TOML file with the same keys in kebab-case (`listen`, `to`, `primary`,
//! `secondary`, `report`, `connect-timeout`, `bind-source`, `strategy`, ...); a flag given on the command
//! line wins over the file. Every problem here is a usage error (exit status 2).

use crate::addr::{self, Backend};
use crate::balance::{BalanceConfig, BalanceFlags, Strategy};
use crate::config_file::{duration, size, FileConfig};
use crate::effects::PoolConfig;
use crate::error::Error;
use crate::host::HostArgs;
use crate::splice::SpliceMode;
use crate::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand};
use fanout_engine::Config;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A programmable TCP proxy: relay a client to one backend, balance clients over several, or
/// duplicate their traffic to secondaries and compare their responses with the primary's.
#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Without a subcommand, fanout takes em-proxy's flags: fanout -l 9000 -r 127.0.0.1:8080 -d 127.0.0.1:8081 \
                  (--listen, --relay, --duplex, -s/--socket PATH, --verbose)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub em: EmArgs,
    #[command(flatten)]
    pub common: Common,
}

/// The em-proxy form's flags, named as em-proxy's `bin/em-proxy` names them (`--remote` and
/// `--duplicate`, fanout's earlier names, still work).
#[derive(Debug, Args)]
pub struct EmArgs {
    /// Port or address to listen on (a bare port listens on 127.0.0.1).
    #[arg(short = 'l', long = "listen", value_name = "PORT|ADDR")]
    pub listen: Option<String>,
    /// The primary backend: its response goes back to the client.
    #[arg(
        short = 'r',
        long = "relay",
        visible_alias = "remote",
        value_name = "HOST:PORT"
    )]
    pub remote: Option<String>,
    /// The primary backend as a unix socket (instead of -r).
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        conflicts_with = "remote"
    )]
    pub socket: Option<PathBuf>,
    /// Secondary backends, comma-separated: they get a copy of the client's bytes.
    #[arg(
        short = 'd',
        long = "duplex",
        visible_alias = "duplicate",
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub duplicate: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Forward every client to one backend.
    Relay(RelayArgs),
    /// Forward every client to a primary and copy its bytes to secondaries; report differences.
    Duplex(DuplexArgs),
    /// Forward each client to one of several upstreams, chosen by a strategy; an upstream that
    /// cannot be connected is skipped until --retry-after passed. With --threads N each event
    /// loop balances on its own.
    Balance(BalanceArgs),
    /// Look into a capture recorded with --capture.
    #[command(subcommand)]
    Capture(CaptureCmd),
    /// Replay a capture into the engine (--engine) or against a live server (--to).
    Replay(ReplayArgs),
    /// The beanstalkd archiving proxy: far-future jobs wait in a durable store, out of
    /// beanstalkd's memory (`fanout beanstalkd --help` for its flags).
    #[command(disable_help_flag = true)]
    Beanstalkd {
        /// Its flags (the `fanout` binary hands them to `fanout_io::beanstalkd::cli::main`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaptureCmd {
    /// Summarise a capture (all its rotated files): sessions, backends, bytes, duration, digests.
    Inspect {
        /// The capture's first file; FILE.1, FILE.2, ... are read after it when present.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// One JSON object per line: the header, then every record (bytes as hex).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// The capture's first file; FILE.1, FILE.2, ... are read after it when present.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Feed the recorded inputs to a fresh engine; fail unless it reproduces the recorded
    /// output digest.
    #[arg(long, conflicts_with_all = ["to", "speed", "concurrency", "expect_recorded"])]
    pub engine: bool,
    /// Play the recorded clients against this live server (IP:PORT or HOST:PORT).
    #[arg(long, value_name = "ADDR", required_unless_present = "engine")]
    pub to: Option<String>,
    /// Pacing factor: 2 plays twice as fast as recorded, 0.5 half as fast.
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub speed: f64,
    /// Sweep these concurrency levels (sessions in flight), each over all sessions, and print a
    /// table of throughput and latency per level. Without it sessions start at their recorded
    /// times.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Longest a connect, a read or a write may wait.
    #[arg(
        long,
        value_name = "DUR",
        value_parser = parse_duration,
        default_value = "30s",
        allow_hyphen_values = true
    )]
    pub timeout: Duration,
    /// Compare each session's response with what the recorded client received; count mismatches.
    #[arg(long)]
    pub expect_recorded: bool,
}

/// What the command line asks for: a proxy, or one of the capture tools.
#[derive(Debug)]
pub enum Invocation {
    Proxy(Box<Settings>),
    Inspect { file: PathBuf, json: bool },
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (IPv6 in brackets), or a bare port (127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The backend: IP:PORT, HOST:PORT or unix:/path.
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct DuplexArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (IPv6 in brackets), or a bare port (127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The backend whose response the client hears.
    #[arg(long, value_name = "ADDR")]
    pub primary: Option<String>,
    /// A backend that gets a copy of the client's bytes (repeat for more).
    #[arg(long, value_name = "ADDR")]
    pub secondary: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (IPv6 in brackets), or a bare port (127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// An upstream: IP:PORT, HOST:PORT or unix:/path. Repeat for each upstream.
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,
    #[command(flatten)]
    pub balance: BalanceFlags,
    #[command(flatten)]
    pub common: Common,
}

/// Flags every form takes. All optional here so the config file can supply them.
#[derive(Debug, Args, Default)]
pub struct Common {
    /// How long a backend connect may take [default: 5s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub connect_timeout: Option<Duration>,
    /// Close a session with no bytes moving for this long [default: 300s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub idle_timeout: Option<Duration>,
    /// Open client connections at most, for the whole process (every --threads loop counts
    /// against it); past it fanout stops accepting [default: 10000].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_connections: Option<usize>,
    /// Unflushed bytes per socket above which its feeder is paused [default: 256KiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub high_water: Option<u64>,
    /// Unflushed bytes at which a paused feeder resumes [default: 64KiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub low_water: Option<u64>,
    /// Unflushed bytes a secondary may hold before it is detached [default: 4MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub secondary_budget: Option<u64>,
    /// Unflushed bytes all secondaries together may hold (shared out between --threads loops);
    /// a secondary whose write would pass it is detached [default: 256MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub secondary_memory: Option<u64>,
    /// How long a secondary may go on after the primary finished [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub secondary_deadline: Option<Duration>,
    /// After SIGTERM/SIGINT, how long open sessions may take to finish [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub drain_timeout: Option<Duration>,
    /// Interceptors: backends one session may open [default: 16, or secondaries + 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_backends: Option<u16>,
    /// Interceptors: bytes one session may hold (on hold, or waiting behind an effect)
    /// [default: 1MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub max_held: Option<u64>,
    /// Interceptors: effects one session may have pending [default: 64].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_effects: Option<u32>,
    /// Interceptors: how long an effect may take before its hook hears it timed out
    /// [default: 5s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub effect_timeout: Option<Duration>,
    /// Interceptors: the longest message (a line, a request head, a frame) a framer buffers
    /// [default: 64KiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub max_frame: Option<u64>,
    /// Event loops (each with its own SO_REUSEPORT listener) [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Append one JSON line per finished session to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Record the engine's inputs (and a digest of its outputs) to FILE; see
    /// docs/capture-format.md. With --threads N, loop k>0 records to FILE.t<k>.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Rotate the capture to FILE.1, FILE.2, ... once a file passes this size [default: 1GiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    pub capture_max_size: Option<u64>,
    /// Recorded traffic waits in memory at most this long before it is written to the capture
    /// (what a crash can lose), and a digest of the outputs is recorded this often [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub capture_flush: Option<Duration>,
    /// Backend TCP connects bind to this source address first (the kernel picks the port);
    /// unix: backends ignore it.
    #[arg(long, value_name = "IP", value_parser = addr::parse_source)]
    pub bind_source: Option<IpAddr>,
    /// How a relay moves bulk bytes: `auto` splices (splice(2) through a pipe, no copy into the
    /// proxy) once a connection shows a bulk transfer, `always` from the first byte, `never`
    /// reads everything into memory. Only a relay to one TCP backend without --capture or a
    /// report splices; duplex always reads [default: auto].
    #[arg(long, value_name = "WHEN", value_enum)]
    pub splice: Option<SpliceMode>,
    /// TOML file with the same keys as the flags (kebab-case); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Debug logs, and one summary line per session on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Everything `fanout` needs to run, checked and resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Index is the engine's `BackendId`: the primary first, then the secondaries.
    pub backends: Vec<Backend>,
    pub engine: Config,
    pub threads: usize,
    pub report: Option<PathBuf>,
    pub verbose: bool,
    /// The form used: `relay`, `duplex`, `fanout` (the em-proxy form), a host program's name, or
    /// for balance its settings ([`BalanceConfig::mode`]); recorded in captures.
    pub mode: String,
    /// `fanout balance`: what each event loop's balancer runs with.
    pub balance: Option<BalanceConfig>,
    /// `--capture FILE`.
    pub capture: Option<PathBuf>,
    /// `--capture-max-size`: a capture file rotates once it passes this many bytes.
    pub capture_max_size: u64,
    /// `--capture-flush`: how long recorded traffic may wait in memory.
    pub capture_flush: Duration,
    /// `--bind-source`: backend TCP connects come from this address.
    pub bind_source: Option<IpAddr>,
    /// `--splice`: when a relay moves bytes kernel-side.
    pub splice: SpliceMode,
    /// The effect pool's size (host programs: `--effect-workers`, `--effect-queue`).
    pub effects: PoolConfig,
}

/// The default `--capture-max-size`.
pub const CAPTURE_MAX_SIZE: u64 = 1 << 30;
/// The default `--capture-flush`.
pub const CAPTURE_FLUSH: Duration = Duration::from_secs(1);

/// What went wrong parsing the command line.
#[derive(Debug)]
pub enum CliError {
    /// Clap's own error (also `--help` and `--version`, which are not failures): print it with
    /// `exit()`.
    Clap(clap::Error),
    /// Everything checked after clap: exit status 2 with this message.
    Usage(Error),
}

/// Parses the command line (including `argv[0]`) and any config file it names.
pub fn parse<I, T>(args: I) -> Result<Settings, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse_invocation(args)? {
        Invocation::Proxy(s) => Ok(*s),
        _ => Err(CliError::Usage(Error::Usage(
            "capture and replay run no proxy".into(),
        ))),
    }
}

/// Parses the command line (including `argv[0]`): a proxy's settings or a capture tool.
pub fn parse_invocation<I, T>(args: I) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cli = Cli::try_parse_from(args).map_err(CliError::Clap)?;
    match cli.mode.take() {
        Some(Mode::Capture(CaptureCmd::Inspect { file, json })) => {
            Ok(Invocation::Inspect { file, json })
        }
        Some(Mode::Replay(r)) => {
            if !(r.speed.is_finite() && r.speed > 0.0) {
                return Err(CliError::Usage(Error::Usage(
                    "--speed must be a positive number".into(),
                )));
            }
            if r.concurrency.contains(&0) {
                return Err(CliError::Usage(Error::Usage(
                    "--concurrency levels must be at least 1".into(),
                )));
            }
            Ok(Invocation::Replay(r))
        }
        mode => {
            cli.mode = mode;
            settings(cli)
                .map(|s| Invocation::Proxy(Box::new(s)))
                .map_err(|m| CliError::Usage(Error::Usage(m)))
        }
    }
}

/// The listen address, backends and common flags of whichever form was used.
struct Chosen {
    listen: Option<String>,
    primary: Option<String>,
    secondaries: Vec<String>,
    common: Common,
    /// How to name the flags in error messages.
    form: &'static str,
    listen_flag: &'static str,
    primary_flag: &'static str,
}

fn settings(cli: Cli) -> Result<Settings, String> {
    let chosen = match cli.mode {
        Some(Mode::Relay(a)) => Chosen {
            listen: a.listen,
            primary: a.to,
            secondaries: Vec::new(),
            common: a.common,
            form: "relay",
            listen_flag: "--listen ADDR",
            primary_flag: "--to ADDR",
        },
        Some(Mode::Duplex(a)) => Chosen {
            listen: a.listen,
            primary: a.primary,
            secondaries: a.secondary,
            common: a.common,
            form: "duplex",
            listen_flag: "--listen ADDR",
            primary_flag: "--primary ADDR",
        },
        Some(Mode::Balance(a)) => return balance_settings(a),
        Some(Mode::Capture(_) | Mode::Replay(_)) => {
            return Err("capture and replay run no proxy".into())
        }
        Some(Mode::Beanstalkd { .. }) => {
            return Err(
                "fanout beanstalkd is its own program: run it as `fanout beanstalkd`".into(),
            )
        }
        None => {
            let em = cli.em;
            if em.listen.is_none()
                && em.remote.is_none()
                && em.socket.is_none()
                && cli.common.config.is_none()
            {
                return Err(
                    "give a subcommand (relay, duplex, balance) or the em-proxy flags \
                     -l PORT -r HOST:PORT [-d HOST:PORT,...]; see fanout --help"
                        .into(),
                );
            }
            let socket = match em.socket {
                Some(path) => Some(format!(
                    "unix:{}",
                    path.to_str().ok_or("-s/--socket: the path is not UTF-8")?
                )),
                None => None,
            };
            Chosen {
                listen: em.listen,
                primary: em.remote.or(socket),
                secondaries: em.duplicate,
                common: cli.common,
                form: "fanout",
                listen_flag: "-l/--listen PORT|ADDR",
                primary_flag: "-r/--relay HOST:PORT or -s/--socket PATH",
            }
        }
    };
    let file = read_config(&chosen.common)?;
    build(chosen, file)
}

/// The `--config` file, or an empty one.
fn read_config(common: &Common) -> Result<FileConfig, String> {
    match &common.config {
        Some(path) => FileConfig::read(path),
        None => Ok(FileConfig::default()),
    }
}

fn build(c: Chosen, file: FileConfig) -> Result<Settings, String> {
    let is_duplex = c.form == "duplex";
    let listen = listen(c.listen, &file, c.form, c.listen_flag)?;
    let from_file_primary = match c.form {
        "relay" => match file.to().as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => {
                return Err(format!(
                    "relay takes one backend, but `to` in --config lists {}; use duplex for \
                     secondaries",
                    many.len()
                ))
            }
        },
        "duplex" => file.primary.clone(),
        _ => file.primary.clone().or(file.to().into_iter().next()),
    };
    let primary = c.primary.or(from_file_primary).ok_or_else(|| {
        format!(
            "{} needs {} (or `{}` in --config)",
            c.form,
            c.primary_flag,
            if c.form == "relay" { "to" } else { "primary" }
        )
    })?;
    let mut secondaries = c.secondaries;
    if secondaries.is_empty() && c.form != "relay" {
        secondaries = file.secondaries();
    }
    secondaries.retain(|s| !s.trim().is_empty());
    if is_duplex && secondaries.is_empty() {
        return Err(
            "duplex needs at least one --secondary ADDR (or `secondary` in --config)".into(),
        );
    }
    if secondaries.len() >= usize::from(u16::MAX) {
        return Err("too many secondaries".into());
    }
    let mut backends = vec![addr::parse_backend(&primary)?];
    for s in &secondaries {
        backends.push(addr::parse_backend(s)?);
    }
    let secondaries = secondaries.len() as u16;
    finish(listen, backends, secondaries, c.common, &file, c.form)
}

/// The settings of a program on [`crate::host`]: `--listen`, the upstream table from `--to`
/// (in order: `UpstreamId(0)` is the first), the effect pool's size, and the common flags, each
/// also from `--config`. `program` names the form in messages and is the capture's mode.
pub(crate) fn host_settings(args: HostArgs, program: &str) -> Result<Settings, String> {
    let file = read_config(&args.common)?;
    let effects = PoolConfig {
        workers: (args.effect_workers)
            .or(file.effect_workers)
            .unwrap_or(PoolConfig::default().workers),
        queue: (args.effect_queue)
            .or(file.effect_queue)
            .unwrap_or(PoolConfig::default().queue),
    };
    effects.validate()?;
    let mut settings = upstream_settings(args.listen, args.to, args.common, &file, program)?;
    settings.effects = effects;
    Ok(settings)
}

/// `fanout balance`: the upstream table as a host program's, then the strategy, retry interval
/// and seed (each flag, else the file, else the default; the seed drawn from the OS). The mode
/// recorded in captures names all three, so `replay --engine` rebuilds the same balancer.
fn balance_settings(args: BalanceArgs) -> Result<Settings, String> {
    let file = read_config(&args.common)?;
    let flags = args.balance;
    let strategy = match (flags.strategy, &file.strategy) {
        (Some(s), _) => s,
        (None, Some(text)) => {
            <Strategy as clap::ValueEnum>::from_str(text, false).map_err(|_| {
                format!(
                    "config `strategy`: unknown strategy {text:?} (use round-robin, least-conn or \
                 random)"
                )
            })?
        }
        (None, None) => BalanceConfig::STRATEGY,
    };
    let retry_after = duration(flags.retry_after, &file.retry_after, "retry-after")?
        .unwrap_or(BalanceConfig::RETRY_AFTER);
    let seed = match (flags.seed, &file.seed) {
        (Some(n), _) => n,
        (None, Some(n)) => n
            .text()
            .parse()
            .map_err(|_| format!("config `seed`: {:?} is not a number", n.text()))?,
        (None, None) => os_seed(),
    };
    let balance = BalanceConfig {
        strategy,
        seed,
        retry_after,
    };
    let mut settings = upstream_settings(args.listen, args.to, args.common, &file, "balance")?;
    settings.mode = balance.mode();
    settings.balance = Some(balance);
    Ok(settings)
}

/// A seed from the OS's randomness (std seeds `RandomState`'s keys from it).
fn os_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// A proxy over an upstream table (balance, host programs): `--listen`, the table from `--to`
/// (else `to` in the file; in order, `UpstreamId(0)` first; at least one), and the common flags.
fn upstream_settings(
    listen_flag: Option<String>,
    to: Vec<String>,
    common: Common,
    file: &FileConfig,
    form: &str,
) -> Result<Settings, String> {
    let listen = listen(listen_flag, file, form, "--listen ADDR")?;
    let mut to = if to.is_empty() { file.to() } else { to };
    to.retain(|s| !s.trim().is_empty());
    if to.is_empty() {
        return Err(format!(
            "{form} needs at least one --to ADDR (or `to` in --config)"
        ));
    }
    if to.len() > usize::from(u16::MAX) {
        return Err("too many upstreams (--to)".into());
    }
    let backends = to
        .iter()
        .map(|t| addr::parse_backend(t))
        .collect::<Result<Vec<_>, _>>()?;
    finish(listen, backends, 0, common, file, form)
}

/// The listen address from the flag, else the file; `form` and `flag` name them in the error.
fn listen(
    flag: Option<String>,
    file: &FileConfig,
    form: &str,
    flag_name: &str,
) -> Result<SocketAddr, String> {
    let listen = flag
        .or(file.listen())
        .ok_or_else(|| format!("{form} needs {flag_name} (or `listen` in --config)"))?;
    addr::parse_listen(&listen)
}

/// Stores `value` in `slot` when there is one.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// What every form shares: the common flags (each else from the file) into the engine's
/// config and the driver's settings, checked.
fn finish(
    listen: SocketAddr,
    backends: Vec<Backend>,
    secondaries: u16,
    cm: Common,
    f: &FileConfig,
    mode: &str,
) -> Result<Settings, String> {
    let mut cfg = Config {
        secondaries,
        ..Config::default()
    };
    set(
        &mut cfg.connect_timeout,
        duration(cm.connect_timeout, &f.connect_timeout, "connect-timeout")?,
    );
    set(
        &mut cfg.idle_timeout,
        duration(cm.idle_timeout, &f.idle_timeout, "idle-timeout")?,
    );
    set(
        &mut cfg.secondary_deadline,
        duration(
            cm.secondary_deadline,
            &f.secondary_deadline,
            "secondary-deadline",
        )?,
    );
    set(
        &mut cfg.drain_timeout,
        duration(cm.drain_timeout, &f.drain_timeout, "drain-timeout")?,
    );
    set(
        &mut cfg.max_connections,
        cm.max_connections.or(f.max_connections),
    );
    set(
        &mut cfg.high_water,
        size(cm.high_water, &f.high_water, "high-water")?,
    );
    set(
        &mut cfg.low_water,
        size(cm.low_water, &f.low_water, "low-water")?,
    );
    set(
        &mut cfg.secondary_budget,
        size(cm.secondary_budget, &f.secondary_budget, "secondary-budget")?,
    );
    set(
        &mut cfg.secondary_memory,
        size(cm.secondary_memory, &f.secondary_memory, "secondary-memory")?,
    );
    cfg.max_backends = cfg.max_backends.max(secondaries.saturating_add(1));
    set(&mut cfg.max_backends, cm.max_backends.or(f.max_backends));
    set(
        &mut cfg.max_held,
        size(cm.max_held, &f.max_held, "max-held")?,
    );
    set(&mut cfg.max_effects, cm.max_effects.or(f.max_effects));
    set(
        &mut cfg.effect_timeout,
        duration(cm.effect_timeout, &f.effect_timeout, "effect-timeout")?,
    );
    set(
        &mut cfg.max_frame,
        size(cm.max_frame, &f.max_frame, "max-frame")?,
    );
    let threads = cm.threads.or(f.threads).unwrap_or(1);
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let report = cm.report.or(f.report.clone());
    let verbose = cm.verbose || f.verbose.unwrap_or(false);
    cfg.reports = cfg.secondaries > 0 || report.is_some() || verbose;
    cfg.validate()
        .map_err(|e| format!("invalid configuration: {e}"))?;

    let capture_max_size = size(cm.capture_max_size, &f.capture_max_size, "capture-max-size")?
        .unwrap_or(CAPTURE_MAX_SIZE);
    if capture_max_size == 0 {
        return Err("--capture-max-size must be at least 1 byte".into());
    }
    let capture_flush =
        duration(cm.capture_flush, &f.capture_flush, "capture-flush")?.unwrap_or(CAPTURE_FLUSH);
    if capture_flush.is_zero() {
        return Err("--capture-flush must be more than 0".into());
    }
    let bind_source = match (cm.bind_source, &f.bind_source) {
        (Some(ip), _) => Some(ip),
        (None, Some(text)) => {
            Some(addr::parse_source(text).map_err(|e| format!("config `bind-source`: {e}"))?)
        }
        (None, None) => None,
    };
    if let Some(source) = bind_source {
        addr::check_source(source, &backends)?;
    }
    addr::check_not_self(listen, &backends)?;
    Ok(Settings {
        listen,
        backends,
        engine: cfg,
        threads,
        report,
        verbose,
        mode: mode.to_string(),
        balance: None,
        capture: cm.capture.or(f.capture.clone()),
        capture_max_size,
        capture_flush,
        bind_source,
        splice: cm.splice.or(f.splice).unwrap_or_default(),
        effects: PoolConfig::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ok(args: &[&str]) -> Settings {
        match parse(std::iter::once("fanout").chain(args.iter().copied())) {
            Ok(s) => s,
            Err(CliError::Clap(e)) => panic!("clap refused {args:?}: {e}"),
            Err(CliError::Usage(e)) => panic!("refused {args:?}: {e}"),
        }
    }

    /// The exit status the binary would use, and the message.
    fn bad(args: &[&str]) -> (i32, String) {
        match parse(std::iter::once("fanout").chain(args.iter().copied())) {
            Ok(s) => panic!("accepted {args:?}: {s:?}"),
            Err(CliError::Clap(e)) => (e.exit_code(), e.to_string()),
            Err(CliError::Usage(e)) => (i32::from(e.exit_code()), e.to_string()),
        }
    }

    fn names(s: &Settings) -> Vec<&str> {
        s.backends.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn relay_form_with_defaults() {
        let s = ok(&["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:8081"]);
        assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(names(&s), ["127.0.0.1:8081"]);
        assert_eq!(s.engine, Config::default());
        assert_eq!(s.threads, 1);
        assert!(!s.engine.reports);
    }

    #[test]
    fn duplex_form_takes_repeated_secondaries_and_reports() {
        let s = ok(&[
            "duplex",
            "--listen",
            "9000",
            "--primary",
            "8081",
            "--secondary",
            "8082",
            "--secondary",
            "unix:/tmp/s.sock",
            "--report",
            "/tmp/r.jsonl",
        ]);
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            names(&s),
            ["127.0.0.1:8081", "127.0.0.1:8082", "unix:/tmp/s.sock"]
        );
        assert_eq!(s.engine.secondaries, 2);
        assert!(s.engine.reports);
        assert_eq!(s.report, Some(PathBuf::from("/tmp/r.jsonl")));
    }

    #[test]
    fn em_proxy_form_with_comma_separated_duplicates() {
        let s = ok(&[
            "-l",
            "9001",
            "-r",
            "127.0.0.1:8081",
            "-d",
            "127.0.0.1:8082,127.0.0.1:8083",
            "-v",
        ]);
        assert_eq!(s.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            names(&s),
            ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
        );
        assert!(s.verbose);
        assert!(s.engine.reports);
        let s = ok(&["-l", "9001", "-r", "8081"]);
        assert_eq!(s.engine.secondaries, 0);
        assert!(!s.engine.reports);
    }

    #[test]
    fn verbose_alone_turns_reports_on_for_a_relay() {
        let s = ok(&["relay", "--listen", "0", "--to", "8081", "-v"]);
        assert!(s.engine.reports);
    }

    #[test]
    fn common_flags_fill_the_engine_config() {
        let s = ok(&[
            "relay",
            "--listen",
            "0",
            "--to",
            "8081",
            "--connect-timeout",
            "250ms",
            "--idle-timeout",
            "2m",
            "--max-connections",
            "7",
            "--high-water",
            "1MiB",
            "--low-water",
            "16KiB",
            "--secondary-budget",
            "8MiB",
            "--secondary-memory",
            "64MiB",
            "--secondary-deadline",
            "1s",
            "--drain-timeout",
            "3s",
            "--threads",
            "2",
        ]);
        let c = &s.engine;
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.high_water, 1 << 20);
        assert_eq!(c.low_water, 16 << 10);
        assert_eq!(c.secondary_budget, 8 << 20);
        assert_eq!(c.secondary_memory, 64 << 20);
        assert_eq!(c.secondary_deadline, Duration::from_secs(1));
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert_eq!(s.threads, 2);
    }

    #[test]
    fn capture_flags_and_tools_parse() {
        let s = ok(&[
            "relay",
            "--listen",
            "0",
            "--to",
            "8081",
            "--capture",
            "/tmp/c.fcap",
        ]);
        assert_eq!(s.capture, Some(PathBuf::from("/tmp/c.fcap")));
        assert_eq!(s.capture_max_size, CAPTURE_MAX_SIZE);
        assert_eq!(s.mode, "relay");
        assert_eq!(s.capture_flush, CAPTURE_FLUSH);
        let s = ok(&["-l", "9000", "-r", "8081", "--capture-max-size", "64MiB"]);
        assert_eq!((s.capture_max_size, s.mode.as_str()), (64 << 20, "fanout"));
        let s = ok(&["-l", "9000", "-r", "8081", "--capture-flush", "250ms"]);
        assert_eq!(s.capture_flush, Duration::from_millis(250));
        let (code, message) = bad(&["-l", "9000", "-r", "8081", "--capture-flush", "0s"]);
        assert_eq!(code, 2);
        assert!(message.contains("--capture-flush"), "{message}");

        let tool =
            |a: &[&str]| parse_invocation(std::iter::once("fanout").chain(a.iter().copied()));
        assert!(matches!(
            tool(&["capture", "inspect", "x.fcap", "--json"]),
            Ok(Invocation::Inspect { json: true, .. })
        ));
        assert!(matches!(
            tool(&["replay", "--engine", "x.fcap"]),
            Ok(Invocation::Replay(ReplayArgs { engine: true, .. }))
        ));
        let Ok(Invocation::Replay(r)) = tool(&[
            "replay",
            "x.fcap",
            "--to",
            "127.0.0.1:80",
            "--speed",
            "2.5",
            "--concurrency",
            "1,4,16",
        ]) else {
            panic!("replay --to refused")
        };
        assert_eq!((r.speed, r.concurrency), (2.5, vec![1, 4, 16]));
        assert_eq!(r.timeout, Duration::from_secs(30));
        for bad in [
            &["replay", "x.fcap"][..],
            &["replay", "x.fcap", "--to", "80", "--speed", "0"],
            &["replay", "x.fcap", "--to", "80", "--concurrency", "0,2"],
            &["replay", "--engine", "x.fcap", "--to", "80"],
            &["capture", "inspect"],
        ] {
            assert!(tool(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn balance_form_takes_an_upstream_table_and_records_its_settings_as_the_mode() {
        let s = ok(&[
            "balance",
            "--listen",
            "0",
            "--to",
            "8081",
            "--to",
            "unix:/tmp/b.sock",
            "--strategy",
            "random",
            "--seed",
            "123",
            "--retry-after",
            "1500ms",
        ]);
        assert_eq!(names(&s), ["127.0.0.1:8081", "unix:/tmp/b.sock"]);
        assert_eq!(
            s.engine.secondaries, 0,
            "the balancer opens upstreams itself"
        );
        let b = s.balance.expect("balance settings");
        assert_eq!(
            b,
            BalanceConfig {
                strategy: Strategy::Random,
                seed: 123,
                retry_after: Duration::from_millis(1500),
            }
        );
        assert_eq!(
            s.mode,
            "balance --strategy random --seed 123 --retry-after 1500ms"
        );
        assert_eq!(BalanceConfig::from_mode(&s.mode), Some(Ok(b)));
    }

    #[test]
    fn balance_defaults_to_round_robin_a_5s_retry_and_a_seed_from_the_os() {
        let s = ok(&["balance", "--listen", "0", "--to", "8081", "--to", "8082"]);
        let b = s.balance.unwrap();
        assert_eq!(b.strategy, Strategy::RoundRobin);
        assert_eq!(b.retry_after, Duration::from_secs(5));
        let seeds: Vec<u64> = (0..4)
            .map(|_| {
                ok(&["balance", "--listen", "0", "--to", "8081"])
                    .balance
                    .unwrap()
                    .seed
            })
            .collect();
        assert!(
            seeds.windows(2).any(|w| w[0] != w[1]),
            "the same seed every time: {seeds:?}"
        );
        assert_eq!(BalanceConfig::from_mode(&s.mode), Some(Ok(b)));
        assert_eq!(BalanceConfig::from_mode("relay"), None);
        assert!(matches!(
            BalanceConfig::from_mode("balance --strategy random"),
            Some(Err(_))
        ));
    }

    #[test]
    fn balance_keys_come_from_the_file_and_flags_win() {
        let f = config_file(
            "listen = 9100\nto = [\"8081\", \"8082\"]\nstrategy = \"least-conn\"\nretry-after = \"2s\"\nseed = 7\n",
        );
        let s = ok(&["balance", "--config", f.path()]);
        assert_eq!(names(&s), ["127.0.0.1:8081", "127.0.0.1:8082"]);
        assert_eq!(
            s.balance,
            Some(BalanceConfig {
                strategy: Strategy::LeastConn,
                seed: 7,
                retry_after: Duration::from_secs(2),
            })
        );
        let s = ok(&[
            "balance",
            "--config",
            f.path(),
            "--strategy",
            "random",
            "--seed",
            "8",
            "--retry-after",
            "1s",
        ]);
        let b = s.balance.unwrap();
        assert_eq!(
            (b.strategy, b.seed, b.retry_after),
            (Strategy::Random, 8, Duration::from_secs(1))
        );
        for text in [
            "listen = 9100\nto = \"8081\"\nstrategy = \"fastest\"\n",
            "listen = 9100\nto = \"8081\"\nretry-after = \"soon\"\n",
            "listen = 9100\nto = \"8081\"\nseed = \"x\"\n",
        ] {
            let f = config_file(text);
            let (code, msg) = bad(&["balance", "--config", f.path()]);
            assert_eq!(code, 2, "{text}: {msg}");
        }
    }

    #[test]
    fn an_unknown_strategy_is_refused_naming_the_valid_ones() {
        let (code, msg) = bad(&[
            "balance",
            "--listen",
            "0",
            "--to",
            "8081",
            "--strategy",
            "fastest",
        ]);
        assert_eq!(code, 2, "{msg}");
        for valid in ["round-robin", "least-conn", "random"] {
            assert!(msg.contains(valid), "{msg}");
        }
        let (code, msg) = bad(&["balance", "--listen", "0"]);
        assert_eq!(code, 2, "{msg}");
        assert!(
            msg.contains("balance needs at least one --to ADDR"),
            "{msg}"
        );
    }

    #[test]
    fn bad_flags_exit_with_status_2() {
        let cases: &[&[&str]] = &[
            &[],
            &["relay", "--listen", "0"],
            &["relay", "--to", "8081"],
            &["duplex", "--listen", "0", "--primary", "8081"],
            &["-l", "9000"],
            &["-r", "8081"],
            &["relay", "--listen", "0", "--to", "8081", "--bogus"],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--idle-timeout",
                "5",
            ],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--high-water",
                "4MB",
            ],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--low-water",
                "1MiB",
            ],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--max-connections",
                "0",
            ],
            &["relay", "--listen", "0", "--to", "8081", "--threads", "0"],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--bind-source",
                "localhost",
            ],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "[::1]:8081",
                "--bind-source",
                "127.0.0.2",
            ],
            &["relay", "--listen", "nonsense", "--to", "8081"],
            &["relay", "--listen", "unix:/tmp/x", "--to", "8081"],
            &[
                "relay",
                "--listen",
                "0",
                "--to",
                "8081",
                "--config",
                "/nonexistent/fanout.toml",
            ],
            &["-l", "9000", "-r", "8081", "relay"],
        ];
        for args in cases {
            let (code, msg) = bad(args);
            assert_eq!(code, 2, "{args:?}: {msg}");
            assert!(!msg.is_empty());
        }
    }

    #[test]
    fn missing_flag_message_names_the_flag() {
        let (_, msg) = bad(&["relay", "--listen", "0"]);
        assert!(msg.contains("--to"), "{msg}");
        let (_, msg) = bad(&["duplex", "--listen", "0", "--primary", "1"]);
        assert!(msg.contains("--secondary"), "{msg}");
    }

    fn config_file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    #[test]
    fn config_file_supplies_keys_and_flags_win() {
        let f = config_file(
            "listen = 9100\nto = \"127.0.0.1:8081\"\nidle-timeout = \"1m\"\nhigh-water = \"512KiB\"\nlow-water = 1024\nthreads = 3\n",
        );
        let s = ok(&["relay", "--config", f.path(), "--threads", "1"]);
        assert_eq!(s.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(names(&s), ["127.0.0.1:8081"]);
        assert_eq!(s.engine.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.engine.high_water, 512 << 10);
        assert_eq!(s.engine.low_water, 1024);
        assert_eq!(s.threads, 1, "the flag wins over the file");
    }

    #[test]
    fn capture_keys_come_from_the_file_and_flags_win() {
        let f = config_file(
            "listen = 9100\nto = \"8081\"\ncapture = \"/tmp/from-file.fcap\"\ncapture-max-size = \"2MiB\"\ncapture-flush = \"2s\"\n",
        );
        let s = ok(&["relay", "--config", f.path()]);
        assert_eq!(s.capture, Some(PathBuf::from("/tmp/from-file.fcap")));
        assert_eq!(s.capture_max_size, 2 << 20);
        assert_eq!(s.capture_flush, Duration::from_secs(2));
        let s = ok(&[
            "relay",
            "--config",
            f.path(),
            "--capture",
            "/tmp/flag.fcap",
            "--capture-max-size",
            "1KiB",
        ]);
        assert_eq!(s.capture, Some(PathBuf::from("/tmp/flag.fcap")));
        assert_eq!(s.capture_max_size, 1024);
    }

    #[test]
    fn every_kind_of_flag_wins_over_the_file() {
        let f = config_file(
            "listen = 9100\nto = \"8081\"\nidle-timeout = \"300ms\"\nhigh-water = \"512KiB\"\nmax-connections = 5\nreport = \"/tmp/from-file\"\n",
        );
        let s = ok(&[
            "relay",
            "--config",
            f.path(),
            "--listen",
            "9200",
            "--to",
            "8082",
            "--idle-timeout",
            "60s",
            "--high-water",
            "1MiB",
            "--max-connections",
            "6",
            "--report",
            "/tmp/from-flag",
        ]);
        assert_eq!(s.listen, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(names(&s), ["127.0.0.1:8082"]);
        assert_eq!(s.engine.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.engine.high_water, 1 << 20);
        assert_eq!(s.engine.max_connections, 6);
        assert_eq!(s.report, Some(PathBuf::from("/tmp/from-flag")));
    }

    #[test]
    fn secondary_memory_comes_from_the_flag_or_the_file_and_zero_is_refused() {
        assert_eq!(
            ok(&["relay", "--listen", "0", "--to", "8081"])
                .engine
                .secondary_memory,
            256 << 20
        );
        let f = config_file("listen = 9100\nto = \"8081\"\nsecondary-memory = \"8MiB\"\n");
        let s = ok(&["relay", "--config", f.path()]);
        assert_eq!(s.engine.secondary_memory, 8 << 20);
        let s = ok(&["relay", "--config", f.path(), "--secondary-memory", "1GiB"]);
        assert_eq!(s.engine.secondary_memory, 1 << 30);
        let (code, msg) = bad(&[
            "relay",
            "--listen",
            "0",
            "--to",
            "1",
            "--secondary-memory",
            "0",
        ]);
        assert_eq!(code, 2);
        assert!(msg.contains("secondary memory"), "{msg}");
    }

    #[test]
    fn bind_source_from_the_flag_or_the_file() {
        let s = ok(&["relay", "--listen", "0", "--to", "8081"]);
        assert_eq!(s.bind_source, None);
        let s = ok(&[
            "relay",
            "--listen",
            "0",
            "--to",
            "8081",
            "--bind-source",
            "127.0.0.2",
        ]);
        assert_eq!(s.bind_source, Some("127.0.0.2".parse().unwrap()));
        let f = config_file("listen = 9100\nto = \"8081\"\nbind-source = \"127.0.0.3\"\n");
        let s = ok(&["-l", "9000", "-r", "8081", "--config", f.path()]);
        assert_eq!(s.bind_source, Some("127.0.0.3".parse().unwrap()));
        let s = ok(&["relay", "--config", f.path(), "--bind-source", "127.0.0.4"]);
        assert_eq!(s.bind_source, Some("127.0.0.4".parse().unwrap()));
    }

    #[test]
    fn config_file_with_secondaries_for_duplex() {
        let f = config_file(
            "listen = \"127.0.0.1:0\"\nprimary = \"8081\"\nsecondary = [\"8082\", \"8083\"]\n",
        );
        let s = ok(&["duplex", "--config", f.path()]);
        assert_eq!(s.engine.secondaries, 2);
    }

    #[test]
    fn config_file_errors_are_usage_errors() {
        for text in [
            "listen = 9100\nto = \"8081\"\nbogus-key = 1\n",
            "listen = 9100\nto = \"8081\"\nidle-timeout = \"forever\"\n",
            "listen = 9100\nto = \"8081\"\nbind-source = \"10.0.0.1:80\"\n",
            "listen = 9100\nto = [\"8081\", \"8082\"]\n",
            "this is not toml",
        ] {
            let f = config_file(text);
            let (code, msg) = bad(&["relay", "--config", f.path()]);
            assert_eq!(code, 2, "{text}: {msg}");
        }
    }

    /// A scratch file removed on drop (the tests need nothing more than this).
    mod tempfile_path {
        pub struct TempPath(std::path::PathBuf);

        impl TempPath {
            pub fn with(text: &str) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "fanout-cli-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&path).unwrap();
                super::Write::write_all(&mut f, text.as_bytes()).unwrap();
                TempPath(path)
            }

            pub fn path(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}
