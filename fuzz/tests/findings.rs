//! Engine bugs the `intercept_events` target found, each as the input that showed it
//! (`fanout_fuzz::intercept_events::seeds::findings`), kept as regression tests now that the
//! engine is fixed: a backend opened after the client's EOF got no FIN; `close_client` left the
//! backends without one; what `on_effect` wrote paced nobody.

use fanout_fuzz::intercept_events::seeds::findings;
use fanout_fuzz::intercept_events::{
    decode, driver, encode, quiet_deliberate_panics, run_scenario,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The failure message of running `data`, if it fails.
fn failure(data: &[u8]) -> Option<String> {
    quiet_deliberate_panics();
    let scenario = decode(data).expect("decodes");
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
fn the_engine_keeps_its_contract_on_every_finding() {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed: Vec<String> = findings()
        .into_iter()
        .filter_map(|(name, s, was)| {
            failure(&encode(&s)).map(|m| format!("{name} (once: {was}): {m}"))
        })
        .collect();
    std::panic::set_hook(quiet);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
