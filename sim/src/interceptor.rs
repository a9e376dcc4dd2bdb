//! The interceptor the simulator runs in the `intercept-*` scenarios: [`LineRewriter`], a
//! pipelining line proxy whose every output byte is predictable from what its client sent and
//! what the effect model answered.
//!
//! # The protocol
//!
//! Clients send `\n`-terminated lines, pipelined (they never wait for an answer before sending
//! the next line). The primary is an echo service: it answers each line with the same line. The
//! client must hear, for each of its lines, in request order:
//!
//! - `ASK <x>` → `ANSWER <r>` when the `ask` effect for `x` answered `r` within the effect
//!   timeout, `FAILED` when it failed or timed out, `BUSY` when the session already had
//!   `Config::max_effects` effects pending (the scenarios keep below that, so it never happens);
//! - any other line → the same line upper-cased (ASCII).
//!
//! # How it keeps the order
//!
//! Every client byte goes to the primary unchanged (and to a mirror, when the engine is configured
//! with a secondary). The primary's echo is the sequencer: the rewriter reads its response lines
//! in order, upper-cases each plain line and, for an echoed `ASK` line, asks the effect model
//! instead of passing the line on. The engine's ordering across effects does the rest: whatever
//! is written after `Conn::effect` waits behind it, and `on_effect` writes at the effect's place,
//! so answers leave in request order even when effects complete out of order. The rewriter keeps
//! no queue of its own, only the partial response line, so on the client's EOF nothing of its
//! is left unsent (the engine sends the backends their FIN once their queues drained).
//!
//! Why not answer `ASK` without the primary: the primary's answer to an earlier line may arrive
//! after the effect was requested, and the engine would then (rightly) put it behind the effect's
//! answer; keeping the order would take a queue of client lines in the interceptor, which no
//! water mark bounds and which the backends' FIN would overtake.
//!
//! # Ends
//!
//! The engine's defaults: the primary's EOF becomes the client's FIN once everything queued (and
//! waiting behind effects) went out; a primary that fails mid-stream closes the client at once. A
//! partial line the primary left at its end (it crashed mid-line) is dropped: the client hears
//! whole answers only, so its stream is a prefix of the expected one.
//!
//! # Bounds
//!
//! A response line longer than `Config::max_frame` closes the session (never with the echo
//! service, whose lines are the client's). Every write goes through `Conn`, so the engine's
//! water marks pace the rewritten stream like a relayed one: `on_response` records the route
//! primary → client, `on_data` client → primary.
//!
//! Answers written by `on_effect` record no route, so the engine paces nothing by them (a gap,
//! reproduced by `sim/tests/engine_gaps.rs`). Here they stay bounded anyway: a session's route
//! primary → client exists from its first plain line, and once the client's queue passes the
//! high-water mark the primary is paused, so no new `ASK` line is read; what can still arrive is
//! the answers of the effects in flight, at most `max_effects` of [`LONGEST_EFFECT_ANSWER`]
//! bytes each (and before the first plain line, at most `MAX_ASKS` answers). That is the
//! allowance the limits oracle gives a client socket on top of one read past the mark.

use fanout_engine::{
    BackendId, Bytes, Conn, EffectId, EffectRequest, EffectResult, Interceptor, Open, UpstreamId,
};

/// The effect `ASK <x>` asks for; its payload is `x`.
pub const ASK_EFFECT: &str = "ask";

/// The longest line `on_effect` writes: `ANSWER ` + eight hex digits + `\n`.
pub const LONGEST_EFFECT_ANSWER: u64 = 16;

/// The pipelining line proxy described in the [module documentation](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct LineRewriter;

/// Per session: the primary, and the primary's partial response line.
#[derive(Debug)]
pub struct Lines {
    primary: Option<BackendId>,
    partial: Vec<u8>,
    /// Effects asked for and not yet answered (to stay below `max_effects`).
    pending: u32,
}

impl Interceptor for LineRewriter {
    type State = Lines;

    /// Opens the primary (upstream 0) and, when the engine has secondaries, one mirror
    /// (upstream 1) that gets the same bytes and whose answers are only compared.
    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Lines {
        let primary = conn.open(UpstreamId(0), Open::primary()).ok();
        if conn.config().secondaries > 0 {
            let _ = conn.open(UpstreamId(1), Open::secondary());
        }
        Lines {
            primary,
            partial: Vec::new(),
            pending: 0,
        }
    }

    /// Client bytes go to every backend as they are: the primary's echo orders the answers.
    fn on_data(&mut self, _st: &mut Lines, conn: &mut Conn<'_>, data: Bytes) {
        conn.forward(data);
    }

    /// The primary's lines, rewritten: plain lines upper-cased, `ASK` lines replaced by an effect
    /// whose answer `on_effect` writes at this place. A mirror's bytes are left to the engine's
    /// comparison.
    fn on_response(&mut self, st: &mut Lines, conn: &mut Conn<'_>, b: BackendId, data: Bytes) {
        if Some(b) != st.primary {
            return;
        }
        st.partial.extend_from_slice(&data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = st.partial[start..].iter().position(|&c| c == b'\n') {
            let line = &st.partial[start..start + n + 1];
            start += n + 1;
            match line.strip_prefix(b"ASK ") {
                Some(rest) => {
                    // Whatever was rewritten before the effect goes out before its answer.
                    if !out.is_empty() {
                        conn.answer(Bytes::from(std::mem::take(&mut out)));
                    }
                    if st.pending >= conn.config().max_effects {
                        out.extend_from_slice(b"BUSY\n");
                        continue;
                    }
                    let x = Bytes::copy_from_slice(&rest[..rest.len() - 1]);
                    if conn.effect(EffectRequest::new(ASK_EFFECT, x)).is_ok() {
                        st.pending += 1;
                    }
                }
                None => out.extend(line.iter().map(u8::to_ascii_uppercase)),
            }
        }
        st.partial.drain(..start);
        if !out.is_empty() {
            conn.answer(Bytes::from(out));
        }
        if st.partial.len() as u64 > conn.config().max_frame {
            conn.close();
        }
    }

    /// The effect's answer, at the place of the `ASK` line it stands for.
    fn on_effect(&mut self, st: &mut Lines, conn: &mut Conn<'_>, _id: EffectId, r: EffectResult) {
        st.pending = st.pending.saturating_sub(1);
        let line = match r {
            Ok(answer) => [&b"ANSWER "[..], &answer, b"\n"].concat(),
            Err(_) => b"FAILED\n".to_vec(),
        };
        debug_assert!(line.len() as u64 <= LONGEST_EFFECT_ANSWER);
        conn.answer(Bytes::from(line));
    }
}
