//! A failing seed leaves evidence: a capture of the engine's inputs that replays exactly.

use fanout_engine::capture::{read_segments, Capture, Replayer};
use fanout_engine::{Engine, Interceptor, Passthrough};
use fanout_sim::evidence::{run_id, LINE_REWRITER_MODE};
use fanout_sim::interceptor::LineRewriter;
use fanout_sim::Scenario;

fn decode(bytes: &[u8]) -> Capture {
    read_segments([("capture".to_string(), bytes)]).expect("the capture decodes")
}

/// Replays every record; returns (inputs, digests checked, final digest).
fn replay<I: Interceptor>(capture: Capture, hooks: I) -> (u64, u64, u64) {
    let engine = Engine::with_interceptor(capture.header.config.clone(), hooks).unwrap();
    let mut r = Replayer::new(engine);
    for record in capture.records {
        r.apply(record, |_| {})
            .expect("the replay reproduces the run");
    }
    (r.inputs(), r.checked(), r.digest().value())
}

#[test]
fn a_seeds_capture_replays_to_the_outputs_digest_it_recorded() {
    for (scenario, seed) in [(Scenario::DuplexPartition, 3), (Scenario::RelayHealthy, 2)] {
        let (bytes, outputs, digest) = fanout_sim::run::capture(scenario, seed);
        assert_eq!(digest, fanout_sim::run(scenario, seed).digest);
        let capture = decode(&bytes);
        assert!(["relay", "duplex"].contains(&capture.header.mode.as_str()));
        assert_eq!(
            capture.header.run.map(|r| r.id),
            Some(run_id(scenario.name(), seed))
        );
        let (inputs, checked, digest) = replay(capture, Passthrough);
        assert!(inputs > 0 && checked > 0, "{}", scenario.name());
        assert_eq!(digest, outputs, "{} seed {seed}", scenario.name());
    }
}

#[test]
fn an_intercept_seeds_capture_replays_with_the_line_rewriter() {
    let (bytes, outputs, _) = fanout_sim::run::capture(Scenario::InterceptEffects, 1);
    let capture = decode(&bytes);
    assert_eq!(capture.header.mode, LINE_REWRITER_MODE);
    let (_, checked, digest) = replay(capture, LineRewriter);
    assert!(checked > 0);
    assert_eq!(digest, outputs);
}

#[test]
fn the_same_seed_captures_the_same_bytes() {
    let (a, ..) = fanout_sim::run::capture(Scenario::DuplexHold, 5);
    let (b, ..) = fanout_sim::run::capture(Scenario::DuplexHold, 5);
    assert!(a == b, "two captures of one seed differ");
}

#[cfg(feature = "sim-mutants")]
mod with_a_mutant {
    use std::path::PathBuf;
    use std::process::Command;

    const MUTANT: &str = "drop-tail-after-eof";

    fn sim(args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fanout-sim"))
            .args(args)
            .output()
            .expect("run fanout-sim");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn a_failing_seed_writes_a_capture_its_mutant_reproduces_exactly() {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("fanout-sim-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (ok, out, err) = sim(&[
            "run",
            "--seeds",
            "0..1",
            "--scenario",
            "relay-healthy",
            "--jobs",
            "1",
            "--mutant",
            MUTANT,
            "--evidence",
            dir.to_str().unwrap(),
        ]);
        assert!(!ok, "the mutant must make seed 0 fail:\n{out}{err}");
        let file = dir.join(format!("relay-healthy-0-{MUTANT}.fcap"));
        let path = file.to_str().unwrap();
        assert!(file.is_file(), "no capture at {path}:\n{out}");
        assert!(out.contains("SIM_SEED=0 cargo test"), "{out}");
        assert!(
            out.contains(&format!(
                "fanout-sim replay --engine {path} --mutant {MUTANT}"
            )),
            "{out}"
        );
        // The digest the failing run's engine emitted, as the evidence line states it.
        let recorded = out
            .split("outputs digest ")
            .nth(1)
            .and_then(|rest| rest.get(..16))
            .expect("the evidence line names the outputs digest")
            .to_string();

        let (ok, out, err) = sim(&["replay", "--engine", path, "--mutant", MUTANT]);
        assert!(
            ok,
            "the replay with the mutant must reproduce the run:\n{out}{err}"
        );
        assert!(out.contains(&format!("digest {recorded}")), "{out}");

        // The correct engine does not emit what the mutant did: the capture pins the bug.
        let (ok, _, err) = sim(&["replay", "--engine", path]);
        assert!(!ok);
        assert!(err.contains("diverged"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
