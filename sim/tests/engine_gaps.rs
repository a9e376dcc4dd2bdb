//! Gaps in the engine the simulator found, each reproduced exactly and kept as a regression test
//! once the engine was fixed. The simulator never works around them.

use fanout_sim::driver::READ_SIZE;
use fanout_sim::interceptor::LONGEST_EFFECT_ANSWER;
use fanout_sim::run::run_plan;
use fanout_sim::scenario::{Plan, Scenario};
use std::time::Duration;

/// The engine promises that answered bytes are bounded like relayed ones, but `on_effect` ran
/// with no source, so what it wrote recorded no route and paused nobody (fixed: it now runs
/// with the source whose hook asked for the effect). A client that stops reading while its `ASK` lines keep
/// being answered from effects makes the proxy hold every answer: nothing pauses the primary,
/// whose echoes keep asking for effects. Fixed, the answers would pace the socket whose bytes
/// asked for the effect (here the primary), and the client's queue would stay within one read
/// and the answers of the effects in flight past the high-water mark.
///
/// Seed 0, one stalled client sending 20 000 `ASK` lines and nothing else (so no hook write of
/// the line rewriter records a route); `max_effects` raised so it never answers `BUSY`.
#[test]
fn effect_answers_pace_the_source_that_asked_for_them() {
    let mut plan = Plan::new(Scenario::InterceptStalledClient, 0);
    plan.clients.truncate(1);
    let c = &mut plan.clients[0];
    c.lines = (0..20_000)
        .map(|k| format!("ASK c0.{k}.abcdefghijkl\n").into_bytes())
        .collect();
    c.request_len = c.lines.iter().map(Vec::len).sum::<usize>() as u32;
    c.stall = Duration::from_millis(4_500); // below the idle timeout
    plan.cfg.max_effects = 100_000;
    let effects = plan.effects.as_mut().expect("an intercept plan");
    effects.latency = (Duration::from_millis(1), Duration::from_millis(5));
    effects.fail_per_mille = 0;

    let r = run_plan(&plan);
    assert_eq!(r.failure, None);
    let bound =
        plan.cfg.high_water + READ_SIZE as u64 + r.effects.peak_in_flight * LONGEST_EFFECT_ANSWER;
    assert!(
        r.peak_client_unflushed <= bound,
        "the stalled client's socket held {} bytes; at most {} effects were in flight at once, \
         so paced answers would stay within {bound}",
        r.peak_client_unflushed,
        r.effects.peak_in_flight
    );
}
