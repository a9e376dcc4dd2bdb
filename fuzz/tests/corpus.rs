//! Replays every fuzz corpus and every crash ever found through its target, on stable: CI runs
//! the fuzzers' findings without nightly or cargo-fuzz.
//!
//! For each target in `fanout_fuzz::TARGETS`, every file under `fuzz/corpus/NAME/` and
//! `fuzz/artifacts/NAME/` is fed to the target function; a panic fails the test and names the
//! file. Reproduce one with `cargo test -p fanout-fuzz --test corpus -- --nocapture` or, for the
//! decoded scenario, `FANOUT_FUZZ_DEBUG=1 cargo +nightly fuzz run NAME FILE` in `fuzz/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The files in `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| p.file_name() != Some(std::ffi::OsStr::new(".gitkeep")))
        .collect();
    files.sort();
    files
}

fn replay(name: &str, run: fn(&[u8])) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for kind in ["corpus", "artifacts"] {
        for file in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&file).expect("readable corpus file");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "target {name} fails on {} input(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
    count
}

#[test]
fn every_target_replays_its_corpus_and_artifacts() {
    for (name, run) in fanout_fuzz::TARGETS {
        let count = replay(name, *run);
        assert!(
            count > 0,
            "target {name} has an empty corpus under fuzz/corpus/{name}/"
        );
        println!("{name}: {count} inputs replayed");
    }
}

#[test]
fn targets_table_matches_the_fuzz_target_files() {
    let mut files: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let mut names: Vec<String> = fanout_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(
        files, names,
        "every fuzz_targets/NAME.rs needs an entry in fanout_fuzz::TARGETS and vice versa"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in names {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

/// The empty input and a few short ones decode to trivial scenarios; each target must take them.
#[test]
fn targets_accept_trivial_inputs() {
    for (_, run) in fanout_fuzz::TARGETS {
        for data in [&b""[..], &[0], &[0xff; 64], b"FANOUTCP"] {
            run(data);
        }
    }
}

/// The hand-made seeds of `intercept_events` stay in its committed corpus (a `cmin` may drop them;
/// three of them are what catches the mutants of the programmable layer).
#[test]
fn intercept_events_corpus_keeps_the_hand_made_seeds() {
    let files: Vec<Vec<u8>> = inputs(&fuzz_dir().join("corpus").join("intercept_events"))
        .iter()
        .map(|p| std::fs::read(p).expect("readable corpus file"))
        .collect();
    for (name, scenario) in fanout_fuzz::intercept_events::seeds::seeds() {
        assert!(
            files.contains(&fanout_fuzz::intercept_events::encode(&scenario)),
            "seed {name} is missing from fuzz/corpus/intercept_events/: \
             cargo run -p fanout-fuzz --example intercept_seeds -- fuzz/corpus/intercept_events"
        );
    }
}

/// The same for `engine_events`' hand-made seeds (the secondaries' shared cap and descriptor
/// shortages, which the campaigns before them could not reach).
#[test]
fn engine_events_corpus_keeps_the_hand_made_seeds() {
    use fanout_fuzz::engine_events::seeds::{encode, seeds};
    let files: Vec<Vec<u8>> = inputs(&fuzz_dir().join("corpus").join("engine_events"))
        .iter()
        .map(|p| std::fs::read(p).expect("readable corpus file"))
        .collect();
    for (name, scenario) in seeds() {
        assert!(
            files.contains(&encode(&scenario)),
            "seed {name} is missing from fuzz/corpus/engine_events/: \
             cargo run -p fanout-fuzz --example engine_seeds -- fuzz/corpus/engine_events"
        );
    }
}
