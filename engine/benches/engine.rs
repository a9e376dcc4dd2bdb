//! The sans-IO engine alone, under criterion: events per second through relay and duplex, and
//! allocations per message.
//!
//!     cargo bench -p fanout-engine --bench engine -- --warm-up-time 1 --measurement-time 3
//!
//! First, before any criterion group, one line per scenario: the allocations (and bytes asked
//! for) per step in steady state, counted by this binary's global allocator over
//! [`ALLOC_STEPS`] steps after [`WARM_STEPS`] of warm-up. Then one criterion benchmark per
//! scenario: the time of one step (a message, a 64 KiB read, a connection) and, as throughput,
//! engine events (`Engine::handle` calls) per second. The scenarios are in `scenarios.rs`;
//! `tests/allocations.rs` pins the allocation counts.

#[path = "counting.rs"]
mod counting;
#[path = "scenarios.rs"]
mod scenarios;

use criterion::{Criterion, Throughput};
use scenarios::{Run, Scenario, SESSIONS};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

/// Steps run before counting, so every queue the engine reuses has reached its size.
const WARM_STEPS: u64 = 1_000;
/// Steps counted.
const ALLOC_STEPS: u64 = 10_000;

fn print_allocations() {
    println!(
        "engine allocations per step, steady state ({ALLOC_STEPS} steps over {SESSIONS} sessions, \
         after {WARM_STEPS}; the driver's own included: read data is shared Bytes, a \
         connection's client address is one String):"
    );
    for scenario in Scenario::ALL {
        let mut run = Run::new(scenario, SESSIONS);
        for _ in 0..WARM_STEPS {
            run.step();
        }
        let events = run.driver.counts.events;
        let counted = counting::count(|| {
            for _ in 0..ALLOC_STEPS {
                run.step();
            }
        });
        let events = run.driver.counts.events - events;
        let per = |n: u64| n as f64 / ALLOC_STEPS as f64;
        println!(
            "  allocations per {}: {} {:.2} ({:.1} bytes per {}), {:.0} events per {}",
            scenario.unit(),
            scenario.name(),
            per(counted.allocs),
            per(counted.bytes),
            scenario.unit(),
            per(events),
            scenario.unit(),
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    for scenario in Scenario::ALL {
        // Set up outside the measurement: the sessions accepted and connected, then warm.
        let mut run = Run::new(scenario, SESSIONS);
        for _ in 0..WARM_STEPS {
            run.step();
        }
        group.throughput(Throughput::Elements(scenario.events_per_step()));
        group.bench_function(scenario.name(), |b| b.iter(|| run.step()));
        assert_eq!(
            run.driver.counts.other,
            0,
            "{}: unexpected commands",
            scenario.name()
        );
    }
    group.finish();
}

fn main() {
    print_allocations();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
