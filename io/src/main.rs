//! The `fanout` binary: parse, bind, print `listening on ADDR`, run until drained.

use fanout_io::cli::{self, CliError, Invocation};
use fanout_io::{Error, Proxy, SignalGuard};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match cli::parse_invocation(std::env::args_os()) {
        Ok(Invocation::Proxy(s)) => s,
        Ok(tool) => return run_tool(tool),
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Usage(e)) => return fail(&e),
    };
    init_logging(settings.verbose);
    let proxy = match Proxy::bind(&settings) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    // Handlers first: a test may send SIGTERM as soon as it reads the listening line.
    let _signals = match SignalGuard::install(&proxy.stopper()) {
        Ok(g) => g,
        Err(e) => {
            return fail(&Error::Runtime(format!(
                "cannot install signal handlers: {e}"
            )))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", proxy.local_addr());
    let _ = out.flush();
    drop(out);
    match proxy.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `capture inspect` and `replay`: no proxy, no logging set-up; results on stdout, errors on
/// stderr with exit status 1.
fn run_tool(tool: Invocation) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = match tool {
        Invocation::Inspect { file, json: false } => fanout_io::tools::inspect(&file, &mut out),
        Invocation::Inspect { file, json: true } => fanout_io::tools::dump_json(&file, &mut out),
        Invocation::Replay(r) if r.engine => fanout_io::tools::replay_engine(&r.file, &mut out),
        Invocation::Replay(r) => fanout_io::playback::run(&r),
        Invocation::Proxy(_) => Ok(()),
    };
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("fanout: error: {e}");
    ExitCode::from(e.exit_code())
}

/// Logs go to stderr. `RUST_LOG` wins; otherwise info, or debug for fanout's own code at -v.
fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "info,fanout=debug,fanout_io=debug,fanout_engine=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
