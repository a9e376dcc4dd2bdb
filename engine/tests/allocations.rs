//! Allocations per message, pinned: the benchmark's scenarios (`benches/scenarios.rs`, shared
//! with `benches/engine.rs`) under a counting global allocator (`benches/counting.rs`, counting
//! per thread, so only what this test's thread runs is counted).
//!
//! In steady state (every session accepted and connected, the engine's queues grown to size)
//! relaying a keep-alive message, duplexing one, or relaying a 64 KiB read allocates nothing:
//! the read's `Bytes` is handed on by reference count and every queue is reused. The bounds below
//! leave room for an occasional amortised growth, not for one allocation per message: a `Vec`,
//! a `Box` or a `String` made per message (or per 64 messages) breaks them.
//!
//! A connection's life allocates per connection (measured 4 in relay, 7 in duplex with its
//! report, the driver's client-address `String` included); those bounds are the measured counts
//! plus half an allocation, so one more per connection breaks them too.

#[path = "../benches/counting.rs"]
mod counting;
#[path = "../benches/scenarios.rs"]
mod scenarios;

use scenarios::{Counts, Run, Scenario, SESSIONS};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const WARM_STEPS: u64 = 1_000;
const STEPS: u64 = 10_000;

/// Allocations per step in steady state, over `STEPS` steps after `WARM_STEPS`.
fn allocations_per_step(scenario: Scenario) -> (f64, f64) {
    let mut run = Run::new(scenario, SESSIONS);
    for _ in 0..WARM_STEPS {
        run.step();
    }
    let counted = counting::count(|| {
        for _ in 0..STEPS {
            run.step();
        }
    });
    let per = |n: u64| n as f64 / STEPS as f64;
    (per(counted.allocs), per(counted.bytes))
}

fn assert_at_most(scenario: Scenario, max_allocs: f64) {
    let (allocs, bytes) = allocations_per_step(scenario);
    println!(
        "{}: {allocs:.3} allocations ({bytes:.1} bytes) per {}",
        scenario.name(),
        scenario.unit()
    );
    assert!(
        allocs <= max_allocs,
        "{}: {allocs:.3} allocations ({bytes:.1} bytes) per {}, at most {max_allocs} allowed",
        scenario.name(),
        scenario.unit()
    );
}

/// At most one allocation per 100 steps: steady state allocates nothing per message.
const NONE_PER_STEP: f64 = 0.01;

#[test]
fn relaying_a_keep_alive_message_allocates_nothing_in_steady_state() {
    assert_at_most(Scenario::Relay, NONE_PER_STEP);
}

#[test]
fn duplexing_a_keep_alive_message_allocates_nothing_in_steady_state() {
    assert_at_most(Scenario::Duplex, NONE_PER_STEP);
}

#[test]
fn relaying_a_bulk_read_allocates_nothing_in_steady_state() {
    assert_at_most(Scenario::RelayBulk, NONE_PER_STEP);
}

#[test]
fn a_connection_allocates_a_bounded_few_times() {
    assert_at_most(Scenario::RelayLifecycle, 4.5);
    // The 8th: the session's digests, one allocation kept out of the legs so a relay has none.
    assert_at_most(Scenario::DuplexLifecycle, 8.5);
}

/// What an idle relay session costs the engine: its one leg and report, no digest state (an
/// XXH3 state alone is over 500 bytes), so 10,000 idle sessions stay small.
#[test]
fn a_relay_connection_allocates_under_half_a_kib() {
    let (_, bytes) = allocations_per_step(Scenario::RelayLifecycle);
    assert!(bytes <= 512.0, "{bytes:.1} bytes per relay connection");
}

/// The scenarios do what the benchmark says they do, and keep the engine's contract: each step
/// is the events and commands it is described as, and every session ends with nothing left.
#[test]
fn the_scenarios_keep_the_contract_and_do_what_they_say() {
    for scenario in Scenario::ALL {
        let mut run = Run::checked(scenario, 8);
        let before = run.driver.counts;
        let steps = 100;
        for _ in 0..steps {
            run.step();
        }
        let n = run.driver.counts.since(before);
        let name = scenario.name();
        assert_eq!(
            n.events,
            steps * scenario.events_per_step(),
            "{name}: events"
        );
        assert_eq!(n.timeouts, 0, "{name}: no deadline falls due");
        assert_eq!(
            n.pauses, 0,
            "{name}: every write is flushed at once: no pause"
        );
        assert_eq!(n.other, 0, "{name}");
        let per_step = |c: u64| {
            assert_eq!(c % steps, 0, "{name}: {n:?}");
            c / steps
        };
        let (writes, bytes, closes, reports) = match scenario {
            // Request to the primary, response to the client.
            Scenario::Relay => (2, 400, 0, 0),
            // Request to the primary and the secondary, response to the client.
            Scenario::Duplex => (3, 500, 0, 0),
            Scenario::RelayBulk => (1, 65_536, 0, 0),
            Scenario::RelayLifecycle => (2, 400, 2, 0),
            Scenario::DuplexLifecycle => (3, 500, 3, 1),
        };
        let expected = Counts {
            events: n.events,
            timeouts: 0,
            writes: writes * steps,
            write_bytes: bytes * steps,
            connects: 0,
            shutdowns: 0,
            closes: closes * steps,
            pauses: 0,
            reports: reports * steps,
            other: 0,
        };
        let lifecycle = matches!(
            scenario,
            Scenario::RelayLifecycle | Scenario::DuplexLifecycle
        );
        let got = if lifecycle {
            // A connection connects each backend and shuts every socket down before closing.
            assert_eq!(per_step(n.connects), closes - 1, "{name}: connects");
            assert_eq!(per_step(n.shutdowns), closes, "{name}: shutdowns");
            Counts {
                connects: 0,
                shutdowns: 0,
                ..n
            }
        } else {
            n
        };
        assert_eq!(got, expected, "{name}");
        let live = run.driver.engine.session_count();
        assert_eq!(live, 8, "{name}: only the long-lived sessions are open");
        run.close_all();
        run.driver.finish();
    }
}
