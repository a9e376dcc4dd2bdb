//! The effect model: the simulator's stand-in for an effect executor (a store, a lookup service).
//!
//! The driver hands it every `Command::Effect`; the model decides, from the seed and the request
//! alone, how long the effect takes (virtual time: a tokio sleep on turmoil's clock) and what it
//! answers, then the driver feeds the answer back as `Event::EffectDone` through its event
//! channel. Faults, all per mille of requests and all derived from the seed:
//!
//! - **failures**: the executor answers `EffectError::Failed`;
//! - **slow effects**: the answer comes only after `Config::effect_timeout`, so the engine has
//!   already timed the effect out and must ignore the late result.
//!
//! Deciding from the request's bytes (not from the order requests arrive in) keeps a request's
//! fate the same in a run and its twin without secondaries. Every decision is recorded in the
//! [`EffectLog`], which the oracles read: what a client must hear for its `ASK` lines is what the
//! model answered, or `FAILED` when it answered an error or too late.

use bytes::Bytes;
use fanout_engine::{ConnId, EffectError, EffectId, EffectRequest, EffectResult, Event};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A slow effect answers at least this long after the engine's timeout, and an effect in time at
/// least this long before it, so the engine's verdict never hangs on a tie at one instant.
pub const TIMEOUT_MARGIN: Duration = Duration::from_millis(50);

/// The knobs of one run's effect executor, derived from the seed by the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectPlan {
    /// Latency of an effect that answers in time, uniform in `[lo, hi]` (whole milliseconds).
    pub latency: (Duration, Duration),
    /// Of 1000 requests, how many answer `Failed`.
    pub fail_per_mille: u32,
    /// Of 1000 requests, how many answer only after the engine's effect timeout.
    pub slow_per_mille: u32,
    /// How far past the effect timeout a slow effect answers, uniform in `[lo, hi]`.
    pub slow_by: (Duration, Duration),
    /// The engine's `Config::effect_timeout`, which decides whether an answer is late.
    pub timeout: Duration,
}

/// One effect the model carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    pub id: EffectId,
    pub conn: ConnId,
    pub request: EffectRequest,
    /// Virtual time of the request, since the proxy started.
    pub requested_at: Duration,
    pub latency: Duration,
    /// What the model answered (the engine ignores it when `late`).
    pub result: EffectResult,
    /// It answered after the engine's effect timeout: the engine gave up on it first.
    pub late: bool,
    /// The answer went back to the engine (false only while its latency runs).
    pub delivered: bool,
}

/// Everything the model answered in a run, in request order.
#[derive(Debug, Default)]
pub struct EffectLog {
    pub answered: Vec<Answered>,
}

impl EffectLog {
    /// Effects whose answer has not gone back yet.
    pub fn in_flight(&self) -> usize {
        self.answered.iter().filter(|a| !a.delivered).count()
    }

    /// The records of every request whose payload is `payload`.
    pub fn for_payload<'a>(&'a self, payload: &'a [u8]) -> impl Iterator<Item = &'a Answered> {
        self.answered
            .iter()
            .filter(move |a| &a.request.payload[..] == payload)
    }
}

pub type EffectLogRef = Rc<RefCell<EffectLog>>;

/// What carries out the engine's effects in a run: the [`EffectModel`], or a world's own (the
/// archive world's queue). The driver feeds the event the future yields back to the engine.
pub trait Effects {
    fn execute(
        &self,
        now: Duration,
        conn: ConnId,
        id: EffectId,
        request: EffectRequest,
    ) -> Pin<Box<dyn Future<Output = Event>>>;
}

impl Effects for EffectModel {
    fn execute(
        &self,
        now: Duration,
        conn: ConnId,
        id: EffectId,
        request: EffectRequest,
    ) -> Pin<Box<dyn Future<Output = Event>>> {
        Box::pin(EffectModel::execute(self, now, conn, id, request))
    }
}

/// The executor the proxy host runs. Cheap to clone: the plan and a handle on the shared log.
#[derive(Clone, Debug)]
pub struct EffectModel {
    seed: u64,
    plan: EffectPlan,
    log: EffectLogRef,
}

/// The answer to the `ask` effect of the line interceptor: a function of the seed and the
/// request's payload only (eight hex digits), so it is the same in every run of the seed.
pub fn lookup(seed: u64, payload: &[u8]) -> Bytes {
    Bytes::from(format!("{:08x}", xxh3_64_with_seed(payload, seed) as u32))
}

impl EffectModel {
    pub fn new(seed: u64, plan: EffectPlan, log: EffectLogRef) -> Self {
        EffectModel { seed, plan, log }
    }

    /// Decides how `request` goes, records it, and returns the future that waits out its latency
    /// on the virtual clock, marks it delivered and yields the `EffectDone` to feed the engine.
    pub fn execute(
        &self,
        now: Duration,
        conn: ConnId,
        id: EffectId,
        request: EffectRequest,
    ) -> impl Future<Output = Event> + 'static {
        let (latency, result) = self.decide(&request);
        let late = latency > self.plan.timeout;
        let index = {
            let mut log = self.log.borrow_mut();
            log.answered.push(Answered {
                id,
                conn,
                request,
                requested_at: now,
                latency,
                result: result.clone(),
                late,
                delivered: false,
            });
            log.answered.len() - 1
        };
        let log = self.log.clone();
        async move {
            tokio::time::sleep(latency).await;
            log.borrow_mut().answered[index].delivered = true;
            Event::EffectDone { id, result }
        }
    }

    /// Latency and result of one request, from the seed and the request's bytes.
    fn decide(&self, request: &EffectRequest) -> (Duration, EffectResult) {
        let seed = self.seed ^ xxh3_64_with_seed(request.kind.as_bytes(), 0x5eed);
        let h = xxh3_64_with_seed(&request.payload, seed);
        // Independent draws from disjoint bits of one hash.
        let fate = (h % 1000) as u32;
        let pick = |bits: u64, (lo, hi): (Duration, Duration)| {
            let span = hi.saturating_sub(lo).as_millis() as u64 + 1;
            lo + Duration::from_millis(bits % span)
        };
        let p = &self.plan;
        let slow = fate < p.slow_per_mille;
        let failed = !slow && fate < p.slow_per_mille + p.fail_per_mille;
        let latency = if slow {
            p.timeout + TIMEOUT_MARGIN + pick(h >> 16, p.slow_by)
        } else {
            pick(h >> 16, p.latency).min(p.timeout.saturating_sub(TIMEOUT_MARGIN))
        };
        let result = match (failed, request.kind.as_str()) {
            (true, _) => Err(EffectError::Failed("the model failed it".into())),
            (false, "ask") => Ok(lookup(self.seed, &request.payload)),
            (false, kind) => Err(EffectError::Failed(
                format!("no such effect: {kind}").into(),
            )),
        };
        (latency, result)
    }
}
