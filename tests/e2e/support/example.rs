//! Example programs of fanout-io (`io/examples/`), found and built for the test.
//!
//! Cargo names only `[[bin]]` targets to integration tests (`CARGO_BIN_EXE_fanout`), so an example
//! is found where cargo puts it next to that binary: `<target>/<profile>/examples/NAME`. Whether
//! it exists there, and whether it was built from the current sources, depends on how the tests
//! were started (plain `cargo test` builds examples; `cargo test --test e2e` does not). So the
//! first test that asks for an example runs `cargo build --example NAME` once, with the cargo,
//! profile and target directory this test binary was built with: a no-op taking a fraction of a
//! second when the example is fresh, a build when it is missing or stale. Cargo releases its
//! build-directory lock before it runs tests, so this does not wait on the outer `cargo test`.
//!
//! `FANOUT_EXAMPLES=DIR` (an absolute path) skips the build and runs `DIR/NAME`, e.g. a release
//! build's `target/release/examples`, as `FANOUT_BIN` does for the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Examples built by this test process, by name.
static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// The path of example `name`, built and current. Panics with cargo's output if it cannot be.
pub fn path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FANOUT_EXAMPLES") {
        return Path::new(&dir).join(name);
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let p = build(name);
    built.insert(name.to_string(), p.clone());
    p
}

fn build(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_fanout"));
    let profile_dir = bin.parent().expect("the fanout binary is in a directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile dir is in a target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("cannot tell the cargo profile from {}", bin.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "fanout-io", "--example", name])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(
        out.status.success(),
        "cargo build --example {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "cargo built example {name}, but not at {} (set FANOUT_EXAMPLES=DIR to point at it)",
        path.display()
    );
    path
}
