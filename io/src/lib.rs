//! # fanout-io: the production driver
//!
//! The [`fanout_engine`] decides everything; this crate gives it real sockets. It parses the
//! command line ([`cli`]), binds the listeners, and runs one mio event loop per thread, each with
//! its own engine and its own `SO_REUSEPORT` listener. The loop is a thin translator between
//! readiness and the engine's events and commands (see `driver.rs` for the exact rules).
//!
//! ## Module map
//!
//! | module | what it does |
//! |---|---|
//! | `main.rs` | the binary: parse, bind, print `listening on ADDR`, run, exit status |
//! | [`cli`] | clap flags of the three forms (relay, duplex, em-proxy) into [`cli::Settings`] |
//! | `config_file` | the `--config` TOML file (same keys as the flags; flags win) |
//! | [`addr`] | `IP:PORT`, `[IPv6]:PORT`, `host:PORT`, `unix:/path`, bare port |
//! | [`units`] | byte sizes (`4MiB`) and durations (`250ms`) |
//! | [`Proxy`] (`proxy.rs`) | binds the listeners, one event loop per thread, joins them |
//! | `listener` | `SO_REUSEPORT` listeners sharing one port for `--threads N` |
//! | `driver` | the event loop: readiness <-> engine events and commands |
//! | `sockets` | token <-> slot <-> `SockId` table with generation-checked tokens |
//! | `stream` | a TCP or unix socket; errno -> engine `Failure` |
//! | `writeq` | a socket's queue of `Bytes`, written with `send`/`writev` |
//! | `clock` | engine `Instant`s from one startup epoch |
//! | `capture` | `--capture`: the `Recorder` every engine input and output passes through |
//! | [`tools`] | `fanout capture inspect` and `fanout replay --engine` |
//! | [`playback`] | `fanout replay FILE --to ADDR`: recorded clients against a live server |
//! | `signals` | SIGTERM/SIGINT and [`Stopper`] -> drain, through a socket pair per loop |
//! | [`report`] | JSON Lines report and `-v` summary lines |
//! | [`error`] | usage (exit 2) vs runtime (exit 1) errors |
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
mod capture;
pub mod cli;
mod clock;
mod config_file;
mod driver;
pub mod error;
mod listener;
pub mod playback;
mod proxy;
pub mod report;
mod signals;
mod sockets;
mod stream;
pub mod tools;
pub mod units;
mod writeq;

pub use error::Error;
pub use proxy::Proxy;
pub use signals::{SignalGuard, Stopper};
