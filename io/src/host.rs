//! Your own proxy program on fanout: an [`Interceptor`] of yours, run by this crate's event loops
//! exactly as `fanout relay` runs the built-in one.
//!
//! A program is a `main` that hands [`main`] its name, its own flags (a `clap::Args` struct, or
//! [`NoFlags`]) and a function from those flags to a [`Program`]: how to make one interceptor per
//! event loop, and optionally how to make the [`Executor`] that carries out its effects. The
//! command line it gets:
//!
//! ```text
//! PROGRAM --listen ADDR --to ADDR [--to ADDR ...] [--bind-source IP] [--effect-workers N]
//!         [--effect-queue N] [COMMON] [the program's own flags]
//! PROGRAM replay --engine FILE [the program's own flags]
//! ```
//!
//! `--to` builds the upstream table in order: the interceptor's `UpstreamId(0)` is the first
//! `--to`. COMMON are `fanout`'s own flags (timeouts, water marks, `--threads`, `--report`,
//! `--capture`, `--config`, `-v`; see the README), parsed and checked by the same code. The
//! program prints `listening on ADDR`, takes signals as `fanout` does (SIGTERM/SIGINT drain, a
//! second one cuts the drain short, SIGHUP reopens the report file), and exits as `fanout` does:
//! 0 after a drain, 2 for a usage error, 1 for a runtime error, 128 + the signal after a drain
//! cut short. A capture it records names
//! the program as its mode; `PROGRAM replay --engine FILE` replays it into a fresh engine running
//! the same interceptor (built from the same flags) and exits 0 only if the engine reproduces
//! the recorded output digests. Replays never build the executor: recorded effect results are
//! engine inputs.
//!
//! ```no_run
//! use fanout_engine::Passthrough;
//! use fanout_io::host::{self, Program};
//!
//! /// The program's own flags, beside the host's.
//! #[derive(Debug, clap::Args)]
//! struct Flags {
//!     /// Log every session's client address.
//!     #[arg(long)]
//!     log_clients: bool,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     host::main("my-proxy", |flags: Flags| {
//!         let _log = flags.log_clients; // configure the interceptor from the flags
//!         Ok(Program::new(|| Passthrough))
//!     })
//! }
//! ```
//!
//! [`run`] is the same without the command line: a program that parses its own arguments
//! (flattening [`HostArgs`] into its `clap::Parser`) calls it with the parsed [`HostArgs`].
//!
//! With `--threads N` each event loop runs its own engine and its own interceptor from the
//! factory, all sharing one effect pool. The pool's workers call the executor off the event
//! loops; a full queue refuses an effect at once (`EffectError::Unavailable`), never blocking a
//! loop.

use crate::cli::{self, Common};
pub use crate::effects::{Executor, PoolConfig};
use crate::error::Error;
use crate::proxy::Proxy;
use crate::{init_logging, tools};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use fanout_engine::{Engine, Interceptor};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The host's flags, for a program's own `clap` command line (`#[command(flatten)]`).
#[derive(Debug, Args, Default)]
pub struct HostArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (IPv6 in brackets), or a bare port (127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// An upstream: IP:PORT, HOST:PORT or unix:/path. Repeat for more: the upstream table, in
    /// order (the first is UpstreamId 0).
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,
    /// Threads carrying out effects off the event loops [default: 4].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub effect_workers: Option<usize>,
    /// Effects that may wait for a worker; past it an effect is refused at once [default: 1024].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub effect_queue: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

impl HostArgs {
    /// Resolves the flags and the `--config` file into settings, checked as `fanout` checks its
    /// own; `program` is named in messages and recorded as a capture's mode. A problem is an
    /// [`Error::Usage`].
    pub fn settings(self, program: &str) -> Result<cli::Settings, Error> {
        cli::host_settings(self, program).map_err(Error::Usage)
    }
}

/// Binds, prints `listening on ADDR` on stdout, and runs until SIGTERM/SIGINT drains every
/// loop, exactly as `fanout relay` does; each event loop runs an interceptor from `make`, and
/// effects go to `executor` (without one, each is answered `EffectError::Unavailable`). Sets up
/// logging on stderr (unless the program already did).
pub fn run<I, F>(
    program: &str,
    args: HostArgs,
    make: F,
    executor: Option<Arc<dyn Executor>>,
) -> Result<(), Error>
where
    I: Interceptor + Send + 'static,
    Engine<I>: Send,
    F: Fn() -> I,
{
    let settings = args.settings(program)?;
    init_logging(program, settings.verbose);
    Proxy::bind_with(&settings, make, executor)?.serve()
}

/// What a program runs: a factory of interceptors (one per event loop, and one for a replay),
/// and optionally a factory of its effect executor, called only when the proxy runs (never for
/// a replay).
pub struct Program<I> {
    interceptor: Box<dyn Fn() -> I>,
    executor: Option<ExecutorFactory>,
}

type ExecutorFactory = Box<dyn FnOnce() -> Result<Arc<dyn Executor>, Error>>;

impl<I> Program<I> {
    /// A program whose loops each run `make()`; its effects are refused (no executor).
    pub fn new(make: impl Fn() -> I + 'static) -> Self {
        Program {
            interceptor: Box::new(make),
            executor: None,
        }
    }

    /// Carries out effects with the executor `make` returns (called once, after the flags are
    /// checked and before binding; its error ends the program with that error's exit status).
    pub fn with_executor(
        mut self,
        make: impl FnOnce() -> Result<Arc<dyn Executor>, Error> + 'static,
    ) -> Self {
        self.executor = Some(Box::new(make));
        self
    }
}

impl<I> std::fmt::Debug for Program<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

/// The flags of a program that has none of its own.
#[derive(Debug, Args, Default, Clone, Copy)]
#[command(about = None, long_about = None)]
pub struct NoFlags {}

/// The whole `main` of a program: parses `std::env::args()` (the host's flags plus the
/// program's own `A`, or `replay --engine FILE` plus `A`), calls `build` with the program's
/// flags, and runs the proxy or the replay. Exit status as `fanout`'s: 0 ok (a drain, a
/// reproduced replay, `--help`), 2 usage, 1 runtime, 3 a replay of a torn capture that
/// reproduced everything up to the tear. `build`'s error keeps its own kind.
///
/// The doc comment of `A` (a `clap::Args` struct) is the program's `--help` description. `A`'s
/// flags must not reuse the host's names (`--listen`, `--to`, ...): clap refuses the command at
/// start-up in debug builds.
pub fn main<A, I>(program: &str, build: impl FnOnce(A) -> Result<Program<I>, Error>) -> ExitCode
where
    A: Args,
    I: Interceptor + Send + 'static,
    Engine<I>: Send,
{
    let result = match parse::<A>(program, std::env::args_os()) {
        Ok(Invocation::Serve { host, flags }) => serve(program, *host, flags, build),
        Ok(Invocation::Replay { file, flags }) => replay(program, &file, flags, build),
        Err(e) => e.exit(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve<A, I>(
    program: &str,
    host: HostArgs,
    flags: A,
    build: impl FnOnce(A) -> Result<Program<I>, Error>,
) -> Result<(), Error>
where
    I: Interceptor + Send + 'static,
    Engine<I>: Send,
{
    let settings = host.settings(program)?;
    init_logging(program, settings.verbose);
    let Program {
        interceptor,
        executor,
    } = build(flags)?;
    let executor = executor.map(|make| make()).transpose()?;
    Proxy::bind_with(&settings, interceptor, executor)?.serve()
}

fn replay<A, I: Interceptor>(
    program: &str,
    file: &std::path::Path,
    flags: A,
    build: impl FnOnce(A) -> Result<Program<I>, Error>,
) -> Result<(), Error> {
    let p = build(flags)?;
    let mut out = std::io::stdout().lock();
    let result = tools::replay_engine_with(file, &mut out, program, p.interceptor);
    let _ = out.flush();
    result
}

/// What a program's command line asks for.
#[derive(Debug)]
enum Invocation<A> {
    Serve { host: Box<HostArgs>, flags: A },
    Replay { file: PathBuf, flags: A },
}

/// The program's clap command: the host's flags and `A`'s, or the `replay` subcommand with `A`'s.
fn command<A: Args>(program: &str) -> Command {
    let replay = A::augment_args(Command::new("replay"))
        .about(
            "Replay a capture into a fresh engine running this program's interceptor; exit 0 \
             only if it reproduces the recorded output digests",
        )
        .arg(
            Arg::new("engine")
                .long("engine")
                .action(ArgAction::SetTrue)
                .required(true)
                .help("Replay into the engine (the one replay a program offers)"),
        )
        .arg(
            Arg::new("file")
                .value_name("FILE")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("The capture's first file; FILE.1, FILE.2, ... are read after it"),
        );
    let top = Command::new(program.to_string())
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true)
        .subcommand(replay);
    A::augment_args(HostArgs::augment_args(top))
}

fn parse<A: Args>(
    program: &str,
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Invocation<A>, clap::Error> {
    let mut cmd = command::<A>(program);
    let mut matches = cmd.try_get_matches_from_mut(argv)?;
    let with_context = |e: clap::Error, cmd: &mut Command| e.format(cmd);
    let flags = |m: &mut ArgMatches, cmd: &mut Command| {
        A::from_arg_matches_mut(m).map_err(|e| with_context(e, cmd))
    };
    match matches.remove_subcommand() {
        Some((_, mut sub)) => {
            let file = sub
                .remove_one::<PathBuf>("file")
                .expect("clap requires FILE");
            let sub_cmd = cmd.find_subcommand_mut("replay").expect("defined above");
            let flags = flags(&mut sub, sub_cmd)?;
            Ok(Invocation::Replay { file, flags })
        }
        None => {
            let host = HostArgs::from_arg_matches_mut(&mut matches)
                .map_err(|e| with_context(e, &mut cmd))?;
            let flags = flags(&mut matches, &mut cmd)?;
            Ok(Invocation::Serve {
                host: Box::new(host),
                flags,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    #[derive(Debug, Args)]
    struct Greeting {
        /// What to say.
        #[arg(long)]
        greeting: String,
    }

    fn parse_as<A: Args>(args: &[&str]) -> Result<Invocation<A>, clap::Error> {
        parse::<A>("prog", std::iter::once("prog").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        command::<NoFlags>("prog").debug_assert();
        command::<Greeting>("prog").debug_assert();
    }

    #[test]
    fn host_flags_build_the_upstream_table_in_order() {
        let Ok(Invocation::Serve { host, .. }) = parse_as::<NoFlags>(&[
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:8081",
            "--to",
            "unix:/tmp/b.sock",
            "--bind-source",
            "127.0.0.2",
            "--idle-timeout",
            "2s",
            "--threads",
            "2",
            "--effect-workers",
            "8",
        ]) else {
            panic!("refused")
        };
        let s = host.settings("prog").unwrap();
        let names: Vec<_> = s.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:8081", "unix:/tmp/b.sock"]);
        assert_eq!(
            s.engine.secondaries, 0,
            "the interceptor opens upstreams itself"
        );
        assert_eq!(s.bind_source, Some("127.0.0.2".parse::<IpAddr>().unwrap()));
        assert_eq!(s.engine.idle_timeout, Duration::from_secs(2));
        assert_eq!(s.threads, 2);
        assert_eq!(s.mode, "prog");
        assert_eq!(
            s.effects,
            PoolConfig {
                workers: 8,
                queue: 1024
            }
        );
    }

    #[test]
    fn program_flags_parse_beside_the_host_flags_and_for_replay() {
        let Ok(Invocation::Serve { flags, .. }) =
            parse_as::<Greeting>(&["--listen", "0", "--to", "8081", "--greeting", "hi"])
        else {
            panic!("refused")
        };
        assert_eq!(flags.greeting, "hi");
        let Ok(Invocation::Replay { file, flags }) =
            parse_as::<Greeting>(&["replay", "--engine", "x.fcap", "--greeting", "yo"])
        else {
            panic!("replay refused")
        };
        assert_eq!(
            (file, flags.greeting),
            (PathBuf::from("x.fcap"), "yo".into())
        );
    }

    #[test]
    fn usage_errors_are_usage_errors() {
        let clap_code = |args: &[&str]| match parse_as::<Greeting>(args) {
            Err(e) => e.exit_code(),
            Ok(i) => panic!("accepted {args:?}: {i:?}"),
        };
        assert_eq!(
            clap_code(&["--listen", "0", "--to", "8081"]),
            2,
            "no --greeting"
        );
        assert_eq!(
            clap_code(&["replay", "x.fcap", "--greeting", "a"]),
            2,
            "no --engine"
        );
        assert_eq!(clap_code(&["--listen", "0", "replay", "--engine", "x"]), 2);
        assert_eq!(
            clap_code(&[
                "--listen",
                "0",
                "--to",
                "1",
                "--greeting",
                "a",
                "--bind-source",
                "x"
            ]),
            2
        );

        let settings = |args: &[&str]| match parse_as::<NoFlags>(args) {
            Ok(Invocation::Serve { host, .. }) => host.settings("prog"),
            other => panic!("{args:?}: {other:?}"),
        };
        for (args, says) in [
            (&["--to", "8081"][..], "prog needs --listen ADDR"),
            (&["--listen", "0"], "prog needs at least one --to ADDR"),
            (
                &["--listen", "0", "--to", "8081", "--effect-queue", "0"],
                "--effect-queue",
            ),
            (
                &[
                    "--listen",
                    "0",
                    "--to",
                    "[::1]:80",
                    "--bind-source",
                    "127.0.0.2",
                ],
                "IPv6",
            ),
        ] {
            match settings(args) {
                Err(Error::Usage(m)) => assert!(m.contains(says), "{args:?}: {m}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
