//! # fanout-io: the production driver
//!
//! The [`fanout_engine`] decides everything; this crate gives it real sockets. It parses the
//! command line ([`cli`]), binds the listeners, and runs one mio event loop per thread, each with
//! its own engine and its own `SO_REUSEPORT` listener. The loop is a thin translator between
//! readiness and the engine's events and commands (see `driver.rs` for the exact rules).
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
pub mod cli;
mod clock;
mod driver;
pub mod error;
mod listener;
mod proxy;
pub mod report;
mod signals;
mod sockets;
mod stream;
pub mod units;
mod writeq;

pub use error::Error;
pub use proxy::Proxy;
pub use signals::{SignalGuard, Stopper};
