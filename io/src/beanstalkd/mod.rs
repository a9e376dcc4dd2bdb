//! The beanstalkd archiver's building blocks (issue 11, in progress; the design is in
//! `docs/BEANSTALKD.md`): the archive [`store`] and its embedded SQLite implementation, and a
//! blocking [`client`] for the archiver's own connections to beanstalkd. The interceptor that
//! reads the client's stream with the engine's beanstalkd framers, the executor and the
//! re-injector are not built yet.

pub mod client;
pub mod sqlite;
pub mod store;
