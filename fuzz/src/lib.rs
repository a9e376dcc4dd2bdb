//! # fanout-fuzz: fuzz targets for fanout, as plain functions
//!
//! Every target is a function `fn(&[u8])` in this library that panics when it finds a bug. Two
//! things call it:
//!
//! - `fuzz_targets/NAME.rs`, a one-line `fuzz_target!` that `cargo +nightly fuzz run NAME` builds
//!   with libFuzzer and sanitizer coverage;
//! - `tests/corpus.rs`, an ordinary stable test that runs every file under `corpus/NAME/` and
//!   `artifacts/NAME/` through it, so CI replays the corpora and every crash ever found without
//!   nightly or cargo-fuzz.
//!
//! Keeping the logic here rather than in the target files is what makes that replay possible, and
//! lets clippy and the stable test see all of it.
//!
//! [`TARGETS`] lists every target; the corpus test checks that it agrees with `fuzz_targets/`.
//!
//! ## Targets
//!
//! - [`engine_events`]: arbitrary operation sequences driven into an [`Engine`](fanout_engine::Engine)
//!   under relay and duplex configurations with small limits, by a model driver ([`driver`]) that
//!   checks every command against the contract and the relay/duplex streams ([`relay`]), then a
//!   liveness phase after which the engine must be idle.
//! - [`intercept_events`]: the same driver on an engine running a routing, answering, holding and
//!   effect-requesting interceptor decided by the client's bytes, checked against a model of what
//!   that interceptor makes every socket receive, effects answered in any order or timing.
//! - [`capture_decoder`]: raw bytes into the capture decoder, and whatever decodes replayed into an
//!   engine.
//! - [`framers`]: a byte stream into each [`framing`](fanout_engine::framing) framer, whole and cut
//!   into arbitrary pieces, against the framer's definition applied to the whole stream.
//! - [`beanstalkd`]: a client's stream into the beanstalkd request framer, cut into arbitrary
//!   chunks, against a reference transcribed from how beanstalkd itself reads (a differential
//!   check: the same answers, after the same bytes).
//!
//! Each new framer gets a target here, or a place in `framers` (see the README's "Fuzzing" section
//! for the two-step recipe).

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod beanstalkd;
pub mod capture_decoder;
pub mod driver;
pub mod engine_events;
pub mod framers;
pub mod intercept_events;
pub mod relay;

/// A fuzz target: it takes any bytes and panics on a bug.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the `[[bin]]`, the `fuzz_targets/NAME.rs` file and the
/// `corpus/NAME/` directory) and the function it runs.
pub const TARGETS: &[(&str, Target)] = &[
    ("engine_events", engine_events::run),
    ("capture_decoder", capture_decoder::run),
    ("framers", framers::run),
    ("intercept_events", intercept_events::run),
    ("beanstalkd", beanstalkd::run),
];
