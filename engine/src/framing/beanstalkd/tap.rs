//! [`Tap`]: the archiver's reading of one beanstalkd connection, beside the bytes it passes
//! through. Sans-IO, so every driver (the mio proxy, the simulator, the fuzzers) runs the same
//! one.

use super::{Command, Request, RequestFramer, ResponseError, ResponseFramer, ResponseKind};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;

/// What an answer on its way will settle.
#[derive(Debug)]
enum Awaiting {
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
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
}

/// Why a tap stopped reading: the streams no longer make sense to it. The connection's bytes
/// still pass; nothing more is archived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The server's stream broke the framing.
    Answers(ResponseError),
    /// An answer came with no request waiting for one.
    UnaskedAnswer,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Answers(e) => write!(f, "{e}"),
            Lost::UnaskedAnswer => write!(f, "an answer with no request waiting for it"),
        }
    }
}

/// Pairs every answer with its request, and collects a record for each far-future job
/// beanstalkd took: a `put` with a delay of at least `archive_after` answered `INSERTED <id>`,
/// or such a `release` answered `RELEASED`. Records, in the order beanstalkd answered:
///
/// - `P <id> <pri> <delay> <ttr> <tube> <body length>\n<body>` for a put;
/// - `R <id> <pri> <delay>\n` for a release.
///
/// Call [`client`](Tap::client) with every chunk the client sent and [`server`](Tap::server)
/// with every chunk the server sent, in the order they arrive; take what was collected with
/// [`take_records`](Tap::take_records).
#[derive(Debug)]
pub struct Tap {
    archive_after: u32,
    requests: RequestFramer,
    answers: ResponseFramer,
    awaiting: VecDeque<Awaiting>,
    records: Vec<u8>,
    lost: Option<Lost>,
}

impl Tap {
    /// A tap for a server whose maximum job size is `max_job_size`.
    pub fn new(archive_after: u32, max_job_size: u32) -> Tap {
        Tap {
            archive_after,
            requests: RequestFramer::new(max_job_size),
            answers: ResponseFramer::new(u64::from(max_job_size).max(1 << 20)),
            awaiting: VecDeque::new(),
            records: Vec::new(),
            lost: None,
        }
    }

    /// Why it stopped reading, if it did.
    pub fn lost(&self) -> Option<&Lost> {
        self.lost.as_ref()
    }

    /// Bytes the client sent. The tap keeps at most a window, a put line and its body.
    pub fn client(&mut self, data: Bytes) {
        if self.lost.is_some() {
            return;
        }
        self.requests.push(data);
        while let Some(piece) = self.requests.pop() {
            if piece.answers() == 0 {
                continue;
            }
            let awaiting = match piece {
                Request::Put { put, body, .. } if put.delay >= self.archive_after => {
                    Awaiting::Put {
                        tube: self.requests.used_tube().to_string(),
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
            self.awaiting.push_back(awaiting);
        }
    }

    /// Bytes the server sent. Returns the reason if the tap stops reading here.
    pub fn server(&mut self, data: Bytes) -> Option<&Lost> {
        if self.lost.is_some() {
            return None;
        }
        self.answers.push(data);
        loop {
            let answer = match self.answers.pop() {
                Ok(Some(a)) => a,
                Ok(None) => return None,
                Err(e) => return Some(self.lose(Lost::Answers(e))),
            };
            let Some(awaiting) = self.awaiting.pop_front() else {
                return Some(self.lose(Lost::UnaskedAnswer));
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
                    self.records.extend_from_slice(head.as_bytes());
                    self.records.extend_from_slice(&body);
                }
                (Awaiting::Release { id, pri, delay }, ResponseKind::Word(w))
                    if w == "RELEASED" =>
                {
                    let record = format!("R {id} {pri} {delay}\n");
                    self.records.extend_from_slice(record.as_bytes());
                }
                _ => {}
            }
        }
    }

    fn lose(&mut self, why: Lost) -> &Lost {
        self.awaiting.clear();
        self.lost.insert(why)
    }

    /// The records collected since the last call.
    pub fn take_records(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.records)
    }

    /// Whether records wait to be taken.
    pub fn has_records(&self) -> bool {
        !self.records.is_empty()
    }
}
