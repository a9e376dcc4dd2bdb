//! Chunk boundaries never change what a framed interceptor does: however the client's and the
//! backend's streams are split into reads, every socket receives the same bytes and the session
//! ends the same way.

mod support;

use fanout_engine::framing::{Framer, LineFramer};
use fanout_engine::{
    BackendId, Bytes, Config, Conn, EffectId, EffectRequest, EffectResult, End, Finish,
    Interceptor, Open, UpstreamId,
};
use proptest::prelude::*;
use support::*;

/// A line protocol: `ask ...` lines are answered from an effect, `local ...` lines by the
/// interceptor itself, anything else is forwarded upper-cased; response lines are wrapped in
/// brackets. Unfinished lines at EOF pass through as they are.
struct Lines;

struct State {
    client: LineFramer,
    server: LineFramer,
}

impl Interceptor for Lines {
    type State = State;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> State {
        conn.open(UpstreamId(0), Open::primary()).unwrap();
        State {
            client: LineFramer::new(4096),
            server: LineFramer::new(4096),
        }
    }

    fn on_data(&mut self, st: &mut State, conn: &mut Conn<'_>, data: Bytes) {
        st.client.push(data);
        while let Ok(Some(line)) = st.client.pop() {
            if line.starts_with(b"ask ") {
                conn.effect(EffectRequest::new("ask", line)).unwrap();
            } else if line.starts_with(b"local ") {
                conn.answer(Bytes::from([b"you said ", &line[6..]].concat()));
            } else {
                conn.forward(Bytes::from(line.to_ascii_uppercase()));
            }
        }
    }

    fn on_client_eof(&mut self, st: &mut State, conn: &mut Conn<'_>) {
        conn.forward(st.client.take_rest());
    }

    fn on_response(&mut self, st: &mut State, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        st.server.push(data);
        while let Ok(Some(line)) = st.server.pop() {
            conn.answer(Bytes::from([b"[", &line[..], b"]"].concat()));
        }
    }

    fn on_finish(&mut self, st: &mut State, conn: &mut Conn<'_>, _b: BackendId, _e: End) -> Finish {
        conn.answer(st.server.take_rest());
        Finish::Default
    }

    fn on_effect(&mut self, _: &mut State, conn: &mut Conn<'_>, _id: EffectId, r: EffectResult) {
        match r {
            Ok(v) => conn.answer(v),
            Err(_) => conn.answer(Bytes::from_static(b"no answer\n")),
        }
    }
}

/// Runs one session with the streams in the given pieces; effects are answered (in reverse
/// order of request) after every client read, the answer a function of the request.
fn run(request: &[Vec<u8>], response: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, String) {
    let mut h = Harness::with(
        Config {
            reports: true,
            ..Config::default()
        },
        Lines,
    );
    h.open(1);
    for part in request {
        h.read(client(1), part);
        let pending: Vec<_> = h.effects.iter().rev().map(|e| (e.1, e.2.clone())).collect();
        for (id, req) in pending {
            let answer = Bytes::from([b"answer to ", &req.payload[4..]].concat());
            h.effect_done(id, Ok(answer));
        }
        h.flush_all();
    }
    h.eof(client(1));
    for part in response {
        h.read(backend(1, P), part);
        h.flush_all();
    }
    h.eof(backend(1, P));
    h.flush_all();
    h.assert_quiescent();
    let outcome = format!("{:?}", h.reports[0].backends[0].outcome);
    (
        h.sent(client(1)).to_vec(),
        h.sent(backend(1, P)).to_vec(),
        outcome,
    )
}

fn protocol_lines() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z ]{0,20}\n".prop_map(|s| format!("ask {s}")),
        "[a-z ]{0,20}\n".prop_map(|s| format!("local {s}")),
        "[a-z ]{0,30}\n",
        "[a-z]{0,10}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|ls| ls.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_split_of_the_streams_gives_a_framed_interceptor_the_same_outcome(
        request in protocol_lines(),
        response in "([a-z ]{0,20}\n){0,6}[a-z]{0,5}",
        req_cuts in prop::collection::vec(any::<usize>(), 0..8),
        resp_cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let response = response.into_bytes();
        let whole = run(std::slice::from_ref(&request), std::slice::from_ref(&response));
        let pieces = run(&split(&request, &req_cuts), &split(&response, &resp_cuts));
        prop_assert_eq!(&pieces, &whole);
        // And the outcome is what the protocol says: the backend got the forwarded lines.
        let forwarded: Vec<u8> = request
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| !l.starts_with(b"ask ") && !l.starts_with(b"local "))
            .flat_map(|l| l.to_ascii_uppercase_if_line())
            .collect();
        prop_assert_eq!(whole.1, forwarded);
    }
}

trait UpperIfLine {
    fn to_ascii_uppercase_if_line(&self) -> Vec<u8>;
}

impl UpperIfLine for [u8] {
    /// Whole lines are upper-cased by the interceptor; the unfinished tail passes as it is.
    fn to_ascii_uppercase_if_line(&self) -> Vec<u8> {
        if self.ends_with(b"\n") {
            self.to_ascii_uppercase()
        } else {
            self.to_vec()
        }
    }
}
