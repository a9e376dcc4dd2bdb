//! What a failing seed leaves behind: a capture of the engine's inputs, in the format
//! `fanout --capture` writes (`fanout_engine::capture`, schema 3), that replays exactly.
//!
//! A run is deterministic, so nothing is recorded while the swarm runs: a seed that failed is run
//! again with a [`Recording`] in the proxy host ([`crate::run::capture`]), which sees every input
//! as the driver hands it to the engine and every command the engine emits, as the io driver's
//! recorder does. The file then replays with `fanout replay --engine FILE` (relay and duplex: the
//! header's mode is `relay` or `duplex`) or `fanout-sim replay --engine FILE` (any scenario,
//! including the line rewriter of the intercept scenarios, mode [`LINE_REWRITER_MODE`], and with
//! `--mutant M` the engine's deliberate bug the run had switched on).

use crate::Scenario;
use fanout_engine::capture::{Encoder, Header, OutputDigest, Record, Run, RunId};
use fanout_engine::{Command, Config, Event, Instant};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// The header mode of a capture whose engine ran the simulator's line rewriter
/// ([`crate::interceptor::LineRewriter`]): only `fanout-sim replay --engine` replays it.
pub const LINE_REWRITER_MODE: &str = "fanout-sim line-rewriter";

/// Inputs between two `Outputs` records: a replay that diverges says where, to within this many.
const CHECK_EVERY: u64 = 256;

/// Runs `scenario` with `seed` again, recording (with `mutant`, the name of the engine bug
/// switched on for this thread, if any), writes the capture to `dir/SCENARIO-SEED[-MUTANT].fcap`
/// and returns the lines that say where it is and how to replay it. `digest` is the failed run's:
/// the recorded run must match it (runs are deterministic), and a note says so if it does not.
pub fn leave(
    dir: &Path,
    scenario: Scenario,
    seed: u64,
    digest: u64,
    mutant: Option<&str>,
) -> String {
    let (suffix, flag) = match mutant {
        Some(m) => (format!("-{m}"), format!(" --mutant {m}")),
        None => (String::new(), String::new()),
    };
    let path = dir.join(format!("{}-{seed}{suffix}.fcap", scenario.name()));
    let (bytes, outputs, again) = crate::run::capture(scenario, seed);
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, bytes));
    if let Err(e) = written {
        return format!("  evidence: cannot write {}: {e}", path.display());
    }
    let path = path.display();
    let mut lines = format!(
        "  evidence: {path} (the engine's inputs; its outputs digest {outputs:016x})\n  replay:    fanout-sim replay --engine {path}{flag}"
    );
    if !scenario.is_intercept() && mutant.is_none() {
        lines += &format!("\n             or: fanout replay --engine {path}");
    }
    if let Some(m) = mutant {
        lines += &format!(
            "\n  with the mutant: cargo run -p fanout-sim --features sim-mutants -- run --seed {seed} --scenario {} --mutant {m}",
            scenario.name()
        );
    }
    if again != digest {
        lines += &format!(
            "\n  note: recorded, the seed ran to digest {again:016x}, not {digest:016x}: the run is not deterministic"
        );
    }
    lines
}

/// A capture being recorded in memory.
#[derive(Debug)]
pub struct Recording {
    enc: Encoder,
    bytes: Vec<u8>,
    digest: OutputDigest,
    inputs: u64,
}

/// The proxy host and the runner share the recording (turmoil runs every host on one thread).
pub type RecordingRef = Rc<RefCell<Recording>>;

/// The run id of `(scenario, seed)`'s capture: the same for the same pair, so two captures of one
/// seed are byte for byte the same file.
pub fn run_id(scenario: &str, seed: u64) -> RunId {
    let mut key = scenario.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seed.to_le_bytes());
    RunId(xxhash_rust::xxh3::xxh3_128(&key))
}

impl Recording {
    /// Starts a capture of an engine built with `config`, running the interceptor `mode` names,
    /// whose upstream table is `backends` (host names).
    pub fn new(mode: &str, config: &Config, backends: &[String], run: RunId) -> Recording {
        let header = Header {
            segment: 0,
            mode: mode.to_string(),
            listen: "proxy".to_string(),
            backends: backends.to_vec(),
            config: config.clone(),
            // Virtual time: the driver's epoch is the simulation's start.
            epoch_unix_ms: 0,
            run: Some(Run {
                id: run,
                started_unix_ms: 0,
            }),
        };
        let mut enc = Encoder::default();
        let bytes = enc
            .header(&header)
            .map(<[u8]>::to_vec)
            .expect("a simulated config encodes");
        Recording {
            enc,
            bytes,
            digest: OutputDigest::default(),
            inputs: 0,
        }
    }

    /// Shares a new recording with the proxy host.
    pub fn shared(self) -> RecordingRef {
        Rc::new(RefCell::new(self))
    }

    /// Records one input, exactly as it is about to be handed to the engine (after the commands
    /// of every earlier input went through [`Recording::output`]).
    pub fn input(&mut self, at: Instant, event: &Event) {
        if self.inputs > 0 && self.inputs.is_multiple_of(CHECK_EVERY) {
            self.push(&self.outputs());
        }
        self.inputs += 1;
        self.push(&Record::Input {
            at,
            event: event.clone(),
        });
    }

    /// Adds one command the engine emitted to the digest.
    pub fn output(&mut self, cmd: &Command) {
        self.digest.update(cmd);
    }

    /// The digest of every command so far, as `fanout replay --engine` prints it.
    pub fn digest(&self) -> u64 {
        self.digest.value()
    }

    /// The whole file: everything recorded, closed by the digest of every command.
    pub fn finish(mut self) -> Vec<u8> {
        self.push(&self.outputs());
        self.bytes
    }

    fn outputs(&self) -> Record {
        Record::Outputs {
            commands: self.digest.count(),
            digest: self.digest.value(),
        }
    }

    fn push(&mut self, record: &Record) {
        // A record over the format's limit (16 MiB) cannot come from a simulated read.
        let bytes = self.enc.record(record).expect("a simulated record encodes");
        self.bytes.extend_from_slice(bytes);
    }
}
