//! A whole proxy: its listeners bound, one event loop per thread (each with its own engine and
//! interceptor), the effect pool they share, run until drained.

use crate::capture::{self, Recorder};
use crate::cli::Settings;
use crate::clock::Clock;
use crate::driver::{Driver, Ended, Intake, Upstreams};
use crate::effects::{Executor, Pool};
use crate::error::{describe, Error};
use crate::listener;
use crate::report::ReportSink;
use crate::signals::{self, SignalGuard, Stopper};
use crate::slots;
use fanout_engine::capture::{Header, Run};
use fanout_engine::{Config, Engine, Interceptor, Passthrough};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A bound, not yet running proxy. Binding happens in [`Proxy::bind`] (or [`Proxy::bind_with`])
/// so that the caller can print the listening address (and fail on a busy port) before anything
/// runs. `I` is the interceptor every loop's engine runs; relay and duplex use [`Passthrough`].
pub struct Proxy<I: Interceptor = Passthrough> {
    drivers: Vec<Driver<I>>,
    local_addr: SocketAddr,
    stopper: Stopper,
    /// Shared by every loop; SIGHUP reopens its file.
    reports: ReportSink,
    /// Stopped after every loop has ended.
    pool: Option<Pool>,
}

impl<I: Interceptor> std::fmt::Debug for Proxy<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.local_addr)
            .field("loops", &self.drivers)
            .field("effect_pool", &self.pool)
            .finish()
    }
}

/// Builds an engine around an interceptor: the one place the driver constructs engines, for
/// the proxy's loops and for `replay --engine` alike.
pub(crate) fn build_engine<I: Interceptor>(
    config: Config,
    interceptor: I,
) -> Result<Engine<I>, String> {
    Engine::with_interceptor(config, interceptor).map_err(|e| e.to_string())
}

impl Proxy<Passthrough> {
    /// Binds `settings.threads` listeners and prepares one event loop for each, running the
    /// built-in relay/duplex behaviour (`Engine::new`).
    pub fn bind(settings: &Settings) -> Result<Proxy, Error> {
        Proxy::bind_with(settings, || Passthrough, None)
    }
}

impl<I: Interceptor> Proxy<I> {
    /// Binds `settings.threads` listeners and prepares one event loop for each, every loop's
    /// engine running its own interceptor from `make` (called once per loop, here). Effects go
    /// to a pool of `settings.effects.workers` threads running `executor`; without one, every
    /// effect is answered `EffectError::Unavailable("no executor")`.
    pub fn bind_with(
        settings: &Settings,
        make: impl Fn() -> I,
        executor: Option<Arc<dyn Executor>>,
    ) -> Result<Proxy<I>, Error> {
        let listeners = listener::bind(settings.listen, settings.threads)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|e| Error::Runtime(format!("cannot listen on {}: {e}", settings.listen)))?;
        let clock = Clock::start();
        let names: Arc<[String]> = settings.backends.iter().map(|b| b.name.clone()).collect();
        let upstreams = Upstreams {
            table: settings.backends.clone().into(),
            bind_source: settings.bind_source,
            splice: settings.splice,
        };
        let sink = ReportSink::open(
            settings.report.as_deref(),
            settings.verbose,
            names,
            clock.wall_epoch,
        )
        .map_err(|e| {
            let path = settings.report.as_deref().unwrap_or("-".as_ref()).display();
            Error::Runtime(format!("cannot open report file {path}: {}", describe(&e)))
        })?;
        // Every engine keeps the process's `--max-connections`; the loops share one count of
        // open clients (`slots.rs`), so no loop's engine can reach it while another has room.
        let config = &per_loop_config(&settings.engine, listeners.len());
        let leases = slots::share(config.max_connections, listeners.len())
            .map_err(|e| Error::Runtime(format!("cannot set up an event loop: {e}")))?;
        let pool = match executor {
            Some(executor) => Some(
                Pool::start(executor, settings.effects)
                    .map_err(|e| Error::Runtime(format!("cannot start the effect workers: {e}")))?,
            ),
            None => None,
        };
        // One run identity for every loop's capture: they come from the same start.
        let run = match settings.capture {
            Some(_) => Some(capture::new_run(clock.wall_epoch).map_err(|e| {
                Error::Runtime(format!("cannot start the capture: {}", describe(&e)))
            })?),
            None => None,
        };
        let mut drivers = Vec::new();
        let mut triggers = Vec::new();
        for (index, (l, lease)) in listeners.into_iter().zip(leases).enumerate() {
            let runtime =
                |e: std::io::Error| Error::Runtime(format!("cannot set up an event loop: {e}"));
            let (rx, tx) = signals::trigger().map_err(runtime)?;
            let engine = build_engine(config.clone(), make())
                .map_err(|e| Error::Usage(format!("invalid configuration: {e}")))?;
            let recorder = match (&settings.capture, run) {
                (Some(path), Some(run)) => Some(start_capture(
                    settings,
                    config,
                    local_addr,
                    &clock,
                    &capture::loop_path(path, index),
                    run,
                )?),
                _ => None,
            };
            drivers.push(
                Driver::new(
                    engine,
                    clock,
                    Intake {
                        listener: l,
                        slots: lease,
                        drain: rx,
                    },
                    upstreams.clone(),
                    pool.as_ref(),
                    sink.clone(),
                    recorder,
                )
                .map_err(runtime)?,
            );
            triggers.push(tx);
        }
        Ok(Proxy {
            drivers,
            local_addr,
            stopper: Stopper::new(triggers),
            reports: sink,
            pool,
        })
    }

    /// The address the listeners are bound to (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that makes every loop drain, as SIGTERM does (and a second call ends the drain at
    /// once, as a second SIGTERM does).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }
}

impl<I> Proxy<I>
where
    I: Interceptor + Send + 'static,
    Engine<I>: Send,
{
    /// What the `fanout` binary does once bound: installs the signal handlers (first: a caller
    /// may signal as soon as it reads the next line; see `signals.rs`: SIGTERM/SIGINT drain, a
    /// second one cuts the drain short, SIGHUP reopens the report file), prints `listening on
    /// ADDR` on stdout and flushes it, then [`run`](Proxy::run)s until drained.
    pub fn serve(self) -> Result<(), Error> {
        let _signals = SignalGuard::install(&self.stopper(), self.reports.clone())
            .map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", self.local_addr());
        let _ = out.flush();
        drop(out);
        self.run()
    }

    /// Runs every loop (the first on this thread) until all have drained, then stops the effect
    /// pool. [`Error::DrainCutShort`] when a second drain request closed sessions that were
    /// still open.
    pub fn run(self) -> Result<(), Error> {
        let Proxy {
            drivers,
            pool,
            stopper,
            ..
        } = self;
        let result = run_loops(drivers);
        if let Some(pool) = pool {
            pool.shutdown();
        }
        match result? {
            Ended::Drained => Ok(()),
            Ended::CutShort => Err(stopper.cut_short()),
        }
    }
}

/// Runs the loops to their end: `CutShort` if any loop's drain was.
fn run_loops<I>(drivers: Vec<Driver<I>>) -> Result<Ended, Error>
where
    I: Interceptor + Send + 'static,
    Engine<I>: Send,
{
    let mut drivers = drivers.into_iter();
    let first = drivers.next().expect("at least one loop");
    let others: Vec<_> = drivers
        .enumerate()
        .map(|(i, d)| {
            std::thread::Builder::new()
                .name(format!("fanout-loop-{}", i + 1))
                .spawn(move || d.run())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Runtime(format!("cannot start an event loop thread: {e}")))?;
    let mut result = first.run().map_err(loop_failed);
    for t in others {
        let r = match t.join() {
            Ok(r) => r.map_err(loop_failed),
            Err(_) => Err(Error::Runtime("an event loop panicked".into())),
        };
        result = match (result, r) {
            (Ok(Ended::Drained), Ok(ended)) => Ok(ended),
            (Ok(Ended::CutShort), Ok(_)) => Ok(Ended::CutShort),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
    }
    result
}

/// Each loop runs its own engine, and an engine bounds only what its own secondaries hold: each
/// loop gets its share of `--secondary-memory` (rounded down, so the loops together never pass
/// it; at least a byte). `--max-connections` stays whole: the loops share one count of it
/// (`slots.rs`).
fn per_loop_config(cfg: &Config, threads: usize) -> Config {
    let threads = threads.max(1);
    Config {
        secondary_memory: (cfg.secondary_memory / threads as u64).max(1),
        ..cfg.clone()
    }
}

/// Opens one loop's capture file and writes its header.
fn start_capture(
    settings: &Settings,
    config: &Config,
    listen: SocketAddr,
    clock: &Clock,
    path: &Path,
    run: Run,
) -> Result<Recorder, Error> {
    let epoch_unix_ms = clock
        .wall_epoch
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let header = Header {
        segment: 0,
        mode: settings.mode.clone(),
        listen: listen.to_string(),
        backends: settings.backends.iter().map(|b| b.name.clone()).collect(),
        config: config.clone(),
        epoch_unix_ms,
        run: Some(run),
    };
    let every = settings.capture_flush;
    Recorder::create(path, settings.capture_max_size, every, header).map_err(|e| {
        Error::Runtime(format!(
            "cannot write the capture file {}: {}",
            path.display(),
            describe(&e)
        ))
    })
}

fn loop_failed(e: std::io::Error) -> Error {
    Error::Runtime(format!("event loop failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_memory_is_shared_between_loops_never_exceeding_the_total() {
        let cfg = Config {
            secondary_memory: 100,
            max_connections: 10,
            ..Config::default()
        };
        assert_eq!(per_loop_config(&cfg, 1).secondary_memory, 100);
        assert_eq!(per_loop_config(&cfg, 3).secondary_memory, 33);
        assert_eq!(per_loop_config(&cfg, 200).secondary_memory, 1);
        assert_eq!(per_loop_config(&cfg, 3).max_connections, 10);
        assert_eq!(per_loop_config(&cfg, 3).idle_timeout, cfg.idle_timeout);
    }
}
