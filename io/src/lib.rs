//! # fanout-io: the production driver
//!
//! The [`fanout_engine`] decides everything; this crate gives it real sockets. It parses the
//! command line ([`cli`]), binds the listeners, and runs one mio event loop per thread, each with
//! its own engine and its own `SO_REUSEPORT` listener. The loop is a thin translator between
//! readiness and the engine's events and commands (see `driver.rs` for the exact rules); effects
//! the engine asks for run on a bounded worker pool ([`effects`]), never on a loop.
//!
//! The same host runs any [`Interceptor`](fanout_engine::Interceptor): `fanout` runs the built-in
//! relay/duplex ([`Proxy::bind`]), and programs of your own run theirs through [`host`] (see
//! `io/examples/port_forward.rs`).
//!
//! ## Module map
//!
//! | module | what it does |
//! |---|---|
//! | `main.rs` | the binary: parse, bind, [`Proxy::serve`], exit status |
//! | [`host`] | programs on fanout: [`host::HostArgs`], [`host::run`], [`host::main`] (flags or `replay --engine`) |
//! | [`cli`] | clap flags of the three forms (relay, duplex, em-proxy), and a program's upstream table, into [`cli::Settings`] |
//! | `config_file` | the `--config` TOML file (same keys as the flags; flags win) |
//! | [`addr`] | `IP:PORT`, `[IPv6]:PORT`, `host:PORT`, `unix:/path`, bare port |
//! | [`units`] | byte sizes (`4MiB`) and durations (`250ms`) |
//! | [`Proxy`] (`proxy.rs`) | binds the listeners, one event loop (engine + interceptor) per thread, the effect pool; serves, joins |
//! | [`effects`] | the [`effects::Executor`] trait and the bounded worker pool that runs it off the loops |
//! | `listener` | `SO_REUSEPORT` listeners sharing one port for `--threads N` |
//! | `slots` | the process-wide `--max-connections`: one count of open clients every loop takes from before it accepts |
//! | `driver` | the event loop: readiness <-> engine events and commands |
//! | `sockets` | token <-> slot <-> `SockId` table with generation-checked tokens |
//! | `stream` | a TCP or unix socket, connects (from `--bind-source`); errno -> engine `Failure` |
//! | `writeq` | a socket's queue of `Bytes`, written with `send`/`writev` |
//! | [`splice`] | `--splice`: a relay's bulk bytes moved kernel-side through a pipe (`splice(2)`), where the engine grants it |
//! | `clock` | engine `Instant`s from one startup epoch |
//! | `capture` | `--capture`: the `Recorder` every engine input and output passes through, and its writer thread (`capture/writer.rs`) |
//! | [`tools`] | `fanout capture inspect` and `replay --engine` (the built-in or a program's interceptor) |
//! | [`playback`] | `fanout replay FILE --to ADDR`: recorded clients against a live server |
//! | `signals` | SIGTERM/SIGINT and [`Stopper`] -> drain (a second one cuts it short), through a socket pair per loop; SIGHUP reopens the report file |
//! | `files` | the report and capture files: created 0600, never through a symlink |
//! | [`report`] | JSON Lines report and `-v` summary lines |
//! | [`error`] | usage (exit 2) vs runtime (exit 1) errors, a drain cut short (128 + signal), and a torn capture read (exit 3) |
//! | `logging` | [`init_logging`]: tracing to stderr, `-v` and `RUST_LOG` |
//!
//! ```no_run
//! let settings = fanout_io::cli::parse(["fanout", "relay", "--listen", "0", "--to", "8080"])
//!     .map_err(|_| "bad flags")?;
//! let proxy = fanout_io::Proxy::bind(&settings)?;
//! println!("listening on {}", proxy.local_addr());
//! proxy.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_debug_implementations)]

pub mod addr;
pub mod balance;
pub mod beanstalkd;
mod capture;
pub mod cli;
mod clock;
mod config_file;
mod driver;
pub mod effects;
pub mod error;
mod files;
pub mod host;
mod listener;
mod logging;
pub mod playback;
mod proxy;
pub mod report;
mod signals;
mod slots;
mod sockets;
pub mod splice;
mod stream;
pub mod tools;
pub mod units;
mod writeq;

pub use error::Error;
pub use logging::init_logging;
pub use proxy::Proxy;
pub use signals::{SignalGuard, Stopper};
