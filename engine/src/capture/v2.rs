//! Schema 2 (interceptor limits, before run identities): the header as it was stored then.
//! Frozen here so that `Config` and [`super::Header`] may grow in later schemas while schema 2
//! files keep decoding, and keep their fingerprint (computed over these exact fields).

use super::bincode_config;
use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    // defaults, which is why the update stays even while there are none.
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
