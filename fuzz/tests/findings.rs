//! Engine bugs the `intercept_events` target found, as inputs
//! (`fanout_fuzz::intercept_events::seeds::findings`). Reported, not fixed, so the test that
//! expects them to pass is ignored: `cargo test -p fanout-fuzz --test findings -- --ignored`
//! shows each failure. Once the engine is fixed, un-ignore it and write the inputs into
//! `corpus/intercept_events/`.

use fanout_fuzz::intercept_events::seeds::findings;
use fanout_fuzz::intercept_events::{
    decode, driver, encode, quiet_deliberate_panics, run_scenario,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The failure message of running `data`, if it fails.
fn failure(data: &[u8], workarounds: bool) -> Option<String> {
    quiet_deliberate_panics();
    let mut scenario = decode(data).expect("decodes");
    scenario.flags.workarounds = workarounds;
    let err = catch_unwind(AssertUnwindSafe(|| {
        run_scenario(&scenario, driver(&scenario))
    }))
    .err()?;
    Some(
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

#[test]
#[ignore = "engine bugs found by intercept_events: reported, not fixed"]
fn the_engine_keeps_its_contract_on_every_finding() {
    let failed: Vec<String> = findings()
        .into_iter()
        .filter_map(|(name, s, _)| failure(&encode(&s), false).map(|m| format!("{name}: {m}")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Each finding still fails as reported (so the ignored test above stays meaningful), and the
/// interceptor's workarounds (`FANOUT_FUZZ_WORKAROUNDS`) avoid exactly those gaps.
#[test]
fn every_finding_fails_as_reported_and_the_workarounds_avoid_it() {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut wrong = Vec::new();
    for (name, scenario, message) in findings() {
        let data = encode(&scenario);
        match failure(&data, false) {
            Some(m) if m.contains(message) => {}
            other => wrong.push(format!(
                "{name}: expected failure {message:?}, got {other:?}"
            )),
        }
        if let Some(m) = failure(&data, true) {
            wrong.push(format!("{name} with workarounds: {m}"));
        }
    }
    std::panic::set_hook(quiet);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
