//! The archiver's interceptor: every byte passes through as it arrives, in both directions;
//! beside the stream a [`Tap`] reads the client's requests and the server's answers, pairs them,
//! and collects a record for each far-future job beanstalkd took (`INSERTED <id>` for a `put`,
//! `RELEASED` for a `release`, with a delay of at least `archive_after`).
//!
//! The records go to the executor as an effect that only hands them to its queue: the session's
//! later answers wait behind it for that hand-over, never for a store commit. A session has at
//! most one such effect pending: records collected while it is pending go together in the next
//! one, so a client pipelining thousands of far-future puts costs one hand-over per round, never
//! more effects than `max_effects`. If the streams stop making sense to the tap, the session
//! stops archiving and keeps passing bytes through.

use crate::framing::beanstalkd::Tap;
use crate::{
    BackendId, Bytes, Conn, EffectId, EffectRequest, EffectResult, Interceptor, Open, UpstreamId,
};

/// The effect kind the executor understands; its payload is a run of the [`Tap`]'s records
/// (read back with [`super::parse_records`]).
pub const ARCHIVE: &str = "beanstalkd-archive";

/// One session's reading of both streams.
#[derive(Debug)]
pub struct Session {
    tap: Tap,
    /// An archive effect is pending.
    pending: bool,
}

/// The interceptor, one per event loop.
#[derive(Debug, Clone)]
pub struct Archiver {
    /// Jobs delayed at least this many seconds are archived.
    pub archive_after: u32,
    /// The server's maximum job size (`beanstalkd -z`), so the tap reads bodies as it does.
    pub max_job_size: u32,
    /// Where a session's trouble is told (the engine logs nothing itself).
    pub warn: fn(std::fmt::Arguments<'_>),
}

/// Hands the records collected so far to the executor, unless an effect is pending already.
fn flush(st: &mut Session, conn: &mut Conn<'_>) {
    if st.pending || !st.tap.has_records() {
        return;
    }
    let records = st.tap.take_records();
    st.pending = conn.effect(EffectRequest::new(ARCHIVE, records)).is_ok();
}

impl Interceptor for Archiver {
    type State = Session;

    fn on_connect(&mut self, conn: &mut Conn<'_>) -> Session {
        let _ = conn.open(UpstreamId(0), Open::primary());
        Session {
            tap: Tap::new(self.archive_after, self.max_job_size),
            pending: false,
        }
    }

    fn on_data(&mut self, st: &mut Session, conn: &mut Conn<'_>, data: Bytes) {
        conn.forward(data.clone());
        st.tap.client(data);
    }

    fn on_response(&mut self, st: &mut Session, conn: &mut Conn<'_>, _b: BackendId, data: Bytes) {
        conn.answer(data.clone());
        if let Some(why) = st.tap.server(data) {
            (self.warn)(format_args!(
                "beanstalkd session {}: {why}; archiving stops for it",
                conn.id().0
            ));
        }
        flush(st, conn);
    }

    fn on_effect(&mut self, st: &mut Session, conn: &mut Conn<'_>, id: EffectId, r: EffectResult) {
        st.pending = false;
        if let Err(e) = r {
            (self.warn)(format_args!(
                "beanstalkd session {}: effect {} not archived ({e}); its jobs stay in beanstalkd",
                conn.id().0,
                id.0
            ));
        }
        flush(st, conn);
    }
}
