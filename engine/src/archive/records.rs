//! What moves between the archiver's parts: the [`Job`]s an archive effect carries (read back
//! from the [`Tap`](crate::framing::beanstalkd::Tap)'s records), the [`NewJob`] committed to the
//! store, and the store's [`Row`]s.

/// A job on its way to the archive, as the executor queued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// From a put: everything known but the due time, which counts from when it was queued.
    Put {
        id: u64,
        pri: u32,
        delay: u32,
        ttr: u32,
        tube: String,
        body: Vec<u8>,
        queued_ms: i64,
    },
    /// From a release (or a put kept by id only): tube, ttr and body are read from beanstalkd.
    Release {
        id: u64,
        pri: u32,
        delay: u32,
        queued_ms: i64,
    },
}

impl Job {
    /// The job by its id alone: what is needed to read it back from beanstalkd (as a release).
    pub fn by_id(self) -> Job {
        match self {
            Job::Put {
                id,
                pri,
                delay,
                queued_ms,
                ..
            } => Job::Release {
                id,
                pri,
                delay,
                queued_ms,
            },
            release => release,
        }
    }

    /// Its id in beanstalkd.
    pub fn id(&self) -> u64 {
        match self {
            Job::Put { id, .. } | Job::Release { id, .. } => *id,
        }
    }
}

/// The jobs of a run of the tap's records (`P <id> <pri> <delay> <ttr> <tube> <len>\n<body>` and
/// `R <id> <pri> <delay>\n`), queued at `queued_ms`; `None` if the payload is not such a run.
pub fn parse_records(mut p: &[u8], queued_ms: i64) -> Option<Vec<Job>> {
    let mut jobs = Vec::new();
    while !p.is_empty() {
        let nl = p.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&p[..nl]).ok()?;
        p = &p[nl + 1..];
        let mut w = head.split(' ');
        let letter = w.next()?;
        let mut num = || w.next()?.parse::<u64>().ok();
        let small = |n: u64| u32::try_from(n).ok();
        match letter {
            "P" => {
                let (id, pri, delay, ttr) =
                    (num()?, small(num()?)?, small(num()?)?, small(num()?)?);
                // The tube name may not hold a space, but read it from the right all the same.
                let mut w = head.rsplitn(3, ' ');
                let len: usize = w.next()?.parse().ok()?;
                let tube = w.next()?.to_string();
                let body = p.get(..len)?.to_vec();
                p = &p[len..];
                jobs.push(Job::Put {
                    id,
                    pri,
                    delay,
                    ttr,
                    tube,
                    body,
                    queued_ms,
                });
            }
            "R" => jobs.push(Job::Release {
                id: num()?,
                pri: small(num()?)?,
                delay: small(num()?)?,
                queued_ms,
            }),
            _ => return None,
        }
    }
    Some(jobs)
}

/// A job leaving beanstalkd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub tube: String,
    pub pri: u32,
    /// Seconds.
    pub ttr: u32,
    /// When the job is due to be ready, milliseconds since the Unix epoch.
    pub due_ms: i64,
    pub body: Vec<u8>,
    /// Its id in beanstalkd, and which beanstalkd process gave it (`stats` `id`).
    pub server_id: u64,
    pub server_instance: String,
}

/// A row of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub row: i64,
    pub job: NewJob,
    pub state: RowState,
}

/// Where a row stands; see [`Archive`](super::Archive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowState {
    /// Committed; the archiver has not yet confirmed the job left beanstalkd.
    Pending,
    /// The row is the job's only copy.
    Archived,
}

/// What `stats-job` says about a job, for the fields the archiver needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStats {
    pub tube: String,
    pub state: String,
    pub pri: u32,
    pub ttr: u32,
    /// Seconds until a delayed job is ready.
    pub time_left: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_into_jobs_with_bodies_of_any_bytes() {
        let mut p = b"P 7 10 3600 60 my-tube 5\nab\ncd".to_vec();
        p.extend_from_slice(b"R 9 1 7200\n");
        let jobs = parse_records(&p, 1000).unwrap();
        assert_eq!(
            jobs,
            [
                Job::Put {
                    id: 7,
                    pri: 10,
                    delay: 3600,
                    ttr: 60,
                    tube: "my-tube".into(),
                    body: b"ab\ncd".to_vec(),
                    queued_ms: 1000
                },
                Job::Release {
                    id: 9,
                    pri: 1,
                    delay: 7200,
                    queued_ms: 1000
                }
            ]
        );
    }

    #[test]
    fn a_payload_that_is_not_records_is_refused_whole() {
        for bad in [
            &b"X 1 2 3\n"[..],
            b"P 1 2 3 4 t 10\nshort",
            b"R 1 2\n",
            b"R 1 2 99999999999\n",
            b"P 1 2 3",
        ] {
            assert_eq!(
                parse_records(bad, 0),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
