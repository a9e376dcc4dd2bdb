//! The `fanout` binary: parse, bind, print `listening on ADDR`, run until drained.

use fanout_io::cli::{self, CliError, Invocation};
use fanout_io::{Error, Proxy};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "beanstalkd") {
        let mut args = argv[1..].to_vec();
        args[0] = "fanout beanstalkd".into(); // how usage lines name it
        return fanout_io::beanstalkd::cli::main(args);
    }
    let settings = match cli::parse_invocation(argv) {
        Ok(Invocation::Proxy(s)) => s,
        Ok(tool) => return run_tool(tool),
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Usage(e)) => return fail(&e),
    };
    fanout_io::init_logging("fanout", settings.verbose);
    let served = match settings.balance {
        // Each event loop gets its own balancer over the same upstream table.
        Some(balance) => {
            let names: Vec<String> = settings.backends.iter().map(|b| b.name.clone()).collect();
            tracing::info!("{} over {}", settings.mode, names.join(", "));
            Proxy::bind_with(&settings, || balance.balancer(&names), None).and_then(Proxy::serve)
        }
        None => Proxy::bind(&settings).and_then(Proxy::serve),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `capture inspect` and `replay`: no proxy, no logging set-up; results on stdout, errors on
/// stderr with exit status 1 (3 when the capture is torn but everything before the tear was
/// used; see [`fanout_io::Error::Torn`]).
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
