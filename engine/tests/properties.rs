//! Properties over arbitrary schedules: the engine's guarantees hold whatever the order and size
//! of reads, flushes, EOFs, failures and clock jumps.

mod support;

use fanout_engine::{Config, Failure, Peer, SockId};
use proptest::prelude::*;
use std::time::Duration;
use support::*;

/// Runs one duplex session moving `request` and `response` in the given pieces.
fn run_split(request: &[Vec<u8>], response: &[Vec<u8>]) -> (Vec<u8>, Vec<Vec<u8>>, String) {
    let mut h = Harness::new(duplex(2));
    h.open(1);
    for part in request {
        h.read(client(1), part);
        h.flush_all();
    }
    h.eof(client(1));
    for part in response {
        h.read(backend(1, P), part);
        h.read(backend(1, S1), part);
        h.flush_all();
    }
    for b in [P, S1] {
        h.eof(backend(1, b));
    }
    h.fail(backend(1, S2), Failure::Reset);
    h.flush_all();
    h.assert_quiescent();
    let r = &h.reports[0];
    let verdict = format!(
        "{:?}",
        r.backends
            .iter()
            .map(|b| (b.outcome, b.bytes_received, b.digest, b.matches_primary))
            .collect::<Vec<_>>()
    );
    let backends = [P, S1, S2].map(|b| h.sent(backend(1, b)).to_vec()).to_vec();
    (h.sent(client(1)).to_vec(), backends, verdict)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn splitting_a_stream_anywhere_gives_the_same_outcome(
        request in proptest::collection::vec(any::<u8>(), 1..2000),
        response in proptest::collection::vec(any::<u8>(), 1..2000),
        req_cuts in proptest::collection::vec(any::<usize>(), 0..20),
        resp_cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let whole = run_split(std::slice::from_ref(&request), std::slice::from_ref(&response));
        let pieces = run_split(&split(&request, &req_cuts), &split(&response, &resp_cuts));
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(&whole.0, &response);
        for sent in &whole.1 {
            prop_assert_eq!(sent, &request, "every backend gets the same bytes");
        }
    }
}

/// One step of an arbitrary schedule against a few sessions.
#[derive(Debug, Clone)]
enum Op {
    Accept,
    Connect(u8, u8),
    ConnectFail(u8, u8),
    Read(u8, u8, u16),
    Flush(u8, u8, u16),
    Eof(u8, u8),
    Reset(u8, u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Accept),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(c, s)| Op::Connect(c, s)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(c, s)| Op::ConnectFail(c, s)),
        8 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(c, s, n)| Op::Read(c, s, n)),
        8 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(c, s, n)| Op::Flush(c, s, n)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(c, s)| Op::Eof(c, s)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(c, s)| Op::Reset(c, s)),
        2 => any::<u16>().prop_map(Op::Advance),
    ]
}

/// Picks socket `s` of session `c` among those opened so far (side 0 is the client).
fn pick(opened: u64, c: u8, s: u8, secondaries: u16) -> Option<SockId> {
    if opened == 0 {
        return None;
    }
    let conn = 1 + u64::from(c) % opened;
    match u16::from(s) % (secondaries + 2) {
        0 => Some(client(conn)),
        b => Some(backend(conn, fanout_engine::BackendId(b - 1))),
    }
}

fn small_limits(secondaries: u16) -> Config {
    Config {
        secondaries,
        reports: true,
        max_connections: 4,
        high_water: 8 * 1024,
        low_water: 2 * 1024,
        secondary_budget: 16 * 1024,
        compare_window: 4 * 1024,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn limits_hold_and_nothing_leaks_under_any_schedule(
        secondaries in 0u16..3,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut h = Harness::new(small_limits(secondaries));
        let mut opened = 0u64;
        for op in ops {
            match op {
                Op::Accept => {
                    opened += 1;
                    h.accept(opened);
                }
                Op::Connect(c, s) | Op::ConnectFail(c, s) => {
                    let Some(sock) = pick(opened, c, s, secondaries) else { continue };
                    if !h.socks.get(&sock).is_some_and(|m| m.connecting && !m.closed) {
                        continue;
                    }
                    if matches!(op, Op::Connect(..)) {
                        h.connected(sock);
                    } else {
                        h.socks.get_mut(&sock).unwrap().closed = true;
                        h.handle(fanout_engine::Event::ConnectFailed { sock, reason: Failure::Refused });
                    }
                }
                Op::Read(c, s, n) => {
                    let Some(sock) = pick(opened, c, s, secondaries) else { continue };
                    // A driver reads only open, unpaused sockets that have not seen EOF.
                    let readable = h.socks.get(&sock).is_some_and(|m| m.open && !m.closed && !m.paused && !m.read_closed);
                    if readable && h.engine.knows(sock) {
                        let len = 1 + usize::from(n) % MAX_READ as usize;
                        h.read(sock, &vec![sock.conn.0 as u8; len]);
                    }
                }
                Op::Flush(c, s, n) => {
                    let Some(sock) = pick(opened, c, s, secondaries) else { continue };
                    if h.socks.get(&sock).is_some_and(|m| m.open && !m.closed) {
                        h.flush_some(sock, u64::from(n) * 4);
                    }
                }
                Op::Eof(c, s) => {
                    let Some(sock) = pick(opened, c, s, secondaries) else { continue };
                    if h.socks.get(&sock).is_some_and(|m| m.open && !m.closed && !m.read_closed) && h.engine.knows(sock) {
                        h.eof(sock);
                    }
                }
                Op::Reset(c, s) => {
                    let Some(sock) = pick(opened, c, s, secondaries) else { continue };
                    if h.socks.get(&sock).is_some_and(|m| m.open && !m.closed) {
                        h.fail(sock, Failure::Reset);
                    }
                }
                Op::Advance(ms) => {
                    h.advance(Duration::from_millis(u64::from(ms)));
                }
            }
        }
        // Liveness: every peer finishes (EOF on every open socket, all flushed), then time passes
        // past every deadline; the engine must end every session and hold nothing.
        let open: Vec<SockId> = h.socks.iter().filter(|(_, m)| m.open && !m.closed && !m.read_closed).map(|(s, _)| *s).collect();
        for sock in open {
            // Secondaries of odd sessions never answer: their deadline must end them.
            let silent = matches!(sock.peer, Peer::Backend(b) if !b.is_primary()) && sock.conn.0 % 2 == 1;
            if h.engine.knows(sock) && !silent {
                h.eof(sock);
            }
            h.flush_all();
        }
        h.flush_all();
        h.advance(Duration::from_secs(3600));
        h.flush_all();
        h.advance(Duration::from_secs(3600));
        h.assert_quiescent();
        prop_assert_eq!(h.engine.open_clients(), 0);
        // The report accounts for every backend of every session that was served.
        for r in &h.reports {
            prop_assert_eq!(r.backends.len(), 1 + usize::from(secondaries));
            prop_assert!(matches!(r.backends[0].backend, fanout_engine::BackendId(0)));
        }
        let served = h.log.iter().filter(|c| matches!(c, fanout_engine::Command::Connect { sock, .. } if sock.peer == Peer::Backend(fanout_engine::BackendId(0)))).count();
        prop_assert_eq!(h.reports.len(), served);
    }
}

/// One step of a fan-out schedule: a client read of some size, or a partial flush of one socket.
#[derive(Debug, Clone)]
enum FanOp {
    Read(u16),
    Flush(u8, u16),
}

fn fan_op() -> impl Strategy<Value = FanOp> {
    prop_oneof![
        any::<u16>().prop_map(FanOp::Read),
        (any::<u8>(), any::<u16>()).prop_map(|(s, n)| FanOp::Flush(s, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the read sizes and however unevenly each backend drains (the client pausing and
    /// resuming on the primary's queue on the way), every backend receives exactly the client's
    /// bytes, in order, and a FIN after the last one.
    #[test]
    fn fan_out_gives_every_backend_the_same_bytes_under_any_flush_schedule(
        ops in proptest::collection::vec(fan_op(), 1..300),
    ) {
        let cfg = Config {
            high_water: 4 * 1024,
            low_water: 1024,
            // Large enough that no secondary is detached: each must see the whole stream.
            secondary_budget: 64 * 1024 * 1024,
            ..duplex(2)
        };
        let mut h = Harness::new(cfg);
        h.open(1);
        let mut request = Vec::new();
        for op in ops {
            match op {
                FanOp::Read(n) => {
                    if h.is_paused(client(1)) {
                        continue;
                    }
                    let start = request.len();
                    let chunk: Vec<u8> = (start..start + 1 + usize::from(n) % 3000)
                        .map(|i| (i * 7 + i / 251) as u8)
                        .collect();
                    request.extend_from_slice(&chunk);
                    h.read(client(1), &chunk);
                }
                FanOp::Flush(s, n) => {
                    let sock = backend(1, fanout_engine::BackendId(u16::from(s) % 3));
                    h.flush_some(sock, u64::from(n));
                }
            }
        }
        h.eof(client(1));
        h.flush_all();
        for b in [P, S1, S2] {
            prop_assert_eq!(h.sent(backend(1, b)), &request[..], "backend {:?}", b);
            prop_assert!(h.is_shut(backend(1, b)), "backend {:?} got no FIN", b);
        }
        for b in [P, S1, S2] {
            h.eof(backend(1, b));
        }
        h.flush_all();
        h.assert_quiescent();
    }
}
