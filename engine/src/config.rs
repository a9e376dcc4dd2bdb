//! Every limit the engine enforces, in one place.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The engine's configuration. Every buffer has a bound and every wait a timeout, and each of them
/// is a field here; the driver fills it from flags or a config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How many secondaries each session fans out to (backends `1..=secondaries`).
    pub secondaries: u16,
    /// Open client connections at most; above it the engine pauses accepting.
    pub max_connections: usize,
    /// Bytes written to a socket but not yet flushed above which the engine pauses the reader
    /// feeding it (the client for the primary, the primary for the client).
    pub high_water: u64,
    /// Unflushed bytes at or below which a paused reader resumes. Less than `high_water`.
    pub low_water: u64,
    /// Unflushed bytes a secondary may hold before it is detached (`Outcome::DetachedBudget`).
    /// A secondary never pauses the client.
    pub secondary_budget: u64,
    /// How long a secondary may go on after the primary's leg ended before it is detached
    /// (`Outcome::DetachedDeadline`).
    pub secondary_deadline: Duration,
    /// Bytes of response kept per secondary to find where it first differs from the primary's.
    /// Past this window only digests are compared.
    pub compare_window: u64,
    /// How long a backend connect may take.
    pub connect_timeout: Duration,
    /// A session with no bytes moving in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// After `Event::Drain`, how long open sessions may take to finish before they are closed.
    pub drain_timeout: Duration,
    /// Emit a `Command::Report` for every finished session (always on in duplex).
    pub reports: bool,
    /// Backends one session may open (an interceptor opening more is stopped: its session is
    /// closed and reported `interceptor-error`).
    pub max_backends: u16,
    /// Bytes one session may hold inside the engine: bytes an interceptor put on hold, plus
    /// output waiting behind an effect. Past it the session is closed (`interceptor-error`).
    pub max_held: u64,
    /// Effects one session may have pending at once.
    pub max_effects: u32,
    /// How long the engine waits for an effect's result before it hands the interceptor
    /// `EffectError::TimedOut` and ignores the result if it comes.
    pub effect_timeout: Duration,
    /// The longest message a framer buffers (a line, a length-prefixed frame) before it reports
    /// the frame as too long instead of growing.
    pub max_frame: u64,
    /// Unflushed bytes all secondaries of all this engine's sessions may hold together (what
    /// `secondary_budget` bounds per secondary, summed over the engine). A write to a secondary
    /// that takes the total past it detaches that secondary (`Outcome::DetachedMemory`) and
    /// frees what it held; the primary and the client are never affected. One engine is one
    /// event loop: a driver running several shares its process-wide cap out between them.
    pub secondary_memory: u64,
}

impl Default for Config {
    /// Defaults for a relay: no secondaries, 10k connections, 256 KiB / 64 KiB water marks,
    /// 4 MiB secondary budget, 256 MiB for all secondaries together, 10 s secondary deadline,
    /// 5 s connect, 5 min idle, 30 s drain; for interceptors 16 backends, 1 MiB held, 64 effects
    /// of 5 s each, 64 KiB frames a session.
    fn default() -> Self {
        Config {
            secondaries: 0,
            max_connections: 10_000,
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            secondary_budget: 4 * 1024 * 1024,
            secondary_deadline: Duration::from_secs(10),
            compare_window: 4 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
            reports: false,
            max_backends: 16,
            max_held: 1024 * 1024,
            max_effects: 64,
            effect_timeout: Duration::from_secs(5),
            max_frame: 64 * 1024,
            secondary_memory: 256 * 1024 * 1024,
        }
    }
}

/// A configuration the engine cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the relations between limits; the engine refuses a config that fails this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.max_connections == 0 {
            return err("max connections must be at least 1");
        }
        if self.high_water == 0 {
            return err("high water mark must be at least 1 byte");
        }
        if self.low_water >= self.high_water {
            return err("low water mark must be below the high water mark");
        }
        if self.secondary_budget == 0 {
            return err("secondary budget must be at least 1 byte");
        }
        if self.secondary_memory == 0 {
            return err("secondary memory must be at least 1 byte");
        }
        if self.max_backends == 0 || self.max_backends > 63 {
            return err("max backends must be between 1 and 63");
        }
        if u64::from(self.secondaries) >= u64::from(self.max_backends) {
            return err("max backends must be above the number of secondaries");
        }
        if self.max_frame == 0 {
            return err("max frame must be at least 1 byte");
        }
        for (name, d) in [
            ("effect timeout", self.effect_timeout),
            ("connect timeout", self.connect_timeout),
            ("idle timeout", self.idle_timeout),
            ("secondary deadline", self.secondary_deadline),
        ] {
            if d.is_zero() {
                return Err(ConfigError(format!("{name} must be above zero")));
            }
        }
        Ok(())
    }
}
