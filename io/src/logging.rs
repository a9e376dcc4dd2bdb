//! Logs on stderr through `tracing`, for `fanout` and for programs on [`crate::host`] alike.

/// Sends logs to stderr. `RUST_LOG` wins; otherwise info, or debug at `-v` for the program's own
/// crate (`program`, with `-` read as `_`), fanout-io and the engine. Does nothing if the process
/// already set a global subscriber.
pub fn init_logging(program: &str, verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        let own: String = program
            .chars()
            .map(|c| if c == '-' { '_' } else { c })
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let own = if own.is_empty() {
            String::new()
        } else {
            format!(",{own}=debug")
        };
        format!("info{own},fanout_io=debug,fanout_engine=debug")
    } else {
        "info".to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
