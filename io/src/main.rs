//! The `fanout` binary: parse, bind, print `listening on ADDR`, run until drained.

use fanout_io::cli::{self, CliError};
use fanout_io::{Error, Proxy, SignalGuard};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os()) {
        Ok(s) => s,
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
