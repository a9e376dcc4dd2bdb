//! One run: build the turmoil world from a [`Plan`], apply its faults at their times, heal, let
//! it settle, and check every oracle.

use crate::driver::{run_proxy, ProxySpec};
use crate::effects::{EffectLog, EffectLogRef, EffectModel};
use crate::evidence::{Recording, RecordingRef, LINE_REWRITER_MODE};
use crate::hosts::{self, Shared, SharedRef, BACKEND_PORT, PROXY_PORT};
use crate::interceptor::{LineRewriter, LONGEST_EFFECT_ANSWER};
use crate::line_hosts;
use crate::observe::Observer;
use crate::oracle;
use crate::scenario::{ClientPlan, Fault, Plan, Scenario};
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
    /// Every oracle that failed, each with its first violation (`oracle: what`, joined by
    /// `; `), if any did.
    pub failure: Option<String>,
    /// The names of the oracles that failed (see `oracle.rs`).
    pub oracles_failed: Vec<&'static str>,
    pub steps: u64,
    /// Clients in the plan, and sessions the proxy took on.
    pub clients: u64,
    pub sessions: u64,
    /// The longest the engine's clock leapt between two inputs while it held sessions.
    pub longest_gap: Duration,
    /// Virtual time the run (with its secondaries) lasted, and its twin without them.
    pub virtual_time: Duration,
    pub twin_virtual_time: Option<Duration>,
    /// Socket failures the engine saw.
    pub failures: u64,
    /// Reads paused by backpressure.
    pub pauses: u64,
    /// The most unflushed bytes a client socket held after an engine step.
    pub peak_client_unflushed: u64,
    /// Every backend outcome in the reports, as (role, outcome) counts.
    pub outcomes: std::collections::BTreeMap<(fanout_engine::Role, fanout_engine::Outcome), u64>,
    /// Effects the model carried out, answered with an error, and answered after the timeout.
    pub effects: EffectCounts,
}

/// How the effect model's faults struck in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EffectCounts {
    pub requested: u64,
    pub failed: u64,
    pub late: u64,
    /// The most effects in flight at one instant (requested, answer not yet delivered).
    pub peak_in_flight: u64,
    /// Effects in flight when the primary crashed (crash scenarios).
    pub in_flight_at_crash: u64,
}

impl EffectCounts {
    fn of(plan: &Plan, log: &EffectLog) -> EffectCounts {
        let spans: Vec<(Duration, Duration)> = log
            .answered
            .iter()
            .map(|a| (a.requested_at, a.requested_at + a.latency))
            .collect();
        let in_flight_at = |t: Duration| spans.iter().filter(|(a, b)| *a <= t && t < *b).count();
        let crash = plan.faults.iter().find_map(|(at, f)| match f {
            Fault::Crash(h) if h == "primary" => Some(*at),
            _ => None,
        });
        EffectCounts {
            requested: log.answered.len() as u64,
            failed: log.answered.iter().filter(|a| a.result.is_err()).count() as u64,
            late: log.answered.iter().filter(|a| a.late).count() as u64,
            peak_in_flight: spans
                .iter()
                .map(|(a, _)| in_flight_at(*a))
                .max()
                .unwrap_or(0) as u64,
            in_flight_at_crash: crash.map_or(0, in_flight_at) as u64,
        }
    }
}

/// Virtual time the liveness phase may take after the last fault heals.
const LIVENESS: Duration = Duration::from_secs(120);

/// How long the world must be quiet (settled, nothing on the wire) before a run ends early.
const GRACE: Duration = Duration::from_millis(50);

/// Everything observed in one simulation.
pub(crate) struct Observed {
    pub shared: Shared,
    pub obs: Observer,
    /// What the effect model answered (intercept scenarios).
    pub effects: EffectLog,
    /// Error from turmoil (a host failed, or the clients did not finish in time).
    pub sim_error: Option<String>,
    /// Virtual time the simulation ran for.
    pub elapsed: Duration,
}

/// Runs the plan's world once.
pub(crate) fn simulate(plan: &Plan) -> Observed {
    simulate_recording(plan, None)
}

/// Runs the plan's world once, recording the engine's inputs and outputs into `capture`.
fn simulate_recording(plan: &Plan, capture: Option<RecordingRef>) -> Observed {
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
    let mut observer = Observer::new(&plan.cfg);
    if plan.effects.is_some() {
        observer = observer.with_effect_answers(LONGEST_EFFECT_ANSWER);
    }
    let obs = Rc::new(RefCell::new(observer));
    let log: EffectLogRef = Rc::default();

    let mut backends = vec![("primary".to_string(), BACKEND_PORT)];
    for i in 0..plan.secondaries.len() {
        backends.push((format!("secondary{}", i + 1), BACKEND_PORT));
    }
    let spec = ProxySpec {
        cfg: plan.cfg.clone(),
        port: PROXY_PORT,
        backends,
        capture,
        events: plan.proxy_events.clone(),
    };
    let obs2 = obs.clone();
    match &plan.effects {
        None => sim.host("proxy", move || {
            run_proxy(spec.clone(), fanout_engine::Passthrough, None, obs2.clone())
        }),
        Some(effects) => {
            let model = EffectModel::new(plan.seed, effects.clone(), log.clone());
            sim.host("proxy", move || {
                let model: Rc<dyn crate::effects::Effects> = Rc::new(model.clone());
                run_proxy(spec.clone(), LineRewriter, Some(model), obs2.clone())
            })
        }
    };
    let mut hosts = vec![("primary".to_string(), None, plan.primary_pace)];
    for (i, kind) in plan.secondaries.iter().enumerate() {
        hosts.push((
            format!("secondary{}", i + 1),
            Some(*kind),
            Default::default(),
        ));
    }
    for (host, (name, kind, pace)) in hosts.into_iter().enumerate() {
        let (seed, shared) = (plan.seed, shared.clone());
        if plan.effects.is_some() {
            sim.host(name, line_hosts::echo_backend);
        } else {
            let early = host == 0 && plan.primary_closes_early;
            sim.host(name, move || {
                hosts::backend(seed, host, kind, pace, early, shared.clone())
            });
        }
    }
    // Clients no fault strikes share one host, "clients", which joins the simulation when the
    // first of them starts: turmoil steps every host on every tick, so a host per client would
    // cost a tick each for every client, sleeping or done. Each runs as its own task there, on
    // its own connection (the proxy tells them apart by port). A client some fault strikes
    // gets a host of its own, joined at once, so its link is there whenever the fault comes.
    let software = |c: ClientPlan, joined: Duration| -> ClientSoftware {
        let c = ClientPlan {
            start_at: c.start_at.saturating_sub(joined),
            ..c
        };
        let (seed, shared) = (plan.seed, shared.clone());
        if plan.effects.is_some() {
            Box::pin(line_hosts::client(c, shared))
        } else {
            Box::pin(hosts::client(seed, c, shared))
        }
    };
    let mut starts: Vec<Start> = Vec::new();
    let (faulted, together): (Vec<&ClientPlan>, Vec<&ClientPlan>) =
        plan.clients.iter().partition(|c| {
            let name = format!("client{}", c.id);
            plan.faults.iter().any(|(_, f)| f.host() == name)
        });
    for c in faulted {
        let name = format!("client{}", c.id);
        let sw = software(c.clone(), Duration::ZERO);
        starts.push((Duration::ZERO, Box::new(move |_| (name, sw))));
    }
    if let Some(first) = together.iter().map(|c| c.start_at).min() {
        let clients: Vec<ClientSoftware> = together
            .into_iter()
            .map(|c| software(c.clone(), first))
            .collect();
        starts.push((
            first,
            Box::new(move |_| ("clients".to_string(), Box::pin(run_together(clients)))),
        ));
    }
    starts.sort_by_key(|(at, _)| *at);
    // The auditor outlives the clients by every deadline: the run's upper bound. It ends sooner
    // (`drive_until`) once every client is done, the engine is idle (no session, no timer), the
    // effect model has answered every effect, and nothing has been on the wire for `GRACE`: the
    // quiescence oracle reads that final state, and nothing is left that could change it.
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

    let n = plan.clients.len();
    let settled = || {
        shared.borrow().clients.len() >= n
            && obs.borrow().engine_idle
            && log.borrow().in_flight() == 0
    };
    let sim_error = drive_until(&mut sim, &plan.faults, starts, settled);
    let elapsed = sim.elapsed();
    drop(sim);
    let shared = Rc::try_unwrap(shared)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    let obs = Rc::try_unwrap(obs)
        .map(RefCell::into_inner)
        .unwrap_or_else(|_| Observer::default());
    let effects = Rc::try_unwrap(log)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    Observed {
        shared,
        obs,
        effects,
        sim_error,
        elapsed,
    }
}

/// Steps the simulation to its end, applying each fault when its time comes. Returns turmoil's
/// error, if any (a host failed, or the clients did not finish in time).
pub(crate) fn drive(sim: &mut turmoil::Sim<'_>, faults: &[(Duration, Fault)]) -> Option<String> {
    drive_until(sim, faults, Vec::new(), || false)
}

/// Runs clients side by side on one host, each as its own task; the first error, if any.
async fn run_together(clients: Vec<ClientSoftware>) -> turmoil::Result {
    let tasks: Vec<_> = clients.into_iter().map(tokio::task::spawn_local).collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A client host's software.
type ClientSoftware = std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>>;

/// A client that joins the simulation at a virtual time: given the time it joins, it names its
/// host and gives its software.
type Start = (
    Duration,
    Box<dyn FnOnce(Duration) -> (String, ClientSoftware)>,
);

/// As [`drive`], starting each of `starts` (in time order) when its time comes, and ends the run
/// early once `settled()` holds and no message has been on any
/// link (in flight, scheduled or held) for `GRACE` of virtual time: a quiet world stays quiet,
/// so stepping it on to the clients' end would only cost time.
pub(crate) fn drive_until(
    sim: &mut turmoil::Sim<'_>,
    faults: &[(Duration, Fault)],
    starts: Vec<Start>,
    mut settled: impl FnMut() -> bool,
) -> Option<String> {
    let mut faults = faults.iter().peekable();
    let mut starts = starts.into_iter().peekable();
    let mut quiet_since: Option<Duration> = None;
    loop {
        // Hosts first: a fault due now may strike the link of a client joining now.
        while let Some((_, start)) = starts.next_if(|(at, _)| *at <= sim.elapsed()) {
            let (name, software) = start(sim.elapsed());
            sim.client(name, software);
        }
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
        if settled() && wire_empty(sim) {
            let since = *quiet_since.get_or_insert(sim.elapsed());
            if sim.elapsed() >= since + GRACE {
                return None;
            }
        } else {
            quiet_since = None;
        }
    }
}

/// No message on any link: none in flight, none scheduled, none held.
fn wire_empty(sim: &turmoil::Sim<'_>) -> bool {
    let mut empty = true;
    sim.links(|mut links| empty = links.all(|mut link| link.next().is_none()));
    empty
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
        Fault::FixedLatency(h, d) => sim.set_link_latency("proxy", h.as_str(), *d),
    }
}

/// Runs `scenario` with `seed` and checks every oracle (including, for duplex scenarios, the twin
/// run without secondaries).
pub fn run(scenario: Scenario, seed: u64) -> RunResult {
    run_plan(&Plan::new(scenario, seed))
}

/// Runs a plan (made by [`Plan::new`], possibly changed) and checks every oracle.
pub fn run_plan(plan: &Plan) -> RunResult {
    let (scenario, seed) = (plan.scenario, plan.seed);
    let seen = simulate(plan);
    let twin = scenario
        .is_duplex()
        .then(|| simulate(&plan.without_secondaries()));
    let failed = oracle::check_all(plan, &seen, twin.as_ref());
    let failure = (!failed.is_empty()).then(|| {
        failed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    RunResult {
        scenario,
        seed,
        digest: seen.obs.digest(),
        failure,
        oracles_failed: failed.iter().map(|f| f.oracle).collect(),
        steps: seen.obs.steps,
        clients: plan.clients.len() as u64,
        sessions: seen.obs.accepted,
        longest_gap: seen.obs.longest_gap,
        virtual_time: seen.elapsed,
        twin_virtual_time: twin.as_ref().map(|t| t.elapsed),
        failures: seen.obs.failures,
        pauses: seen.obs.pauses,
        peak_client_unflushed: seen.obs.peak_client_unflushed,
        outcomes: seen.obs.reports.iter().flat_map(|r| &r.backends).fold(
            Default::default(),
            |mut m, b| {
                *m.entry((b.role, b.outcome)).or_default() += 1;
                m
            },
        ),
        effects: EffectCounts::of(plan, &seen.effects),
    }
}

/// The capture a run of `scenario` with `seed` leaves as evidence (see [`crate::evidence`]):
/// the run with its secondaries, again, recorded. Returns the file's bytes, the digest of the
/// engine's outputs it ends with (which a replay prints) and the run's digest ([`RunResult`]'s).
/// With `sim-mutants`, the mutant switched on for this thread is in the recorded engine too.
pub fn capture(scenario: Scenario, seed: u64) -> (Vec<u8>, u64, u64) {
    let plan = Plan::new(scenario, seed);
    let mode = if scenario.is_intercept() {
        LINE_REWRITER_MODE
    } else if plan.cfg.secondaries > 0 {
        "duplex"
    } else {
        "relay"
    };
    let mut backends = vec!["primary".to_string()];
    backends.extend((1..=plan.secondaries.len()).map(|i| format!("secondary{i}")));
    let run = crate::evidence::run_id(scenario.name(), seed);
    let recording = Recording::new(mode, &plan.cfg, &backends, run).shared();
    let run_digest = simulate_recording(&plan, Some(recording.clone()))
        .obs
        .digest();
    let recording = Rc::try_unwrap(recording)
        .map(RefCell::into_inner)
        .expect("the simulation is over: nothing else holds the recording");
    let digest = recording.digest();
    (recording.finish(), digest, run_digest)
}

/// The command that reproduces one seed.
pub fn repro(scenario: Scenario, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p fanout-sim --test scenarios {}   # or: cargo run -p fanout-sim -- run --seed {seed} --scenario {}",
        scenario.name().replace('-', "_"),
        scenario.name()
    )
}
