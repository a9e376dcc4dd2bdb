//! `fanout beanstalkd`, the archiving proxy (issue 11, in progress; the design, its delivery
//! guarantee and its named duplicate windows are in `docs/BEANSTALKD.md`).
//!
//! - [`archiver`]: the interceptor. Bytes pass through as they arrive; beside them it reads both
//!   streams with the engine's beanstalkd framers and asks an effect to archive each far-future
//!   job beanstalkd took.
//! - [`executor`]: the effect executor, the archiving thread (store commit, then delete from
//!   beanstalkd) and the re-injection thread (due jobs put back with the delay that remains).
//! - [`store`]: the archive; [`sqlite`] (the default, embedded), [`mysql`] and [`postgres`]
//!   (several proxies may share one) implement it.
//! - [`client`]: a blocking beanstalkd client for the archiver's own connections.
//! - [`cli`]: the command line.

pub mod archiver;
pub mod cli;
pub mod client;
pub mod executor;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod store;
