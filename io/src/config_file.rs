//! The `--config FILE` TOML file: the flags' long names as keys (kebab-case), every key optional.
//! Unknown keys are refused, so a typo never goes unnoticed.
//!
//! ```toml
//! listen = 9000                 # or "127.0.0.1:9000"
//! primary = "127.0.0.1:8080"    # `to` for relay
//! secondary = ["127.0.0.1:8081"]
//! # to = ["a:1", "unix:/b"]     # balance's (or a host program's) upstream table
//! # strategy = "least-conn"     # balance: round-robin, least-conn or random
//! # retry-after = "10s"         # balance: how long a failed upstream stays out of rotation
//! # seed = 42                   # balance: the random strategy's seed
//! bind-source = "10.0.0.5"      # backend connects come from this address
//! idle-timeout = "2m"
//! high-water = "512KiB"         # or a plain number of bytes
//! capture = "/var/tmp/traffic.fcap"
//! capture-max-size = "256MiB"
//! capture-flush = "500ms"       # recorded traffic reaches the file at least this often
//! ```

use crate::units::{parse_duration, parse_size};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct FileConfig {
    listen: Option<Scalar>,
    to: Option<OneOrMany>,
    pub primary: Option<String>,
    secondary: Option<OneOrMany>,
    pub report: Option<PathBuf>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub high_water: Option<Scalar>,
    pub low_water: Option<Scalar>,
    pub secondary_budget: Option<Scalar>,
    pub secondary_memory: Option<Scalar>,
    pub secondary_deadline: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_backends: Option<u16>,
    pub max_held: Option<Scalar>,
    pub max_effects: Option<u32>,
    pub effect_timeout: Option<String>,
    pub max_frame: Option<Scalar>,
    pub threads: Option<usize>,
    pub verbose: Option<bool>,
    pub capture: Option<PathBuf>,
    pub capture_max_size: Option<Scalar>,
    pub capture_flush: Option<String>,
    pub bind_source: Option<String>,
    pub splice: Option<crate::splice::SpliceMode>,
    pub effect_workers: Option<usize>,
    pub effect_queue: Option<usize>,
    pub strategy: Option<String>,
    pub retry_after: Option<String>,
    pub seed: Option<Scalar>,
}

/// A value written either as a number or as a string (`high-water = 65536` or `"64KiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Int(u64),
    Text(String),
}

impl Scalar {
    pub(crate) fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// `secondary = "a"` or `secondary = ["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(value: &Option<OneOrMany>) -> Vec<String> {
        match value {
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
            None => Vec::new(),
        }
    }
}

/// The largest `--config` file read: a real one is a few hundred bytes, so anything past this
/// is the wrong file (`/dev/zero`, a log), refused before it is held in memory.
pub(crate) const MAX_FILE: u64 = 1 << 20;

impl FileConfig {
    /// Reads and parses `path`, at most [`MAX_FILE`] bytes of it (read with that bound, so an
    /// endless file fails as fast as a large one).
    pub(crate) fn read(path: &Path) -> Result<FileConfig, String> {
        use std::io::Read;
        let cannot = |e: std::io::Error| format!("cannot read config file {}: {e}", path.display());
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(format!(
                "config file {} is larger than {} MiB: a config file is a short TOML text; is \
                 this the right file?",
                path.display(),
                MAX_FILE >> 20
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("config file {}: not UTF-8 text", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    pub(crate) fn listen(&self) -> Option<String> {
        self.listen.as_ref().map(Scalar::text)
    }

    pub(crate) fn secondaries(&self) -> Vec<String> {
        OneOrMany::list(&self.secondary)
    }

    /// `to = "a"` (relay) or `to = ["a", "b"]` (balance's or a host program's upstream table).
    pub(crate) fn to(&self) -> Vec<String> {
        OneOrMany::list(&self.to)
    }
}

/// The flag's duration if given, else the file's (parsed), else none.
pub(crate) fn duration(
    flag: Option<Duration>,
    file: &Option<String>,
    key: &str,
) -> Result<Option<Duration>, String> {
    match (flag, file) {
        (Some(d), _) => Ok(Some(d)),
        (None, Some(s)) => parse_duration(s)
            .map(Some)
            .map_err(|e| format!("config `{key}`: {e}")),
        (None, None) => Ok(None),
    }
}

/// The flag's byte size if given, else the file's (parsed), else none.
pub(crate) fn size(
    flag: Option<u64>,
    file: &Option<Scalar>,
    key: &str,
) -> Result<Option<u64>, String> {
    match (flag, file) {
        (Some(n), _) => Ok(Some(n)),
        (None, Some(s)) => parse_size(&s.text())
            .map(Some)
            .map_err(|e| format!("config `{key}`: {e}")),
        (None, None) => Ok(None),
    }
}
