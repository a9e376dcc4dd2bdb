//! One run: build the turmoil world from a [`Plan`], apply its faults at their times, heal, let
//! it settle, and check every oracle.

use crate::driver::{run_proxy, ProxySpec};
use crate::hosts::{self, Shared, SharedRef, BACKEND_PORT, PROXY_PORT};
use crate::observe::Observer;
use crate::oracle;
use crate::scenario::{Fault, Plan, Scenario};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    pub scenario: Scenario,
    pub seed: u64,
    /// Hex digest of the engine's inputs and outputs over the run.
    pub digest: u64,
    /// The first oracle that failed, if any.
    pub failure: Option<String>,
    pub steps: u64,
    pub sessions: u64,
    /// Socket failures the engine saw.
    pub failures: u64,
    /// Reads paused by backpressure.
    pub pauses: u64,
    /// Every backend outcome in the reports, as (role, outcome) counts.
    pub outcomes: std::collections::BTreeMap<(fanout_engine::Role, fanout_engine::Outcome), u64>,
}

/// Virtual time the liveness phase may take after the last fault heals.
const LIVENESS: Duration = Duration::from_secs(120);

/// Everything observed in one simulation.
pub(crate) struct Observed {
    pub shared: Shared,
    pub obs: Observer,
    /// Error from turmoil (a host failed, or the clients did not finish in time).
    pub sim_error: Option<String>,
}

/// Runs the plan's world once.
pub(crate) fn simulate(plan: &Plan) -> Observed {
    let heal = plan.heal_at;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(heal + LIVENESS)
        .tick_duration(Duration::from_millis(1))
        // Fixed latencies: timing depends on the engine and the plan, never on how many
        // messages other links drew from turmoil's RNG.
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .rng_seed(plan.seed)
        .build();
    let shared: SharedRef = Rc::new(RefCell::new(Shared::default()));
    let obs = Rc::new(RefCell::new(Observer::new(&plan.cfg)));

    let mut backends = vec![("primary".to_string(), BACKEND_PORT)];
    for i in 0..plan.secondaries.len() {
        backends.push((format!("secondary{}", i + 1), BACKEND_PORT));
    }
    let spec = ProxySpec {
        cfg: plan.cfg.clone(),
        port: PROXY_PORT,
        backends,
    };
    {
        let obs = obs.clone();
        sim.host("proxy", move || {
            run_proxy(spec.clone(), fanout_engine::Passthrough, None, obs.clone())
        });
    }
    {
        let (seed, shared) = (plan.seed, shared.clone());
        sim.host("primary", move || {
            hosts::backend(seed, None, shared.clone())
        });
    }
    for (i, kind) in plan.secondaries.iter().enumerate() {
        let (seed, shared, kind) = (plan.seed, shared.clone(), *kind);
        sim.host(format!("secondary{}", i + 1), move || {
            hosts::backend(seed, Some(kind), shared.clone())
        });
    }
    for c in &plan.clients {
        let (c, shared) = (c.clone(), shared.clone());
        sim.client(format!("client{}", c.id), hosts::client(c, shared));
    }
    // The auditor outlives the clients by every deadline, so the engine's last timers have fired
    // when the run ends and the quiescence oracle reads its final state.
    let settle = (plan.cfg.secondary_deadline + plan.cfg.connect_timeout)
        .max(plan.cfg.idle_timeout)
        + Duration::from_secs(2);
    {
        let (shared, n) = (shared.clone(), plan.clients.len());
        sim.client("auditor", async move {
            while shared.borrow().clients.len() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(settle).await;
            Ok(())
        });
    }

    let sim_error = drive(&mut sim, &plan.faults);
    drop(sim);
    let shared = Rc::try_unwrap(shared)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    let obs = Rc::try_unwrap(obs)
        .map(RefCell::into_inner)
        .unwrap_or_else(|_| Observer::default());
    Observed {
        shared,
        obs,
        sim_error,
    }
}

/// Steps the simulation to its end, applying each fault when its time comes. Returns turmoil's
/// error, if any (a host failed, or the clients did not finish in time).
pub(crate) fn drive(sim: &mut turmoil::Sim<'_>, faults: &[(Duration, Fault)]) -> Option<String> {
    let mut faults = faults.iter().peekable();
    loop {
        while let Some((at, fault)) = faults.peek() {
            if sim.elapsed() < *at {
                break;
            }
            apply(sim, fault);
            faults.next();
        }
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, fault: &Fault) {
    match fault {
        Fault::Partition(h) => sim.partition("proxy", h.as_str()),
        Fault::Repair(h) => sim.repair("proxy", h.as_str()),
        Fault::Hold(h) => sim.hold("proxy", h.as_str()),
        Fault::Release(h) => sim.release("proxy", h.as_str()),
        Fault::Crash(h) => sim.crash(h.as_str()),
        Fault::Bounce(h) => sim.bounce(h.as_str()),
        Fault::Latency(h, d) => sim.set_link_max_message_latency("proxy", h.as_str(), *d),
    }
}

/// Runs `scenario` with `seed` and checks every oracle (including, for duplex scenarios, the twin
/// run without secondaries).
pub fn run(scenario: Scenario, seed: u64) -> RunResult {
    let plan = Plan::new(scenario, seed);
    let seen = simulate(&plan);
    let mut failure = oracle::check(&plan, &seen).err();
    if failure.is_none() && scenario.is_duplex() {
        let twin_plan = plan.without_secondaries();
        let twin = simulate(&twin_plan);
        failure = oracle::same_for_clients(&plan, &seen, &twin).err();
    }
    RunResult {
        scenario,
        seed,
        digest: seen.obs.digest(),
        failure,
        steps: seen.obs.steps,
        sessions: seen.obs.accepted,
        failures: seen.obs.failures,
        pauses: seen.obs.pauses,
        outcomes: seen.obs.reports.iter().flat_map(|r| &r.backends).fold(
            Default::default(),
            |mut m, b| {
                *m.entry((b.role, b.outcome)).or_default() += 1;
                m
            },
        ),
    }
}

/// The command that reproduces one seed.
pub fn repro(scenario: Scenario, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p fanout-sim --test scenarios {}   # or: cargo run -p fanout-sim -- run --seed {seed} --scenario {}",
        scenario.name().replace('-', "_"),
        scenario.name()
    )
}
