//! `fanout-sim replay`: a recorded capture played as simulated hosts — its clients send what they
//! sent, when they sent it; its backends answer what they answered — through the engine on
//! turmoil, optionally with faults on the secondaries. When no fault hits the primary, every client
//! must receive exactly the bytes it was sent when the capture was recorded.

use crate::driver::{run_proxy, ProxySpec};
use crate::hosts::{BACKEND_PORT, PROXY_PORT};
use crate::observe::Observer;
use crate::run::drive;
use crate::scenario::Fault;
use fanout_engine::capture::script::{SessionScript, Stream};
use fanout_engine::capture::Header;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// Faults a replay may inject into the secondaries' links and hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Partition,
    Hold,
    Crash,
    Latency,
}

impl FaultKind {
    pub fn parse(name: &str) -> Result<FaultKind, String> {
        match name {
            "partition" => Ok(FaultKind::Partition),
            "hold" => Ok(FaultKind::Hold),
            "crash" => Ok(FaultKind::Crash),
            "latency" => Ok(FaultKind::Latency),
            other => Err(format!(
                "unknown fault {other:?}; one of: partition, hold, crash, latency"
            )),
        }
    }
}

/// What a replay saw.
#[derive(Debug)]
pub struct ReplayResult {
    pub sessions: usize,
    /// Sessions whose client received exactly the recorded bytes.
    pub matched: usize,
    /// One line per session that did not.
    pub mismatches: Vec<String>,
    /// Every client's received bytes, in session order.
    pub received: Vec<Vec<u8>>,
    /// Digest of the engine's inputs and outputs in the simulation.
    pub digest: u64,
    pub error: Option<String>,
}

async fn play_stream(
    stream: &Stream,
    wr: &mut crate::conn::WriteHalf,
    start: tokio::time::Instant,
) -> std::io::Result<()> {
    for chunk in &stream.chunks {
        tokio::time::sleep_until(start + chunk.at).await;
        wr.write_all(&chunk.data).await?;
    }
    if let Some(eof) = stream.eof {
        tokio::time::sleep_until(start + eof).await;
        wr.shutdown().await?;
    }
    Ok(())
}

/// A backend that answers its n-th connection with the n-th session's recorded response.
async fn backend(streams: Rc<Vec<Stream>>) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", BACKEND_PORT)).await?;
    let mut n = 0;
    loop {
        let (stream, _) = listener.accept().await?;
        let script = streams.get(n).cloned().unwrap_or_default();
        n += 1;
        tokio::task::spawn_local(async move {
            let start = tokio::time::Instant::now();
            let (mut rd, mut wr) = crate::conn::split(stream);
            let drain = async {
                let mut buf = vec![0u8; 8192];
                while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
            };
            let (_, answered) = tokio::join!(drain, play_stream(&script, &mut wr, start));
            let _ = answered;
        });
    }
}

/// Plays `scripts` (from [`fanout_engine::capture::script::sessions`]) through the simulated proxy.
pub fn replay(
    header: &Header,
    scripts: &[SessionScript],
    seed: u64,
    faults: &[FaultKind],
) -> ReplayResult {
    let secondaries = header.config.secondaries as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = Vec::new();
    let mut heal = Duration::ZERO;
    for i in 1..=secondaries {
        let host = format!("secondary{i}");
        for kind in faults {
            let at = Duration::from_millis(rng.random_range(0..500));
            let end = at + Duration::from_millis(rng.random_range(50..2_000));
            let (on, off) = match kind {
                FaultKind::Partition => {
                    (Fault::Partition(host.clone()), Fault::Repair(host.clone()))
                }
                FaultKind::Hold => (Fault::Hold(host.clone()), Fault::Release(host.clone())),
                FaultKind::Crash => (Fault::Crash(host.clone()), Fault::Bounce(host.clone())),
                FaultKind::Latency => (
                    Fault::Latency(
                        host.clone(),
                        Duration::from_millis(rng.random_range(50..2_000)),
                    ),
                    Fault::Latency(host.clone(), Duration::from_millis(1)),
                ),
            };
            plan.push((at, on));
            plan.push((end, off));
            heal = heal.max(end);
        }
    }
    plan.sort_by_key(|(at, _)| *at);
    let last = scripts
        .iter()
        .map(|s| {
            s.client.chunks.last().map_or(Duration::ZERO, |c| c.at)
                + s.client.eof.unwrap_or_default()
        })
        .max()
        .unwrap_or_default();
    let first = scripts.first().map(|s| s.accepted_at).unwrap_or_default();

    let mut sim = turmoil::Builder::new()
        .simulation_duration(heal + last + Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .rng_seed(seed)
        .build();
    let obs = Rc::new(RefCell::new(Observer::new(&header.config)));
    let mut backends = vec![("primary".to_string(), BACKEND_PORT)];
    for i in 1..=secondaries {
        backends.push((format!("secondary{i}"), BACKEND_PORT));
    }
    let spec = ProxySpec {
        cfg: header.config.clone(),
        port: PROXY_PORT,
        backends: backends.clone(),
        capture: None,
        events: Vec::new(),
    };
    {
        let obs = obs.clone();
        sim.host("proxy", move || {
            run_proxy(spec.clone(), fanout_engine::Passthrough, None, obs.clone())
        });
    }
    for (i, (host, _)) in backends.iter().enumerate() {
        let id = fanout_engine::BackendId(i as u16);
        let streams: Rc<Vec<Stream>> = Rc::new(
            scripts
                .iter()
                .map(|s| s.backends.get(&id).cloned().unwrap_or_default())
                .collect(),
        );
        sim.host(host.as_str(), move || backend(streams.clone()));
    }
    let received: Rc<RefCell<BTreeMap<usize, Vec<u8>>>> = Rc::default();
    for (n, script) in scripts.iter().enumerate() {
        let (script, received) = (script.clone(), received.clone());
        let delay = script.accepted_at.saturating_since(first);
        sim.client(format!("client{n}"), async move {
            tokio::time::sleep(delay).await;
            let stream = TcpStream::connect(("proxy", PROXY_PORT)).await?;
            let start = tokio::time::Instant::now();
            let (mut rd, mut wr) = crate::conn::split(stream);
            let reader = async {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                got
            };
            let (_, got) = tokio::join!(play_stream(&script.client, &mut wr, start), reader);
            received.borrow_mut().insert(n, got);
            Ok(())
        });
    }
    let error = drive(&mut sim, &plan);
    drop(sim);
    let received = std::mem::take(&mut *received.borrow_mut());
    let mut result = ReplayResult {
        sessions: scripts.len(),
        matched: 0,
        mismatches: Vec::new(),
        received: Vec::new(),
        digest: obs.borrow().digest(),
        error,
    };
    for (n, script) in scripts.iter().enumerate() {
        let got = received.get(&n).cloned().unwrap_or_default();
        if got == script.client_saw {
            result.matched += 1;
        } else {
            let at = got.iter().zip(&script.client_saw).position(|(a, b)| a != b);
            result.mismatches.push(format!(
                "session {n}: the client received {} bytes, the recording sent it {} (first difference at {:?})",
                got.len(),
                script.client_saw.len(),
                at.or(Some(got.len().min(script.client_saw.len())))
            ));
        }
        result.received.push(got);
    }
    result
}
