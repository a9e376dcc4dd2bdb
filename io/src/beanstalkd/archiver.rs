//! The archiver's interceptor: every byte passes through as it arrives, in both directions;
//! beside the stream it reads the client's requests and the server's answers with the engine's
//! beanstalkd framers, pairs each answer with its request, and when beanstalkd has taken a
//! far-future job (`INSERTED <id>` for a `put`, `RELEASED` for a `release`, with a delay of at
//! least `archive_after`) asks an effect to archive it. See `docs/BEANSTALKD.md`.
//!
//! The effect only hands jobs to the executor's queue (`executor.rs`): the session's later
//! answers wait behind it for that hand-over, never for a store commit. A session has at most one
//! such effect pending: jobs taken while it is pending go together in the next one, so a client
//! pipelining thousands of far-future puts costs one hand-over per round, never more effects than
//! `max_effects`. If the streams stop making sense (an answer the framer cannot frame, more
//! answers than requests), the session stops archiving and keeps passing bytes through.

use fanout_engine::framing::beanstalkd::{
    Command, Request, RequestFramer, ResponseFramer, ResponseKind,
};
use fanout_engine::{
    BackendId, Bytes, Conn, EffectId, EffectRequest, EffectResult, Interceptor, Open, UpstreamId,
};
use std::collections::VecDeque;

/// The effect kind the executor understands. Its payload is a run of records: a put beanstalkd
/// took, `P <id> <pri> <delay> <ttr> <tube> <body length>\n<body>`, or a release,
/// `R <id> <pri> <delay>\n`.
pub const ARCHIVE: &str = "beanstalkd-archive";

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
    /// Records for the next effect, and whether one is pending.
    batch: Vec<u8>,
    pending: bool,
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

    /// Pairs the answers framed so far with their requests; far-future jobs beanstalkd took go
    /// into the session's next batch.
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
            match (awaiting, &answer.kind) {
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
                    let head = format!("P {id} {pri} {delay} {ttr} {tube} {}\n", body.len());
                    st.batch.extend_from_slice(head.as_bytes());
                    st.batch.extend_from_slice(&body);
                }
                (Awaiting::Release { id, pri, delay }, ResponseKind::Word(w))
                    if w == "RELEASED" =>
                {
                    st.batch
                        .extend_from_slice(format!("R {id} {pri} {delay}\n").as_bytes());
                }
                _ => {}
            }
        }
    }
}

/// Hands the records gathered so far to the executor, unless an effect is pending already.
fn flush(st: &mut Session, conn: &mut Conn<'_>) {
    if st.pending || st.batch.is_empty() {
        return;
    }
    let payload = std::mem::take(&mut st.batch);
    st.pending = conn.effect(EffectRequest::new(ARCHIVE, payload)).is_ok();
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
            batch: Vec::new(),
            pending: false,
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
            flush(st, conn);
        }
    }

    fn on_effect(&mut self, st: &mut Session, conn: &mut Conn<'_>, id: EffectId, r: EffectResult) {
        st.pending = false;
        if let Err(e) = r {
            tracing::warn!(
                "beanstalkd session {}: effect {} not archived ({e}); its jobs stay in beanstalkd",
                conn.id().0,
                id.0
            );
        }
        flush(st, conn);
    }
}
