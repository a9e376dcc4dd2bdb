//! `fanout-sim`: run the simulation suite from the command line.
//!
//! ```text
//! fanout-sim run --seeds 0..100 [--scenario NAME|all] [--jobs N]
//!                                                       swarm on N threads: count passes, print failures
//! fanout-sim run --seed 7 --scenario NAME|all [--capture]  one seed; last line is the digest
//!   (a failing seed writes its capture to --evidence DIR and prints how to replay it)
//! fanout-sim replay --engine FILE [--mutant M]           a capture's inputs into the engine
//! fanout-sim list                                        the scenarios
//! fanout-sim mutants [--seeds N]                         (sim-mutants) the oracles catch planted bugs
//! fanout-sim run --seed 7 --scenario NAME --mutant M     (sim-mutants) one run with one planted bug
//! ```

use clap::{Parser, Subcommand};
use fanout_engine::capture::{read_segments, segment_name, Capture};
use fanout_sim::archive::ArchiveScenario;
use fanout_sim::{repro, run, Scenario};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fanout-sim",
    about = "Deterministic simulation of fanout under faults"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios for one seed or a range of seeds.
    Run {
        /// One seed (prints the run's digest as the last line).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A range of seeds, `A..B` (B exclusive).
        #[arg(long, value_parser = parse_range)]
        seeds: Option<Range<u64>>,
        /// A scenario name, or `all`.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// With --seed: also print the report outcomes and backpressure counts.
        #[arg(short, long)]
        verbose: bool,
        /// Seeds run at once, each on its own thread (default: the machine's cores). Every run is
        /// deterministic on its own, and the output is in seed order whatever the value.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        jobs: Option<u64>,
        /// Where a failing seed writes its capture (`SCENARIO-SEED.fcap`), which
        /// `fanout replay --engine` / `fanout-sim replay --engine` reproduce exactly.
        #[arg(long, default_value = "target/sim-evidence")]
        evidence: PathBuf,
        /// With --seed: write the capture to the evidence directory even if the run passes.
        #[arg(long, requires = "seed")]
        capture: bool,
        /// Switch on one of the engine's deliberate bugs (names as `mutants` prints them).
        #[cfg(feature = "sim-mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Run the archive world (`fanout beanstalkd`'s logic against a beanstalkd model and a
    /// store model, under store outages, proxy kills and server restarts).
    Archive {
        /// One seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A range of seeds, `A..B` (B exclusive).
        #[arg(long, value_parser = parse_range)]
        seeds: Option<Range<u64>>,
        /// An archive scenario name, or `all`.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Seeds run at once (default: the machine's cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        jobs: Option<u64>,
        /// Switch on one of the archiver's deliberate bugs.
        #[cfg(feature = "sim-mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// List the scenarios.
    List,
    /// Play a recorded capture's clients and backends as simulated hosts through the engine;
    /// with --engine, feed its inputs to the engine alone and check every recorded digest.
    Replay {
        /// The capture (its rotated segments FILE.1, FILE.2, ... are read too).
        file: String,
        /// Replay the engine's inputs (as `fanout replay --engine`), with the interceptor the
        /// capture's mode names: relay/duplex, or the intercept scenarios' line rewriter.
        #[arg(long)]
        engine: bool,
        /// With --engine: switch on this deliberate engine bug (a capture of a mutant's run).
        #[cfg(feature = "sim-mutants")]
        #[arg(long, requires = "engine")]
        mutant: Option<String>,
        /// Seed for fault timing and turmoil.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Faults on the secondaries, comma-separated: partition, hold, crash, latency.
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
    },
    /// Run the default seeds against each deliberate engine bug; print `caught` or `missed`.
    #[cfg(feature = "sim-mutants")]
    Mutants {
        /// Seeds per scenario.
        #[arg(long, default_value_t = fanout_sim::DEFAULT_SEEDS)]
        seeds: u64,
    },
}

/// Where failing seeds leave their captures, and the mutant the runs have switched on.
struct Evidence {
    dir: PathBuf,
    #[cfg(feature = "sim-mutants")]
    mutant: Option<&'static str>,
}

impl Evidence {
    /// See [`fanout_sim::evidence::leave`].
    fn leave(&self, scenario: Scenario, seed: u64, digest: u64) -> String {
        #[cfg(feature = "sim-mutants")]
        let mutant = self.mutant;
        #[cfg(not(feature = "sim-mutants"))]
        let mutant = None;
        fanout_sim::evidence::leave(&self.dir, scenario, seed, digest, mutant)
    }
}

#[cfg(feature = "sim-mutants")]
fn find_mutant(name: &str) -> Option<fanout_engine::mutants::Mutant> {
    use fanout_engine::mutants::Mutant;
    let found = Mutant::ALL.into_iter().find(|m| m.name() == name);
    if found.is_none() {
        eprintln!("fanout-sim: unknown mutant {name:?}");
    }
    found
}

/// `fanout-sim replay --engine FILE`: every recorded input into a fresh engine (with the
/// interceptor the header's mode names), every recorded digest checked.
fn replay_engine(file: &str) -> ExitCode {
    use fanout_engine::capture::Replayer;
    use fanout_engine::{Engine, Interceptor, Passthrough};
    use fanout_sim::evidence::LINE_REWRITER_MODE;

    fn go<I: Interceptor>(
        capture: fanout_engine::capture::Capture,
        hooks: I,
    ) -> Result<String, String> {
        let engine = Engine::with_interceptor(capture.header.config.clone(), hooks)
            .map_err(|e| format!("the recorded config is refused: {e}"))?;
        #[cfg(feature = "sim-mutants")]
        let engine = {
            let mut engine = engine;
            engine.set_mutant(fanout_sim::mutants::current());
            engine
        };
        let mut r = Replayer::new(engine);
        for record in capture.records {
            r.apply(record, |_| {})
                .map_err(|d| format!("the replay diverged: {d}"))?;
        }
        if r.checked() == 0 {
            return Err("the capture holds no Outputs digest to check against".into());
        }
        Ok(format!(
            "reproduced {} inputs, {} commands, digest {:016x} ({} digest(s) checked)",
            r.inputs(),
            r.digest().count(),
            r.digest().value(),
            r.checked()
        ))
    }

    let capture = match open_capture(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match capture.header.mode.as_str() {
        "relay" | "duplex" => go(capture, Passthrough),
        LINE_REWRITER_MODE => go(capture, fanout_sim::interceptor::LineRewriter),
        other => Err(format!(
            "recorded by `{other}`, whose interceptor the simulator does not have"
        )),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fanout-sim: {file}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|e| format!("bad start {a:?}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("bad end {b:?}: {e}"))?;
    if a >= b {
        return Err(format!("empty range {s:?}"));
    }
    Ok(a..b)
}

fn scenarios(name: &str) -> Result<Vec<Scenario>, String> {
    if name == "all" {
        return Ok(Scenario::ALL.to_vec());
    }
    Scenario::from_name(name).map(|s| vec![s]).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!(
            "unknown scenario {name:?}; one of: all, {}",
            names.join(", ")
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List => {
            for s in Scenario::ALL {
                println!("{}", s.name());
            }
            for s in ArchiveScenario::ALL {
                println!("{} (fanout-sim archive)", s.name());
            }
            ExitCode::SUCCESS
        }
        Cmd::Archive {
            seed,
            seeds,
            scenario,
            jobs,
            #[cfg(feature = "sim-mutants")]
            mutant,
        } => {
            let scenarios = if scenario == "all" {
                ArchiveScenario::ALL.to_vec()
            } else if let Some(s) = ArchiveScenario::from_name(&scenario) {
                vec![s]
            } else {
                let names: Vec<&str> = ArchiveScenario::ALL.iter().map(|s| s.name()).collect();
                eprintln!(
                    "fanout-sim: unknown archive scenario {scenario:?}; one of: all, {}",
                    names.join(", ")
                );
                return ExitCode::from(2);
            };
            let seeds = match (seed, seeds) {
                (Some(s), _) => s..s + 1,
                (None, Some(r)) => r,
                (None, None) => {
                    eprintln!("fanout-sim: give --seed N or --seeds A..B");
                    return ExitCode::from(2);
                }
            };
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |j| j as usize,
            );
            #[cfg(feature = "sim-mutants")]
            if let Some(name) = mutant {
                use fanout_engine::archive::ArchiveMutant;
                let Some(m) = ArchiveMutant::ALL.into_iter().find(|m| m.name() == name) else {
                    eprintln!("fanout-sim: unknown archive mutant {name:?}");
                    return ExitCode::from(2);
                };
                return archive_swarm(&scenarios, seeds, jobs, Some(m));
            }
            archive_swarm(&scenarios, seeds, jobs, None)
        }
        #[cfg(feature = "sim-mutants")]
        Cmd::Mutants { seeds } => mutants(seeds),
        Cmd::Replay {
            file,
            engine: true,
            #[cfg(feature = "sim-mutants")]
            mutant,
            ..
        } => {
            #[cfg(feature = "sim-mutants")]
            if let Some(name) = mutant {
                let Some(m) = find_mutant(&name) else {
                    return ExitCode::from(2);
                };
                return fanout_sim::mutants::with(Some(m), || replay_engine(&file));
            }
            replay_engine(&file)
        }
        Cmd::Replay {
            file, seed, faults, ..
        } => replay(&file, seed, &faults),
        Cmd::Run {
            seed,
            seeds,
            scenario,
            verbose,
            jobs,
            evidence,
            capture,
            #[cfg(feature = "sim-mutants")]
            mutant,
        } => {
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |j| j as usize,
            );
            let scenarios = match scenarios(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fanout-sim: {e}");
                    return ExitCode::from(2);
                }
            };
            #[cfg(feature = "sim-mutants")]
            let chosen = match mutant.as_deref().map(find_mutant) {
                Some(None) => return ExitCode::from(2),
                Some(Some(m)) => Some(m),
                None => None,
            };
            let evidence = Evidence {
                dir: evidence,
                #[cfg(feature = "sim-mutants")]
                mutant: chosen.map(|m| m.name()),
            };
            let go = || match (seed, seeds) {
                (Some(seed), _) => run_one(&scenarios, seed, verbose, capture, &evidence),
                (None, Some(range)) => swarm(&scenarios, range, jobs, &evidence),
                (None, None) => {
                    eprintln!("fanout-sim: give --seed N or --seeds A..B");
                    ExitCode::from(2)
                }
            };
            #[cfg(feature = "sim-mutants")]
            if chosen.is_some() {
                return fanout_sim::mutants::with(chosen, go);
            }
            go()
        }
    }
}

fn run_one(
    scenarios: &[Scenario],
    seed: u64,
    verbose: bool,
    capture: bool,
    evidence: &Evidence,
) -> ExitCode {
    let mut digest = xxhash_rust::xxh3::Xxh3Default::new();
    let mut failed = false;
    let mut last_digest = 0;
    for &s in scenarios {
        let r = run(s, seed);
        last_digest = r.digest;
        println!(
            "{:<20} seed {seed}: {} ({} sessions, {} engine steps, {} socket failures) digest {:016x}",
            s.name(),
            r.failure.as_deref().unwrap_or("ok"),
            r.sessions,
            r.steps,
            r.failures,
            r.digest
        );
        if verbose {
            for ((role, outcome), n) in &r.outcomes {
                println!("  {role:?} {outcome:?}: {n}");
            }
            println!("  reads paused: {}", r.pauses);
            match r.twin_virtual_time {
                Some(twin) => println!(
                    "  virtual time: {:?} (twin without secondaries: {twin:?})",
                    r.virtual_time
                ),
                None => println!("  virtual time: {:?}", r.virtual_time),
            }
        }
        if r.failure.is_some() {
            failed = true;
            println!("  reproduce: {}", repro(s, seed));
        }
        if r.failure.is_some() || capture {
            println!("{}", evidence.leave(s, seed, r.digest));
        }
        digest.update(&r.digest.to_le_bytes());
    }
    let last = match scenarios {
        [_] => last_digest,
        _ => digest.digest(),
    };
    println!("{last:016x}");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every (scenario, seed) pair on `jobs` threads: each takes the next pair from a shared
/// index, so a slow seed holds up only its own thread. Results are printed in (scenario, seed)
/// order as soon as every earlier one is in; per scenario, the seeds/s its runs managed (runs over
/// the wall-clock time they took together, divided by the threads).
fn swarm(scenarios: &[Scenario], seeds: Range<u64>, jobs: usize, evidence: &Evidence) -> ExitCode {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let started = Instant::now();
    let pairs: Vec<(Scenario, u64)> = scenarios
        .iter()
        .flat_map(|&s| seeds.clone().map(move |seed| (s, seed)))
        .collect();
    let per_scenario = (seeds.end - seeds.start) as usize;
    let jobs = jobs.clamp(1, pairs.len().max(1));
    #[cfg(feature = "sim-mutants")]
    let mutant = fanout_sim::mutants::current();
    let next = AtomicUsize::new(0);
    type Done = (usize, fanout_sim::RunResult, Duration, Option<String>);
    let (tx, rx) = mpsc::channel::<Done>();
    let mut failures = 0usize;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (tx, next, pairs) = (tx.clone(), &next, &pairs);
            scope.spawn(move || {
                let work = || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, seed)) = pairs.get(i) else {
                        return;
                    };
                    let t = Instant::now();
                    let r = run(s, seed);
                    let took = t.elapsed();
                    let left = r
                        .failure
                        .as_ref()
                        .map(|_| evidence.leave(s, seed, r.digest));
                    if tx.send((i, r, took, left)).is_err() {
                        return;
                    }
                };
                #[cfg(feature = "sim-mutants")]
                fanout_sim::mutants::with(mutant, work);
                #[cfg(not(feature = "sim-mutants"))]
                work();
            });
        }
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut printed = 0usize;
        let (mut passed, mut busy) = (0usize, Duration::ZERO);
        for (i, r, took, left) in rx {
            waiting.insert(i, (r, took, left));
            while let Some((r, took, left)) = waiting.remove(&printed) {
                busy += took;
                match &r.failure {
                    None => passed += 1,
                    Some(why) => {
                        failures += 1;
                        println!("FAIL {} seed {}: {why}", r.scenario.name(), r.seed);
                        println!("  reproduce: {}", repro(r.scenario, r.seed));
                        println!("{}", left.unwrap_or_default());
                    }
                }
                printed += 1;
                if printed.is_multiple_of(per_scenario) {
                    let secs = busy.as_secs_f64() / jobs as f64;
                    println!(
                        "{:<26} {passed}/{per_scenario} seeds passed ({:.1} seeds/s)",
                        r.scenario.name(),
                        per_scenario as f64 / secs.max(1e-9)
                    );
                    (passed, busy) = (0, Duration::ZERO);
                }
            }
        }
    });
    let runs = pairs.len();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{runs} runs in {secs:.1}s on {jobs} thread(s) ({:.1} seeds/s); {failures} failed",
        runs as f64 / secs
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(feature = "sim-mutants")]
fn mutants(seeds: u64) -> ExitCode {
    use fanout_engine::mutants::Mutant;
    let mut missed = 0;
    // The first seed on which the aimed oracle fails (else the first on which any does), and
    // which oracles did.
    let first_failure = |scenario: Scenario, oracle: &str| {
        let mut unrelated = None;
        for seed in 0..seeds {
            let r = run(scenario, seed);
            if let Some(why) = r.failure {
                if r.oracles_failed.contains(&oracle) {
                    return Some((seed, r.oracles_failed, why));
                }
                unrelated.get_or_insert((seed, r.oracles_failed, why));
            }
        }
        unrelated
    };
    for m in Mutant::ALL {
        let aim = fanout_sim::mutants::aimed(m);
        let caught = fanout_sim::mutants::with(Some(m), || first_failure(aim.scenario, aim.oracle));
        match caught {
            Some((seed, oracles, why)) if oracles.contains(&aim.oracle) => println!(
                "{:<34} caught  by {} on {} seed {seed} (also failed: {:?}; aimed: {}): {why}",
                m.name(),
                aim.oracle,
                aim.scenario.name(),
                oracles,
                aim.why
            ),
            Some((seed, oracles, why)) => {
                missed += 1;
                println!(
                    "{:<34} caught  only by unrelated oracles {oracles:?} on {} seed {seed}, not by {} (aimed: {}): {why}",
                    m.name(),
                    aim.scenario.name(),
                    aim.oracle,
                    aim.why
                );
            }
            None => {
                missed += 1;
                println!(
                    "{:<34} missed  by every oracle on {} seeds 0..{seeds} ({} was aimed: {})",
                    m.name(),
                    aim.scenario.name(),
                    aim.oracle,
                    aim.why
                );
            }
        }
    }
    for m in fanout_engine::archive::ArchiveMutant::ALL {
        let aim = fanout_sim::mutants::archive_aimed(m);
        let failing = fanout_sim::mutants::with_archive(Some(m), || {
            (0..seeds).find_map(|seed| {
                let r = fanout_sim::archive::run(aim.scenario, seed);
                let oracles: std::collections::BTreeSet<&str> =
                    r.failures.iter().map(|f| f.oracle).collect();
                oracles.contains(&aim.oracle).then(|| {
                    let why = r.failures.iter().find(|f| f.oracle == aim.oracle);
                    (seed, oracles.clone(), why.map(|f| f.detail.clone()))
                })
            })
        });
        match failing {
            Some((seed, oracles, why)) => println!(
                "{:<34} caught  by {} on {} seed {seed} (failed: {oracles:?}; aimed: {}): {}",
                m.name(),
                aim.oracle,
                aim.scenario.name(),
                aim.why,
                why.unwrap_or_default()
            ),
            None => {
                missed += 1;
                println!(
                    "{:<34} missed  by {} on {} seeds 0..{seeds} (aimed: {})",
                    m.name(),
                    aim.oracle,
                    aim.scenario.name(),
                    aim.why
                );
            }
        }
    }
    if missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(file: &str, seed: u64, faults: &[String]) -> ExitCode {
    use fanout_engine::capture::script;
    use fanout_sim::replay::FaultKind;
    let faults: Result<Vec<FaultKind>, String> =
        faults.iter().map(|f| FaultKind::parse(f)).collect();
    let faults = match faults {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fanout-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let capture = match open_capture(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for skipped in &capture.extent.skipped {
        eprintln!("fanout-sim: note: {skipped}");
    }
    if let Some(torn) = &capture.extent.torn {
        eprintln!("fanout-sim: note: {torn}; replaying the records before the tear");
    }
    let scripts = match script::sessions(&capture.header, &capture.records) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout-sim: {file}: the capture does not replay in this engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = fanout_sim::replay::replay(&capture.header, &scripts, seed, &faults);
    for m in &r.mismatches {
        println!("MISMATCH {m}");
    }
    if let Some(e) = &r.error {
        println!("simulation error: {e}");
    }
    println!(
        "{} sessions replayed, {} clients saw exactly the recorded bytes (faults: {})",
        r.sessions,
        r.matched,
        if faults.is_empty() {
            "none".to_string()
        } else {
            format!("{faults:?}")
        }
    );
    println!("{:016x}", r.digest);
    if r.matched == r.sessions && r.error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads the capture at `file` and its later segments (`FILE.1`, ...), printing why it cannot:
/// exit status 2 when `file` does not open, 1 when what it holds does not read.
fn open_capture(file: &str) -> Result<Capture, ExitCode> {
    let mut files = Vec::new();
    for n in 0.. {
        let name = segment_name(file, n);
        match std::fs::File::open(&name) {
            Ok(f) => files.push((name, std::io::BufReader::new(f))),
            Err(e) if n == 0 => {
                eprintln!("fanout-sim: cannot open {name}: {e}");
                return Err(ExitCode::from(2));
            }
            Err(_) => break,
        }
    }
    read_segments(files).map_err(|e| {
        eprintln!("fanout-sim: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(feature = "sim-mutants")]
type ArchiveBug = Option<fanout_engine::archive::ArchiveMutant>;
#[cfg(not(feature = "sim-mutants"))]
type ArchiveBug = Option<std::convert::Infallible>;

/// `fanout-sim archive`: every (scenario, seed) on `jobs` threads; one line per run, in order.
fn archive_swarm(
    scenarios: &[ArchiveScenario],
    seeds: Range<u64>,
    jobs: usize,
    bug: ArchiveBug,
) -> ExitCode {
    let work: Vec<(ArchiveScenario, u64)> = scenarios
        .iter()
        .flat_map(|&s| seeds.clone().map(move |seed| (s, seed)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(s, seed)) = work.get(i) else {
                    return;
                };
                #[cfg(feature = "sim-mutants")]
                let r =
                    fanout_sim::mutants::with_archive(bug, || fanout_sim::archive::run(s, seed));
                #[cfg(not(feature = "sim-mutants"))]
                let r = {
                    let _ = bug;
                    fanout_sim::archive::run(s, seed)
                };
                results.lock().unwrap().push((i, s, seed, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut failed = 0;
    for (_, s, seed, r) in &results {
        let verdict = match r.failures.first() {
            None => "ok".to_string(),
            Some(f) => format!("FAILED {}: {}", f.oracle, f.detail),
        };
        println!(
            "{:<24} seed {seed}: {verdict} ({} puts, {} delivered, {} archived, {} re-injected, beanstalkd peak {}) digest {:016x}",
            s.name(),
            r.puts,
            r.delivered,
            r.archived,
            r.reinjected,
            r.peak_in_server,
            r.digest
        );
        if !r.failures.is_empty() {
            failed += 1;
            for f in r.failures.iter().skip(1).take(4) {
                println!("  also {}: {}", f.oracle, f.detail);
            }
            println!("  reproduce: {}", fanout_sim::archive::repro(*s, *seed));
        }
    }
    println!(
        "{} runs, {failed} failed, in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
