//! `fanout balance`: em-proxy's balancing proxy as an interceptor. Each client goes to one
//! upstream chosen by a strategy; an upstream that cannot be connected is taken out of rotation
//! for `retry_after` and the client is tried on the next one; once `retry_after` has passed the
//! upstream is chosen again, and that real connection is its retry.
//!
//! Each event loop runs its own balancer (`--threads N`): counts and the round-robin cursor are
//! per loop, which is what keeps them free of locks.
//!
//! [`BalanceConfig`] is what `fanout balance` was asked for; its [`mode`](BalanceConfig::mode)
//! is recorded as a capture's mode, from which `fanout replay --engine` rebuilds the same
//! balancer ([`BalanceConfig::from_mode`]).

use fanout_engine::{
    BackendId, Conn, Failure, Instant, Interceptor, Open, SessionReport, UpstreamId,
};
use std::time::Duration;

/// How the next upstream is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// In turn: 1, 2, 3, 1, ...
    RoundRobin,
    /// The one with the fewest open sessions; ties go to the first listed.
    LeastConn,
    /// Uniformly at random, from a seeded generator (`--seed`), so a capture replays.
    Random,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastConn => "least-conn",
            Strategy::Random => "random",
        }
    }
}

/// `fanout balance`'s own flags, beside `--listen`, `--to` and the common ones; all optional
/// here so the config file can supply them (`strategy`, `retry-after`, `seed`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct BalanceFlags {
    /// How the next upstream is chosen [default: round-robin].
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<Strategy>,
    /// How long an upstream whose connect failed stays out of rotation before it is tried
    /// again [default: 5s].
    #[arg(
        long,
        value_name = "DUR",
        value_parser = crate::units::parse_duration,
        allow_hyphen_values = true
    )]
    pub retry_after: Option<Duration>,
    /// Seed of the random strategy [default: drawn from the OS at start; a capture records the
    /// one used].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub seed: Option<u64>,
}

/// `fanout balance`'s settings, resolved: the strategy, the seed actually used (drawn from the
/// OS when none was given) and how long a failed upstream stays out of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceConfig {
    pub strategy: Strategy,
    pub seed: u64,
    pub retry_after: Duration,
}

impl BalanceConfig {
    /// The default `--strategy`.
    pub const STRATEGY: Strategy = Strategy::RoundRobin;
    /// The default `--retry-after`.
    pub const RETRY_AFTER: Duration = Duration::from_secs(5);

    /// The capture mode that names these settings, as flags `fanout balance` takes:
    /// `balance --strategy random --seed 123 --retry-after 5s`.
    pub fn mode(&self) -> String {
        format!(
            "balance --strategy {} --seed {} --retry-after {}",
            self.strategy.as_str(),
            self.seed,
            compact_duration(self.retry_after)
        )
    }

    /// The settings a capture's `mode` names, read with `fanout balance`'s own flag
    /// definitions ([`BalanceFlags`]): `None` when the mode is not `balance ...`, an error when
    /// it is but does not name all three settings.
    pub fn from_mode(mode: &str) -> Option<Result<BalanceConfig, String>> {
        use clap::{Args, FromArgMatches};
        if mode.split_whitespace().next() != Some("balance") {
            return None;
        }
        let parse = || -> Result<BalanceConfig, String> {
            let first_line = |e: clap::Error| {
                let text = e.to_string();
                text.lines().next().unwrap_or_default().to_string()
            };
            let matches = BalanceFlags::augment_args(clap::Command::new("balance"))
                .try_get_matches_from(mode.split_whitespace())
                .map_err(first_line)?;
            let f = BalanceFlags::from_arg_matches(&matches).map_err(first_line)?;
            Ok(BalanceConfig {
                strategy: f.strategy.ok_or("no --strategy")?,
                seed: f.seed.ok_or("no --seed")?,
                retry_after: f.retry_after.ok_or("no --retry-after")?,
            })
        };
        Some(parse().map_err(|e| {
            format!("the capture's mode {mode:?} is not one fanout balance records: {e}")
        }))
    }

    /// A balancer with these settings over the upstream table `names` (one per event loop).
    pub fn balancer(&self, names: &[String]) -> Balance {
        let count = u16::try_from(names.len()).unwrap_or(u16::MAX);
        Balance::new(self.strategy, count, self.seed, self.retry_after).named(names)
    }
}

/// The generator's first state for `seed`: splitmix64's finaliser, a bijection, so distinct seeds
/// start distinct sequences (`seed | 1` made 42 and 43 the same); xorshift must not start at zero.
fn xorshift_state(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// A duration as one word that `parse_duration` reads back exactly: `5s`, `250ms`, `10ns`.
fn compact_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_millis() * 1_000_000 == d.subsec_nanos() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// One upstream as the balancer sees it.
#[derive(Clone, Debug, Default)]
struct Upstream {
    /// Sessions currently using it.
    active: u32,
    /// Out of rotation until then, after a failed connect.
    down_until: Option<Instant>,
}

/// The balancer: shared by every session of one event loop.
#[derive(Debug)]
pub struct Balance {
    strategy: Strategy,
    upstreams: Vec<Upstream>,
    cursor: usize,
    rng: u64,
    retry_after: Duration,
    /// Upstream addresses for the logs (by `UpstreamId`); may be empty.
    names: Vec<String>,
}

/// What one session remembers: the upstream it uses and those it already tried.
#[derive(Debug, Default)]
pub struct Choice {
    current: Option<UpstreamId>,
    tried: Vec<UpstreamId>,
}

impl Balance {
    /// A balancer over `upstreams` entries of the driver's table (`0..upstreams`).
    pub fn new(strategy: Strategy, upstreams: u16, seed: u64, retry_after: Duration) -> Balance {
        Balance {
            strategy,
            upstreams: vec![Upstream::default(); usize::from(upstreams)],
            cursor: 0,
            rng: xorshift_state(seed),
            retry_after,
            names: Vec::new(),
        }
    }

    /// Names the upstreams (their addresses, by `UpstreamId`) in the logs.
    pub fn named(mut self, names: &[String]) -> Balance {
        self.names = names.to_vec();
        self
    }

    /// `upstream 1 (127.0.0.1:8082)`, or `upstream 1` without names.
    fn label(&self, i: usize) -> String {
        match self.names.get(i) {
            Some(name) => format!("upstream {i} ({name})"),
            None => format!("upstream {i}"),
        }
    }

    /// The next upstream for a session at `now` that has not yet tried those in `tried`, or
    /// `None` when every upstream is tried or out of rotation.
    pub fn select(&mut self, now: Instant, tried: &[UpstreamId]) -> Option<UpstreamId> {
        let n = self.upstreams.len();
        let usable = |i: usize, ups: &[Upstream]| {
            let id = UpstreamId(i as u16);
            !tried.contains(&id) && !matches!(ups[i].down_until, Some(t) if t > now)
        };
        let pick = match self.strategy {
            Strategy::RoundRobin => (0..n)
                .map(|k| (self.cursor + k) % n)
                .find(|&i| usable(i, &self.upstreams))
                .inspect(|&i| self.cursor = (i + 1) % n),
            Strategy::LeastConn => (0..n)
                .filter(|&i| usable(i, &self.upstreams))
                .min_by_key(|&i| (self.upstreams[i].active, i)),
            Strategy::Random => {
                let candidates: Vec<usize> =
                    (0..n).filter(|&i| usable(i, &self.upstreams)).collect();
                if candidates.is_empty() {
                    None
                } else {
                    let r = self.next_random();
                    Some(candidates[(r % candidates.len() as u64) as usize])
                }
            }
        }?;
        let up = &mut self.upstreams[pick];
        up.active += 1;
        if up.down_until.is_some_and(|t| t <= now) {
            up.down_until = None; // its retry: back in rotation unless this connect fails too
            tracing::info!("balance: retrying {}", self.label(pick));
        }
        Some(UpstreamId(pick as u16))
    }

    /// Sessions now using `up`.
    pub fn active(&self, up: UpstreamId) -> u32 {
        self.upstreams[usize::from(up.0)].active
    }

    /// Whether `up` is out of rotation at `now`.
    pub fn is_down(&self, up: UpstreamId, now: Instant) -> bool {
        self.upstreams[usize::from(up.0)]
            .down_until
            .is_some_and(|t| t > now)
    }

    fn release(&mut self, up: UpstreamId) {
        let u = &mut self.upstreams[usize::from(up.0)];
        u.active = u.active.saturating_sub(1);
    }

    fn take_out(&mut self, up: UpstreamId, now: Instant, reason: Failure) {
        let i = usize::from(up.0);
        if !matches!(self.upstreams[i].down_until, Some(t) if t > now) {
            tracing::warn!(
                "balance: {} failed to connect ({reason:?}); out of rotation for {:?}",
                self.label(i),
                self.retry_after
            );
        }
        self.upstreams[i].down_until = Some(now + self.retry_after);
    }

    /// xorshift64*: small, seeded, deterministic.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Opens the session's next upstream as its primary, both ways bypassing the hooks. A
    /// session tries at most `Config::max_backends` upstreams (the engine's bound on the
    /// backends one session opens).
    fn open_next(&mut self, st: &mut Choice, conn: &mut Conn<'_>) -> Option<BackendId> {
        if st.tried.len() >= usize::from(conn.config().max_backends) {
            return None;
        }
        let up = self.select(conn.now(), &st.tried)?;
        st.tried.push(up);
        st.current = Some(up);
        conn.open(up, Open::primary().relay_client().relay_server())
            .ok()
    }
}

impl Interceptor for Balance {
    type State = Choice;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Choice {
        let mut st = Choice::default();
        if self.open_next(&mut st, conn).is_none() {
            tracing::warn!("balance: every upstream is out of rotation; closing the client");
            conn.close();
        }
        st
    }

    fn on_connect_failed(
        &mut self,
        st: &mut Choice,
        conn: &mut Conn<'_>,
        _b: BackendId,
        reason: Failure,
    ) {
        let Some(failed) = st.current.take() else {
            return;
        };
        self.release(failed);
        if reason == Failure::NoDescriptors {
            // This process ran out of descriptors: the upstream is not at fault, and the next
            // one would fail the same way. The engine closes the client (`no-descriptors`).
            return;
        }
        self.take_out(failed, conn.now(), reason);
        let unsent = conn.unsent();
        match self.open_next(st, conn) {
            Some(next) => {
                // Had the client already sent EOF, the engine gives `next` its FIN after these.
                for data in unsent {
                    conn.send(next, data);
                }
            }
            // The engine closes a client whose primary failed when no other is opened.
            None => tracing::warn!(
                "balance: no upstream left to try for client {}; closing it",
                conn.client_addr()
            ),
        }
    }

    fn on_end(&mut self, st: Choice, _report: &SessionReport) {
        if let Some(up) = st.current {
            self.release(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Instant = Instant::ZERO;

    fn ids(b: &mut Balance, n: usize) -> Vec<u16> {
        (0..n).map(|_| b.select(T0, &[]).unwrap().0).collect()
    }

    // em-proxy spec/balancing_spec.rb: "should select backends in rotating order".
    #[test]
    fn round_robin_selects_backends_in_rotating_order() {
        let mut b = Balance::new(Strategy::RoundRobin, 3, 1, Duration::from_secs(5));
        assert_eq!(ids(&mut b, 4), [0, 1, 2, 0]);
    }

    // "should select the first backend when all backends have the same load".
    #[test]
    fn least_conn_selects_the_first_backend_when_loads_are_equal() {
        let mut b = Balance::new(Strategy::LeastConn, 3, 1, Duration::from_secs(5));
        assert_eq!(b.select(T0, &[]), Some(UpstreamId(0)));
    }

    // "should select the least loaded backend".
    #[test]
    fn least_conn_selects_the_least_loaded_backend() {
        let mut b = Balance::new(Strategy::LeastConn, 3, 1, Duration::from_secs(5));
        b.upstreams[0].active = 2;
        b.upstreams[1].active = 1;
        // Loads 2,1,0: the third; then 2,1,1: the second (the first of the least); then 2,2,1.
        assert_eq!(ids(&mut b, 4), [2, 1, 2, 0]);
        b.release(UpstreamId(0));
        b.release(UpstreamId(0));
        assert_eq!(b.select(T0, &[]), Some(UpstreamId(0)));
    }

    // "should select random backend": seeded, so the same seed picks the same sequence, and
    // every backend is picked.
    #[test]
    fn random_is_seeded_and_reaches_every_backend() {
        let picks = |seed| {
            ids(
                &mut Balance::new(Strategy::Random, 3, seed, Duration::ZERO),
                60,
            )
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        assert_ne!(picks(42), picks(43), "seeds one bit apart");
        assert_ne!(picks(0), picks(1));
        let seen = picks(7);
        for i in 0..3 {
            assert!(seen.contains(&i), "backend {i} never picked: {seen:?}");
        }
    }

    // "should raise error for unknown strategy": clap refuses it by name.
    #[test]
    fn an_unknown_strategy_is_refused_with_the_valid_ones_named() {
        use clap::ValueEnum;
        assert!(Strategy::from_str("asdf", true).is_err());
        assert_eq!(
            Strategy::from_str("least-conn", true),
            Ok(Strategy::LeastConn)
        );
    }

    #[test]
    fn a_descriptor_shortage_takes_no_upstream_out_of_rotation_and_tries_no_other() {
        use fanout_engine::{Command, Config, ConnId, Engine, Event, Peer, SockId};
        let mut engine = Engine::with_interceptor(
            Config::default(),
            Balance::new(Strategy::RoundRobin, 2, 1, Duration::from_secs(5)),
        )
        .unwrap();
        engine.handle(
            T0,
            Event::Accepted {
                conn: ConnId(1),
                client: "client".into(),
            },
        );
        let connects = |e: &mut Engine<Balance>| {
            std::iter::from_fn(|| e.poll_command())
                .filter(|c| matches!(c, Command::Connect { .. }))
                .count()
        };
        assert_eq!(connects(&mut engine), 1);
        let sock = SockId::backend(ConnId(1), fanout_engine::BackendId(0));
        engine.handle(
            T0,
            Event::ConnectFailed {
                sock,
                reason: Failure::NoDescriptors,
            },
        );
        let cmds: Vec<Command> = std::iter::from_fn(|| engine.poll_command()).collect();
        assert!(
            !cmds.iter().any(|c| matches!(c, Command::Connect { .. })),
            "{cmds:?}"
        );
        assert!(cmds.contains(&Command::Close {
            sock: SockId {
                conn: ConnId(1),
                peer: Peer::Client
            }
        }));
        let b = engine.interceptor();
        assert!(!b.is_down(UpstreamId(0), T0) && !b.is_down(UpstreamId(1), T0));
        assert_eq!(b.active(UpstreamId(0)), 0);
    }

    #[test]
    fn a_failed_upstream_is_out_of_rotation_until_its_retry() {
        let retry = Duration::from_secs(5);
        let mut b = Balance::new(Strategy::RoundRobin, 2, 1, retry);
        b.take_out(UpstreamId(0), T0, Failure::Refused);
        assert!(b.is_down(UpstreamId(0), T0));
        assert_eq!(ids(&mut b, 3), [1, 1, 1]);
        let later = T0 + retry;
        assert!(!b.is_down(UpstreamId(0), later));
        assert_eq!(b.select(later, &[]), Some(UpstreamId(0)), "retried");
    }

    #[test]
    fn the_mode_names_every_setting_and_reads_back() {
        for (retry_after, word) in [
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1_000_000_007), "1000000007ns"),
            (Duration::ZERO, "0s"),
        ] {
            let cfg = BalanceConfig {
                strategy: Strategy::LeastConn,
                seed: u64::MAX,
                retry_after,
            };
            let mode = cfg.mode();
            assert_eq!(
                mode,
                format!(
                    "balance --strategy least-conn --seed {} --retry-after {word}",
                    u64::MAX
                )
            );
            assert_eq!(BalanceConfig::from_mode(&mode), Some(Ok(cfg)));
        }
        assert_eq!(BalanceConfig::from_mode("duplex"), None);
        assert_eq!(BalanceConfig::from_mode("balancer"), None);
        for bad in [
            "balance",
            "balance --strategy fastest --seed 1 --retry-after 5s",
            "balance --strategy random --seed -1 --retry-after 5s",
            "balance --strategy random --seed 1 --retry-after 5s --bogus 1",
        ] {
            assert!(
                matches!(BalanceConfig::from_mode(bad), Some(Err(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_session_never_tries_the_same_upstream_twice() {
        let mut b = Balance::new(Strategy::RoundRobin, 2, 1, Duration::from_secs(5));
        assert_eq!(b.select(T0, &[UpstreamId(0)]), Some(UpstreamId(1)));
        assert_eq!(b.select(T0, &[UpstreamId(0), UpstreamId(1)]), None);
    }
}
