//! Gaps in the simulated hosts the swarm found: runs the engine did right that a host's model
//! of TCP failed. Each seed is kept as a regression test.

use fanout_sim::run::run_plan;
use fanout_sim::scenario::{Plan, Scenario};

/// primary-crash seed 99: a session's primary connect times out and the engine closes its
/// client while the client is still uploading. turmoil never gives a writer waiting for send
/// credits back to a closed peer, so the client host waited for ever and liveness failed; a real
/// client's blocked write fails on the proxy's RST. The client now gives up a write still blocked
/// `WRITER_GRACE` after its read side ended.
#[test]
fn a_client_closed_mid_upload_stops_writing_and_finishes() {
    let r = run_plan(&Plan::new(Scenario::PrimaryCrash, 99));
    assert_eq!(r.failure, None);
}
