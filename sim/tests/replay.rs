//! Captures replayed into the simulator: clients see exactly the recorded bytes, with or without
//! faults on the secondaries.

use fanout_engine::capture::{read_segments, script};
use fanout_sim::replay::{replay, FaultKind};

fn golden() -> (fanout_engine::capture::Header, Vec<script::SessionScript>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session.fcap"
    );
    let file = std::fs::File::open(path).expect("golden capture");
    let capture = read_segments([(path.to_string(), file)]).expect("golden capture decodes");
    let scripts = script::sessions(&capture.header, &capture.records).expect("replays");
    (capture.header, scripts)
}

#[test]
fn the_golden_capture_replays_to_the_recorded_client_bytes() {
    let (header, scripts) = golden();
    assert!(!scripts.is_empty());
    assert!(scripts.iter().all(|s| !s.client_saw.is_empty()));
    let r = replay(&header, &scripts, 1, &[]);
    assert_eq!(r.error, None);
    assert_eq!(r.mismatches, Vec::<String>::new());
    assert_eq!(r.matched, scripts.len());
}

#[test]
fn faults_on_the_secondaries_do_not_change_what_clients_see() {
    let (header, scripts) = golden();
    for seed in 0..4 {
        let faults = [
            FaultKind::Partition,
            FaultKind::Hold,
            FaultKind::Crash,
            FaultKind::Latency,
        ];
        let r = replay(&header, &scripts, seed, &faults);
        assert_eq!(r.mismatches, Vec::<String>::new(), "seed {seed}");
        assert_eq!(r.matched, scripts.len());
    }
}

#[test]
fn a_replay_notices_when_the_client_sees_other_bytes() {
    let (header, mut scripts) = golden();
    scripts[0].client_saw.push(b'!');
    let r = replay(&header, &scripts, 1, &[]);
    assert_eq!(r.matched, scripts.len() - 1);
    assert_eq!(r.mismatches.len(), 1);
}
