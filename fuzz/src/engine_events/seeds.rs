//! Hand-made seed inputs of `engine_events`, each a schedule that reaches one rule a fuzzing
//! campaign found rarely (or, for rules newer than the campaigns, never). Committed as
//! `corpus/engine_events/seed-NAME` (`cargo run -p fanout-fuzz --example engine_seeds --
//! fuzz/corpus/engine_events`); the corpus test keeps them there.

use super::{Limits, Mode, Op, Reason, Scenario};

/// The input that decodes to `scenario`: `arbitrary`'s encoding (integers little-endian, a `bool`
/// byte before each operation, an enum's variant from a `u32`).
pub fn encode(scenario: &Scenario) -> Vec<u8> {
    let mut e = Vec::new();
    let l = &scenario.limits;
    variant(&mut e, l.mode as usize, 3);
    e.push(u8::from(l.reports));
    e.push(l.max_connections);
    for v in [
        l.high_water,
        l.low_water,
        l.secondary_budget,
        l.compare_window,
        l.connect_ms,
        l.idle_ms,
        l.deadline_ms,
        l.drain_ms,
    ] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    for op in &scenario.ops {
        e.push(1);
        encode_op(&mut e, op);
    }
    e
}

/// Variant `index` of an enum of `count` (derive picks `(u32 * count) >> 32`).
fn variant(e: &mut Vec<u8>, index: usize, count: usize) {
    let x = ((index as u64) << 32).div_ceil(count as u64) as u32;
    e.extend_from_slice(&x.to_le_bytes());
}

fn encode_op(e: &mut Vec<u8>, op: &Op) {
    const OPS: usize = 12;
    let sock = |e: &mut Vec<u8>, conn: u8, side: u8| e.extend_from_slice(&[conn, side]);
    match *op {
        Op::Accept => variant(e, 0, OPS),
        Op::Connect { conn, side } => {
            variant(e, 1, OPS);
            sock(e, conn, side);
        }
        Op::ConnectFail { conn, side, reason } => {
            variant(e, 2, OPS);
            sock(e, conn, side);
            variant(e, reason as usize, 5);
        }
        Op::Read { conn, side, len } => {
            variant(e, 3, OPS);
            sock(e, conn, side);
            e.extend_from_slice(&len.to_le_bytes());
        }
        Op::Flush { conn, side, len } => {
            variant(e, 4, OPS);
            sock(e, conn, side);
            e.extend_from_slice(&len.to_le_bytes());
        }
        Op::FlushAll => variant(e, 5, OPS),
        Op::Eof { conn, side } => {
            variant(e, 6, OPS);
            sock(e, conn, side);
        }
        Op::Fail { conn, side, reason } => {
            variant(e, 7, OPS);
            sock(e, conn, side);
            variant(e, reason as usize, 5);
        }
        Op::Advance { ms } => {
            variant(e, 8, OPS);
            e.extend_from_slice(&ms.to_le_bytes());
        }
        Op::AdvanceToDeadline => variant(e, 9, OPS),
        Op::Drain => variant(e, 10, OPS),
        Op::Stale { pick, kind } => {
            variant(e, 11, OPS);
            e.extend_from_slice(&pick.to_le_bytes());
            variant(e, kind as usize, 5);
        }
    }
}

/// Duplex with one secondary, four connections, 1 s timeouts (idle 10 s), and a secondary
/// budget of 4 KiB with the secondaries' shared cap at one budget plus a byte (the budget's top
/// three bits, 5, pick the cap: see `Limits::config`).
fn limits() -> Limits {
    Limits {
        mode: Mode::Duplex1,
        reports: true,
        max_connections: 3,
        high_water: 8191,
        low_water: 1024,
        secondary_budget: (5 << 13) | 4095,
        compare_window: 1024,
        connect_ms: 999,
        idle_ms: 9999,
        deadline_ms: 999,
        drain_ms: 1000,
    }
}

/// Sides of a duplex-1 session (`side % 3`).
const CLIENT: u8 = 0;
const PRIMARY: u8 = 1;
const SECONDARY: u8 = 2;

/// `side` of a duplex-1 session with the top bit set, which makes a connect failure for
/// `Reason::Other` a shortage of descriptors.
fn short_of_descriptors(side: u8) -> u8 {
    0x80 + (side + 1) % 3
}

fn connect_all(conn: u8) -> [Op; 2] {
    [PRIMARY, SECONDARY].map(|side| Op::Connect { conn, side })
}

/// `len` (1..=4096) bytes from the client of the `conn`-th live session.
fn upload(conn: u8, len: u16) -> Op {
    Op::Read {
        conn,
        side: CLIENT,
        len: len - 1,
    }
}

/// Everything queued on the `conn`-th live session's primary goes out.
fn primary_keeps_up(conn: u8) -> Op {
    Op::Flush {
        conn,
        side: PRIMARY,
        len: 0,
    }
}

/// The seeds, by name.
pub fn seeds() -> Vec<(&'static str, Scenario)> {
    let mut out = Vec::new();
    // Two sessions whose secondaries never read: 3,000 bytes each stay within a 4 KiB budget,
    // but not within the 4,097 bytes all secondaries may hold: the second upload's secondary is
    // detached (`detached-memory`), its primary and client go on.
    let mut ops = vec![Op::Accept];
    ops.extend(connect_all(0));
    ops.push(Op::Accept);
    ops.extend(connect_all(1));
    ops.extend([upload(0, 3000), primary_keeps_up(0)]);
    ops.extend([upload(1, 3000), primary_keeps_up(1)]);
    ops.extend([upload(0, 1000), primary_keeps_up(0), Op::FlushAll]);
    ops.extend([upload(1, 4000), primary_keeps_up(1)]);
    out.push(("secondaries-share-the-memory-cap", ops));
    // A secondary still connecting holds its client's bytes too: the first session's 3,000 wait
    // for its connect when the second session's upload crosses the cap.
    let mut ops = vec![
        Op::Accept,
        Op::Connect {
            conn: 0,
            side: PRIMARY,
        },
    ];
    ops.extend([upload(0, 3000), primary_keeps_up(0), Op::Accept]);
    ops.extend(connect_all(1));
    ops.extend([upload(1, 2000), primary_keeps_up(1)]);
    ops.push(Op::Connect {
        conn: 0,
        side: SECONDARY,
    });
    ops.extend([upload(1, 2000), Op::FlushAll]);
    out.push(("a-connecting-secondary-counts-against-the-cap", ops));
    // Connects that fail for want of descriptors: a secondary's, then a primary's, which closes
    // its client (`no-descriptors` both, never `refused`).
    let short = |conn: u8, side: u8| Op::ConnectFail {
        conn,
        side: short_of_descriptors(side),
        reason: Reason::Other,
    };
    let ops = vec![
        Op::Accept,
        short(0, SECONDARY),
        Op::Connect {
            conn: 0,
            side: PRIMARY,
        },
        upload(0, 100),
        primary_keeps_up(0),
        Op::Accept,
        short(1, PRIMARY),
    ];
    out.push(("connects-fail-for-want-of-descriptors", ops));
    // A session busy for three idle timeouts' worth of time, a few bytes every 6 s of a 10 s
    // idle timeout: the idle timer counts from the last byte, so it never fires.
    let mut ops = vec![Op::Accept];
    ops.extend(connect_all(0));
    for _ in 0..5 {
        ops.extend([Op::Advance { ms: 6000 }, upload(0, 100), Op::FlushAll]);
    }
    out.push(("a-busy-session-outlives-the-idle-timeout", ops));
    // The client's FIN reaches the primary as soon as the primary's queue is flushed, while the
    // secondary still holds the request unflushed.
    let mut ops = vec![Op::Accept];
    ops.extend(connect_all(0));
    ops.extend([
        upload(0, 500),
        primary_keeps_up(0),
        Op::Eof {
            conn: 0,
            side: CLIENT,
        },
        Op::Eof {
            conn: 0,
            side: PRIMARY,
        },
        Op::FlushAll,
    ]);
    out.push(("the-client-fin-does-not-wait-for-a-lagging-secondary", ops));
    // One client more than `max_connections` (4) arrives while none has left: it is refused.
    out.push((
        "the-accept-gate-holds-at-max-connections",
        vec![Op::Accept; 5],
    ));
    out.into_iter()
        .map(|(name, ops)| {
            (
                name,
                Scenario {
                    limits: limits(),
                    ops,
                },
            )
        })
        .collect()
}
