//! `fanout beanstalkd`, the archiving proxy (the design, its delivery guarantee and its named
//! duplicate windows are in `docs/BEANSTALKD.md`). Its logic, the interceptor and the two
//! background loops, is the engine's ([`fanout_engine::archive`]), shared with the simulator;
//! here are the ports it runs on:
//!
//! - [`executor`]: the effect executor (a bounded queue), the archiving thread and the
//!   re-injection thread, each running one of the engine's loops on blocking ports.
//! - [`store`]: the archive; [`sqlite`] (the default, embedded), [`mysql`] and [`postgres`]
//!   (several proxies may share one) implement it.
//! - [`client`]: a blocking beanstalkd client for the archiver's own connections.
//! - [`cli`]: the command line.

pub mod cli;
pub mod client;
pub mod executor;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod store;
