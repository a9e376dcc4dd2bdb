//! The inverse of decoding for hand-made inputs: the bytes `arbitrary` decodes to a given
//! [`Scenario`].

use super::program::Action;
use super::{Op, Scenario};
use crate::engine_events::Reason;

/// The input that decodes to `scenario`: `arbitrary`'s encoding (integers little-endian, a `bool`
/// byte before each operation, an enum's variant from a `u32`), for hand-made seeds.
pub fn encode(scenario: &Scenario) -> Vec<u8> {
    let mut e = Encoder::default();
    let l = &scenario.limits;
    e.u8(l.max_connections);
    for v in [l.high_water, l.low_water, l.secondary_budget] {
        e.u16(v);
    }
    e.u8(l.max_backends);
    e.u16(l.max_held);
    e.u8(l.max_effects);
    for v in [
        l.effect_ms,
        l.connect_ms,
        l.idle_ms,
        l.deadline_ms,
        l.drain_ms,
    ] {
        e.u16(v);
    }
    e.bool(scenario.flags.eager);
    e.bool(scenario.flags.failover);
    for op in &scenario.ops {
        e.bool(true);
        e.op(op);
    }
    e.0
}

#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Variant `index` of an enum of `count` (derive picks `(u32 * count) >> 32`).
    fn variant(&mut self, index: usize, count: usize) {
        let x = ((index as u64) << 32).div_ceil(count as u64) as u32;
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn reason(&mut self, r: Reason) {
        self.variant(r as usize, 5);
    }
    fn op(&mut self, op: &Op) {
        const OPS: usize = 16;
        match *op {
            Op::Accept => self.variant(0, OPS),
            Op::Chunk {
                conn,
                action,
                arg,
                len,
            } => {
                self.variant(1, OPS);
                self.u8(conn);
                self.variant(usize::from(action.byte()), Action::ALL.len());
                self.u8(arg);
                self.u16(len);
            }
            Op::Respond { conn, backend, len } => {
                self.variant(2, OPS);
                self.u8(conn);
                self.u8(backend);
                self.u16(len);
            }
            Op::Connect { conn, backend } => {
                self.variant(3, OPS);
                self.u8(conn);
                self.u8(backend);
            }
            Op::ConnectFail {
                conn,
                backend,
                reason,
            } => {
                self.variant(4, OPS);
                self.u8(conn);
                self.u8(backend);
                self.reason(reason);
            }
            Op::Flush { conn, side, len } => {
                self.variant(5, OPS);
                self.u8(conn);
                self.u8(side);
                self.u16(len);
            }
            Op::FlushAll => self.variant(6, OPS),
            Op::Eof { conn, side } => {
                self.variant(7, OPS);
                self.u8(conn);
                self.u8(side);
            }
            Op::Fail { conn, side, reason } => {
                self.variant(8, OPS);
                self.u8(conn);
                self.u8(side);
                self.reason(reason);
            }
            Op::EffectOk { pick, len } => {
                self.variant(9, OPS);
                self.u8(pick);
                self.u16(len);
            }
            Op::EffectErr { pick, unavailable } => {
                self.variant(10, OPS);
                self.u8(pick);
                self.bool(unavailable);
            }
            Op::EffectAgain { pick } => {
                self.variant(11, OPS);
                self.u8(pick);
            }
            Op::Advance { ms } => {
                self.variant(12, OPS);
                self.u16(ms);
            }
            Op::AdvanceToDeadline => self.variant(13, OPS),
            Op::Drain => self.variant(14, OPS),
            Op::Stale { pick, kind } => {
                self.variant(15, OPS);
                self.u16(pick);
                self.variant(kind as usize, 5);
            }
        }
    }
}
