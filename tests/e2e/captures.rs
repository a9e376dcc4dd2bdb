//! `--capture`, `fanout capture inspect` and `fanout replay`: recording a live proxy, replaying
//! every golden capture under `tests/captures/` into the engine, and refusing bad files with the
//! offset and exit status 1, never a panic.

use crate::support::backend::{echo, Backend};
use crate::support::client;
use crate::support::proxy::{args, run_to_exit, Fanout, Finished};
use crate::support::LIVENESS;
use std::path::{Path, PathBuf};

/// Where the golden captures live (cargo runs the tests from `io/`).
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/captures")
}

/// Every golden capture's first file (`*.fcap`; rotated files `*.fcap.N` are read with it).
pub fn goldens() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/captures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fcap"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden captures in tests/captures");
    files
}

fn fanout(cmd: &[&str], file: &Path) -> Finished {
    let mut a = args(cmd);
    a.push(file.to_str().unwrap().to_string());
    run_to_exit(&a, LIVENESS * 3)
}

fn assert_no_panic(f: &Finished) {
    assert!(
        !f.stderr.contains("panicked"),
        "fanout panicked:\n{}",
        f.stderr
    );
}

#[test]
fn every_golden_capture_replays_into_the_engine_to_its_digest() {
    for file in goldens() {
        let f = fanout(&["replay", "--engine"], &file);
        assert_no_panic(&f);
        assert!(
            f.status.success(),
            "replay --engine {} failed: {}{}",
            file.display(),
            f.stdout,
            f.stderr
        );
        assert!(
            f.stdout.starts_with("reproduced "),
            "unexpected output: {}",
            f.stdout
        );
    }
}

#[test]
fn inspect_summarises_every_golden_capture_and_dumps_its_records_as_json() {
    for file in goldens() {
        let f = fanout(&["capture", "inspect"], &file);
        assert_no_panic(&f);
        assert!(
            f.status.success(),
            "inspect {}: {}",
            file.display(),
            f.stderr
        );
        for word in ["sessions", "backend 0", "outputs after", "inputs"] {
            assert!(f.stdout.contains(word), "no {word:?} in:\n{}", f.stdout);
        }
        let f = fanout(&["capture", "inspect", "--json"], &file);
        assert!(f.status.success(), "inspect --json: {}", f.stderr);
        let mut lines = f.stdout.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(header["header"]["mode"].is_string(), "{header}");
        let mut reads = 0;
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["offset"].as_u64().is_some(), "{v}");
            if let Some(read) = v.pointer("/record/Input/event/Read") {
                let hex = read["data"].as_str().unwrap();
                assert_eq!(hex.len() as u64, 2 * read["len"].as_u64().unwrap());
                reads += 1;
            }
        }
        assert!(reads > 0, "no Read records in {}", file.display());
    }
}

/// Damaged copies of the first golden file, each with what makes it bad.
fn damaged() -> Vec<(&'static str, Vec<u8>)> {
    let good = std::fs::read(golden_dir().join("duplex-session.fcap")).unwrap();
    let header_len = u32::from_le_bytes(good[20..24].try_into().unwrap()) as usize;
    let records = 24 + header_len;
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_version = good.clone();
    bad_version[8] = 9;
    let mut huge = good[..records].to_vec();
    huge.extend_from_slice(&[0xFF; 4]);
    huge.extend_from_slice(&[0u8; 16]);
    let mut corrupt = good.clone();
    for b in &mut corrupt[records + 4..records + 12] {
        *b = 0xFF;
    }
    vec![
        ("empty", Vec::new()),
        ("wrong magic", bad_magic),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("cut in the preamble", good[..12].to_vec()),
        ("wrong version", bad_version),
        ("length prefix 0xFFFFFFFF", huge),
        ("corrupt record", corrupt),
    ]
}

#[test]
fn bad_captures_fail_with_the_offset_and_status_1_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes) in damaged() {
        let file = dir.path().join("bad.fcap");
        std::fs::write(&file, &bytes).unwrap();
        for cmd in [
            &["replay", "--engine"][..],
            &["capture", "inspect"][..],
            &["capture", "inspect", "--json"][..],
        ] {
            let f = fanout(cmd, &file);
            assert_no_panic(&f);
            assert_eq!(
                f.status.code(),
                Some(1),
                "{what}: fanout {cmd:?} should exit 1; stderr:\n{}",
                f.stderr
            );
            assert!(
                f.stderr.contains("at byte") && f.stderr.contains("bad.fcap"),
                "{what}: fanout {cmd:?}: the error should name the file and offset:\n{}",
                f.stderr
            );
        }
    }
}

#[test]
fn a_missing_capture_is_an_error_naming_the_file() {
    let f = fanout(&["replay", "--engine"], Path::new("/nonexistent/x.fcap"));
    assert_eq!(f.status.code(), Some(1));
    assert!(f.stderr.contains("/nonexistent/x.fcap"), "{}", f.stderr);
}

/// Requests through a relay with `--capture`, then SIGTERM: the files it rotated into replay
/// into the engine to the digests recorded at every file boundary.
#[test]
fn a_relay_capture_rotates_and_replays_to_its_digests() {
    let backend = Backend::spawn(echo);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.fcap");
    let mut proxy = Fanout::relay(
        backend.arg(),
        &[
            "--capture",
            file.to_str().unwrap(),
            "--capture-max-size",
            "1KiB",
        ],
    );
    for i in 0..8u8 {
        let request = vec![b'a' + i; 300 + usize::from(i)];
        assert_eq!(client::request(proxy.addr(), &request), request);
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
    assert!(
        Path::new(&format!("{}.2", file.display())).exists(),
        "8 requests of 300 bytes should fill three 1 KiB files"
    );
    let f = fanout(&["replay", "--engine"], &file);
    assert!(f.status.success(), "{}{}", f.stdout, f.stderr);
    let checked: u64 = f
        .stdout
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(checked >= 3, "one digest per file: {}", f.stdout);
    let f = fanout(&["capture", "inspect"], &file);
    assert!(
        f.stdout.contains("sessions 8;"),
        "inspect should count 8 sessions:\n{}",
        f.stdout
    );
}

/// Each `--threads` loop records its own engine: `FILE` and `FILE.t1`, each replayable.
#[test]
fn each_loop_records_its_own_capture() {
    let backend = Backend::spawn(echo);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("threads.fcap");
    let mut proxy = Fanout::relay(
        backend.arg(),
        &["--capture", file.to_str().unwrap(), "--threads", "2"],
    );
    for _ in 0..4 {
        assert_eq!(client::request(proxy.addr(), b"ping"), b"ping");
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
    for name in ["threads.fcap", "threads.fcap.t1"] {
        let f = fanout(&["replay", "--engine"], &dir.path().join(name));
        assert!(f.status.success(), "{name}: {}{}", f.stdout, f.stderr);
    }
}

/// A capture that cannot be created stops the proxy at start, with status 1.
#[test]
fn an_unwritable_capture_path_is_refused_at_start() {
    let a = args([
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--capture",
        "/nonexistent/dir/x.fcap",
    ]);
    let f = run_to_exit(&a, LIVENESS);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("capture"), "{}", f.stderr);
}

/// A capture holds the traffic itself: every file of it, rotated ones too, is its owner's alone
/// (0600), whatever the umask lets others read.
#[test]
fn capture_files_and_rotated_segments_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let backend = Backend::spawn(echo);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("private.fcap");
    let mut proxy = Fanout::relay(
        backend.arg(),
        &[
            "--capture",
            file.to_str().unwrap(),
            "--capture-max-size",
            "1KiB",
            "--threads",
            "2",
        ],
    );
    for i in 0..6u8 {
        let request = vec![b'a' + i; 600];
        assert_eq!(client::request(proxy.addr(), &request), request);
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.to_str().unwrap().ends_with(".fcap.1")),
        "no rotated segment among {files:?}"
    );
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

/// `--capture LINK` never writes through the link: fanout refuses to start, and the file the
/// link points to keeps what it held.
#[test]
fn a_capture_path_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"not yours").unwrap();
    let link = dir.path().join("c.fcap");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let a = args([
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--capture",
        link.to_str().unwrap(),
    ]);
    let f = run_to_exit(&a, LIVENESS);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("symbolic link"), "{}", f.stderr);
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
}

/// `fanout replay --to` with a list of levels prints one row per level; against an echo server
/// every recorded session completes (each client half-closes in the recording).
#[test]
fn replay_to_sweeps_concurrency_levels_with_a_row_each() {
    let backend = Backend::spawn(echo);
    let file = golden_dir().join("duplex-http.fcap");
    let mut a = args(["replay", file.to_str().unwrap(), "--to"]);
    a.push(backend.arg());
    a.extend(args([
        "--concurrency",
        "1,2,4",
        "--speed",
        "4",
        "--timeout",
        "10s",
    ]));
    let f = run_to_exit(&a, LIVENESS * 3);
    assert_no_panic(&f);
    assert!(f.status.success(), "{}\n{}", f.stdout, f.stderr);
    let rows: Vec<&str> = f.stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "one row per level:\n{}", f.stdout);
    for (row, level) in rows.iter().zip(["1", "2", "4"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], level, "{row}");
        assert_eq!(cols[1], "5", "5 sessions: {row}");
        assert_eq!(cols[2], "0", "no errors: {row}");
        assert!(cols[6].ends_with("ms"), "p50 in ms: {row}");
    }
}

/// A server that is not there: every session is an error, the table still prints, exit 1.
#[test]
fn replay_to_a_closed_port_counts_errors_and_exits_1() {
    let file = golden_dir().join("duplex-session.fcap");
    let closed = crate::support::backend::closed_port();
    let mut a = args(["replay", file.to_str().unwrap(), "--to"]);
    a.push(closed.to_string());
    let f = run_to_exit(&a, LIVENESS * 3);
    assert_no_panic(&f);
    assert_eq!(f.status.code(), Some(1), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("recorded "), "{}", f.stdout);
    assert!(f.stderr.contains("connect"), "{}", f.stderr);
}
