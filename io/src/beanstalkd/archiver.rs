//! The archiver's interceptor: every byte passes through as it arrives, in both directions;
//! beside the stream it reads the client's requests and the server's answers with the engine's
//! beanstalkd framers, pairs each answer with its request, and when beanstalkd has taken a
//! far-future job (`INSERTED <id>` for a `put`, `RELEASED` for a `release`, with a delay of at
//! least `archive_after`) asks an effect to archive it. See `docs/BEANSTALKD.md`.
//!
//! The effect only hands the job to the executor's queue (`executor.rs`): the session's later
//! answers wait behind it for that hand-over, never for a store commit. If the streams stop
//! making sense (an answer the framer cannot frame, more answers than requests), the session
//! stops archiving and keeps passing bytes through.

use fanout_engine::framing::beanstalkd::{
    Command, Request, RequestFramer, ResponseFramer, ResponseKind,
};
use fanout_engine::{
    BackendId, Bytes, Conn, EffectId, EffectRequest, EffectResult, Interceptor, Open, UpstreamId,
};
use std::collections::VecDeque;

/// Effect kinds the executor understands.
pub const ARCHIVE_PUT: &str = "beanstalkd-archive-put";
pub const ARCHIVE_RELEASE: &str = "beanstalkd-archive-release";

/// What an answer on its way will settle.
#[derive(Debug)]
enum Awaiting {
    /// An answer to pass by.
    Plain,
    /// A far-future put: archive it once beanstalkd says `INSERTED <id>`.
    Put {
        tube: String,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
    },
    /// A far-future release of job `id`: archive it once beanstalkd says `RELEASED`.
    Release { id: u64, pri: u32, delay: u32 },
}

/// One session's reading of both streams.
#[derive(Debug)]
pub struct Session {
    requests: RequestFramer,
    answers: ResponseFramer,
    awaiting: VecDeque<Awaiting>,
    /// The streams stopped making sense: pass bytes through, archive nothing more.
    lost: bool,
}

/// The interceptor, one per event loop.
#[derive(Debug, Clone)]
pub struct Archiver {
    /// Jobs delayed at least this many seconds are archived.
    pub archive_after: u32,
    /// The server's maximum job size (`beanstalkd -z`), so the framer reads bodies as it does.
    pub max_job_size: u32,
}

impl Archiver {
    fn read_requests(&self, st: &mut Session) {
        while let Some(piece) = st.requests.pop() {
            if piece.answers() == 0 {
                continue;
            }
            let awaiting = match piece {
                Request::Put { put, body, .. } if put.delay >= self.archive_after => {
                    Awaiting::Put {
                        tube: st.requests.used_tube().to_string(),
                        pri: put.pri,
                        delay: put.delay,
                        ttr: put.ttr,
                        body: body.slice(..body.len() - 2),
                    }
                }
                Request::Command {
                    command: Command::Release { id, pri, delay },
                    ..
                } if delay >= self.archive_after => Awaiting::Release { id, pri, delay },
                _ => Awaiting::Plain,
            };
            st.awaiting.push_back(awaiting);
        }
    }

    fn read_answers(&self, st: &mut Session, conn: &mut Conn<'_>) {
        loop {
            let answer = match st.answers.pop() {
                Ok(Some(a)) => a,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(
                        "beanstalkd session {}: {e}; archiving stops for it",
                        conn.id().0
                    );
                    st.lost = true;
                    return;
                }
            };
            let Some(awaiting) = st.awaiting.pop_front() else {
                tracing::warn!(
                    "beanstalkd session {}: an answer with no request; archiving stops for it",
                    conn.id().0
                );
                st.lost = true;
                return;
            };
            let request = match (awaiting, &answer.kind) {
                (
                    Awaiting::Put {
                        tube,
                        pri,
                        delay,
                        ttr,
                        body,
                    },
                    ResponseKind::Inserted(id),
                ) => {
                    let mut payload = format!("{id} {pri} {delay} {ttr} {tube}\n").into_bytes();
                    payload.extend_from_slice(&body);
                    Some(EffectRequest::new(ARCHIVE_PUT, payload))
                }
                (Awaiting::Release { id, pri, delay }, ResponseKind::Word(w))
                    if w == "RELEASED" =>
                {
                    Some(EffectRequest::new(
                        ARCHIVE_RELEASE,
                        format!("{id} {pri} {delay}").into_bytes(),
                    ))
                }
                _ => None,
            };
            if let Some(request) = request {
                if conn.effect(request).is_err() {
                    return; // the session ends: too many effects pending
                }
            }
        }
    }
}

impl Interceptor for Archiver {
    type State = Session;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Session {
        let _ = conn.open(UpstreamId(0), Open::primary());
        Session {
            requests: RequestFramer::new(self.max_job_size),
            answers: ResponseFramer::new(u64::from(self.max_job_size).max(1 << 20)),
            awaiting: VecDeque::new(),
            lost: false,
        }
    }

    fn on_data(&mut self, st: &mut Session, conn: &mut Conn<'_>, data: Bytes) {
        conn.forward(data.clone());
        if !st.lost {
            st.requests.push(data);
            self.read_requests(st);
        }
    }

    fn on_response(&mut self, st: &mut Session, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        conn.answer(data.clone());
        if !st.lost {
            st.answers.push(data);
            self.read_answers(st, conn);
        }
    }

    fn on_effect(&mut self, _st: &mut Session, conn: &mut Conn<'_>, id: EffectId, r: EffectResult) {
        if let Err(e) = r {
            tracing::warn!(
                "beanstalkd session {}: effect {} not archived ({e}); the job stays in beanstalkd",
                conn.id().0,
                id.0
            );
        }
    }
}
