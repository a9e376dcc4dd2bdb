//! Schema 2 (interceptor limits, before run identities and the secondaries' shared cap): the
//! header as it was stored then. Frozen here so that `Config` and [`super::Header`] may grow in
//! later schemas while schema 2 files keep decoding, and keep their fingerprint (computed over
//! these exact fields).
//!
//! Such a capture was recorded by an engine without `Config::secondary_memory`, so it is read
//! with no cap ([`NO_CAP`]) and replays as it ran. Its engine also reported `closed-early` where
//! today's says `idle-timeout`, `drain-timeout` or `client-gone`: a replay of a schema 1 or 2
//! capture hashes reports in those words ([`as_recorded`]).

use super::bincode_config;
use crate::config::Config;
use crate::report::{Outcome, SessionReport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `Config::secondary_memory` for captures recorded before the cap existed: never reached.
pub const NO_CAP: u64 = u64::MAX;

/// `Config` as schema 2 stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldConfig {
    pub secondaries: u16,
    pub max_connections: usize,
    pub high_water: u64,
    pub low_water: u64,
    pub secondary_budget: u64,
    pub secondary_deadline: Duration,
    pub compare_window: u64,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub reports: bool,
    pub max_backends: u16,
    pub max_held: u64,
    pub max_effects: u32,
    pub effect_timeout: Duration,
    pub max_frame: u64,
}

/// `Header` as schema 2 stored it: no run identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub segment: u32,
    pub mode: String,
    pub listen: String,
    pub backends: Vec<String>,
    pub config: OldConfig,
    pub epoch_unix_ms: u64,
}

/// The fingerprint schema 2 wrote: over its own `Config`.
pub fn fingerprint(config: &OldConfig) -> u64 {
    let bytes = bincode::serde::encode_to_vec(config, bincode_config()).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl From<OldConfig> for Config {
    // Every field schema 2 stored is listed; limits appended to `Config` since take their
    // defaults (the secondaries' cap excepted: those engines had none).
    #[allow(clippy::needless_update)]
    fn from(c: OldConfig) -> Config {
        Config {
            secondaries: c.secondaries,
            max_connections: c.max_connections,
            high_water: c.high_water,
            low_water: c.low_water,
            secondary_budget: c.secondary_budget,
            secondary_deadline: c.secondary_deadline,
            compare_window: c.compare_window,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            drain_timeout: c.drain_timeout,
            reports: c.reports,
            max_backends: c.max_backends,
            max_held: c.max_held,
            max_effects: c.max_effects,
            effect_timeout: c.effect_timeout,
            max_frame: c.max_frame,
            secondary_memory: NO_CAP,
            ..Config::default()
        }
    }
}

impl From<Header> for super::Header {
    fn from(h: Header) -> Self {
        super::Header {
            segment: h.segment,
            mode: h.mode,
            listen: h.listen,
            backends: h.backends,
            config: h.config.into(),
            epoch_unix_ms: h.epoch_unix_ms,
            run: None,
        }
    }
}

/// `report` as an engine before schema 3 worded it: idle, drain and a vanished client were all
/// `closed-early` then. (`detached-memory` and `no-descriptors` cannot arise in its replay: it
/// runs without the cap, and its captures hold no `Failure::NoDescriptors`.)
pub fn as_recorded(report: &SessionReport) -> SessionReport {
    let mut old = report.clone();
    for b in &mut old.backends {
        if matches!(
            b.outcome,
            Outcome::IdleTimeout | Outcome::DrainTimeout | Outcome::ClientGone
        ) {
            b.outcome = Outcome::ClosedEarly;
        }
    }
    old
}
