//! The beanstalkd archiver's logic, run unchanged by the production binary (`io/`, on threads
//! with blocking clients) and by the simulator (`sim/`, on turmoil tasks against a beanstalkd
//! model and a store model). Design and delivery guarantee: `docs/BEANSTALKD.md`.
//!
//! - [`Archiver`] (`interceptor.rs`): the session hooks. Bytes pass through as they arrive;
//!   beside them the framing [`Tap`](crate::framing::beanstalkd::Tap) collects a record for each
//!   far-future job beanstalkd took, and the archiver hands those records to the driver's
//!   executor as one [`ARCHIVE`] effect at a time per session.
//! - [`records`]: the effect's payload read back into [`Job`]s, and the rows of the archive.
//! - [`ports`]: what the background work needs from outside, as traits the drivers implement:
//!   the store ([`Archive`]), a beanstalkd connection ([`Server`]), the executor's queue
//!   ([`Queue`]) and the host ([`Host`]: clock, sleep, logging, opening links).
//! - [`work`]: the two background loops, [`archiving`] (commit a batch, delete it from
//!   beanstalkd, settle what a crash left) and [`reinjecting`] (claim due rows, put them back with
//!   the delay that remains, remove them).
//!
//! Like the rest of the engine this module opens no socket, reads no clock and starts no thread:
//! the loops are `async` functions that only await the ports, so the io driver runs each on its
//! own thread with blocking ports (`pollster::block_on`) and the simulator runs them as tasks on
//! turmoil's virtual clock, where a crash can land between any two awaits.

mod interceptor;
pub mod ports;
pub mod records;
pub mod work;

pub use interceptor::{Archiver, Session, ARCHIVE};
pub use ports::{Archive, Fault, Host, Level, Queue, Server};
pub use records::{parse_records, Job, JobStats, NewJob, Row, RowState};
pub use work::{archiving, reinjecting, Counters, Settings, Worker};

/// Deliberate bugs in the archiver's background work, compiled only with the `sim-mutants`
/// feature, so the simulator's archive oracles can be shown to catch each.
#[cfg(feature = "sim-mutants")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveMutant {
    /// A batch is deleted from beanstalkd before its store commit: a crash between the two
    /// loses the jobs.
    DeleteBeforeCommit,
    /// Due jobs go back with no delay, as soon as they are claimed (up to the lead early).
    ReinjectWithoutDelay,
    /// Re-injected rows are never removed: the next claim, once this one expired, puts them
    /// back again.
    ReinjectKeepsRows,
}

#[cfg(feature = "sim-mutants")]
impl ArchiveMutant {
    pub const ALL: [ArchiveMutant; 3] = [
        ArchiveMutant::DeleteBeforeCommit,
        ArchiveMutant::ReinjectWithoutDelay,
        ArchiveMutant::ReinjectKeepsRows,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ArchiveMutant::DeleteBeforeCommit => "archive-delete-before-commit",
            ArchiveMutant::ReinjectWithoutDelay => "reinject-without-delay",
            ArchiveMutant::ReinjectKeepsRows => "reinject-keeps-rows",
        }
    }
}
