//! The beanstalkd model: the part of beanstalkd 1.12 the archiver and its clients use, over
//! turmoil sockets, with jobs that outlive a restart (as with a binlog, `-b`).
//!
//! Commands: `put` (`INSERTED <id>`; ids count from 1 and continue after a restart, as a binlog
//! replays them), `use`, `delete`, `peek`, `stats-job` (`tube`, `state`, `pri`, `ttr`,
//! `time-left`), `stats` (its `id` changes with every restart), `quit`; anything else is
//! `UNKNOWN_COMMAND`. Requests are read with the engine's [`RequestFramer`], which tracks the
//! real server exactly. A delayed job becomes ready when its delay has passed; the model's
//! worker ([`Beanstalk::take_ready`]) reserves and deletes ready jobs, as the application's
//! workers would, and every job it takes is a delivery the oracles judge.
//!
//! [`SimServer`] is the archiver's [`Server`] port on a turmoil connection to the model.

use crate::conn::{split, ReadHalf, WriteHalf};
use bytes::Bytes;
use fanout_engine::archive::{Fault, JobStats, Server};
use fanout_engine::framing::beanstalkd::{
    Command, JobVerb, Request, RequestFramer, Response, ResponseFramer, ResponseKind,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// The port the model listens on.
pub const PORT: u16 = 11300;

/// One job in the model.
#[derive(Clone, Debug)]
struct Job {
    tube: String,
    pri: u32,
    ttr: u32,
    body: Vec<u8>,
    /// Virtual time (since the simulation's start) from which it is ready.
    ready_at: Duration,
}

/// A job a worker took from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub body: Vec<u8>,
    pub tube: String,
    pub pri: u32,
    pub ttr: u32,
    /// Virtual time it was reserved.
    pub at: Duration,
}

/// The server's state, shared by its connections and kept across restarts.
#[derive(Debug, Default)]
pub struct Beanstalk {
    jobs: BTreeMap<u64, Job>,
    next_id: u64,
    /// The `stats` `id` of the running process.
    pub instance: String,
    pub restarts: u32,
    /// The most jobs held at once: what archiving saves.
    pub peak_jobs: usize,
    pub deliveries: Vec<Delivery>,
}

pub type BeanstalkRef = Rc<RefCell<Beanstalk>>;

impl Beanstalk {
    pub fn new(instance: String) -> BeanstalkRef {
        Rc::new(RefCell::new(Beanstalk {
            next_id: 1,
            instance,
            ..Beanstalk::default()
        }))
    }

    /// Jobs held now.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The application's worker: reserves and deletes every job ready at `now`, recording each.
    pub fn take_ready(&mut self, now: Duration) {
        let ready: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.ready_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let j = self.jobs.remove(&id).expect("listed");
            self.deliveries.push(Delivery {
                body: j.body,
                tube: j.tube,
                pri: j.pri,
                ttr: j.ttr,
                at: now,
            });
        }
    }

    fn answer(&mut self, now: Duration, used: &mut String, req: Request) -> Option<Vec<u8>> {
        let out = match req {
            Request::Put { put, body, .. } => {
                if &body[body.len() - 2..] != b"\r\n" {
                    b"EXPECTED_CRLF\r\n".to_vec()
                } else {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.jobs.insert(
                        id,
                        Job {
                            tube: used.clone(),
                            pri: put.pri,
                            ttr: put.ttr.max(1),
                            body: body[..body.len() - 2].to_vec(),
                            ready_at: now + Duration::from_secs(put.delay.into()),
                        },
                    );
                    self.peak_jobs = self.peak_jobs.max(self.jobs.len());
                    format!("INSERTED {id}\r\n").into_bytes()
                }
            }
            Request::Command { command, line } => match command {
                Command::Use { tube } => {
                    let out = format!("USING {tube}\r\n").into_bytes();
                    *used = tube;
                    out
                }
                Command::Job { verb, id } => self.job_command(now, verb, id),
                Command::Quit => return None,
                _ if line.starts_with(b"stats\r\n") => {
                    let yaml = format!("---\nid: {}\ncurrent-jobs-ready: 0\n", self.instance);
                    format!("OK {}\r\n{yaml}\r\n", yaml.len()).into_bytes()
                }
                _ => b"UNKNOWN_COMMAND\r\n".to_vec(),
            },
            Request::PutTooBig { .. } | Request::Discard { ends: None, .. } => return Some(vec![]),
            Request::Discard { ends: Some(_), .. } => b"BAD_FORMAT\r\n".to_vec(),
            Request::AfterQuit(_) => return None,
        };
        Some(out)
    }

    fn job_command(&mut self, now: Duration, verb: JobVerb, id: u64) -> Vec<u8> {
        let Some(job) = self.jobs.get(&id) else {
            return b"NOT_FOUND\r\n".to_vec();
        };
        match verb {
            JobVerb::Delete => {
                self.jobs.remove(&id);
                b"DELETED\r\n".to_vec()
            }
            JobVerb::Peek => {
                let mut out = format!("FOUND {id} {}\r\n", job.body.len()).into_bytes();
                out.extend_from_slice(&job.body);
                out.extend_from_slice(b"\r\n");
                out
            }
            JobVerb::StatsJob => {
                let (state, left) = match job.ready_at.checked_sub(now) {
                    Some(left) if !left.is_zero() => ("delayed", left.as_secs()),
                    _ => ("ready", 0),
                };
                let yaml = format!(
                    "---\nid: {id}\ntube: {}\nstate: {state}\npri: {}\nttr: {}\ntime-left: {left}\n",
                    job.tube, job.pri, job.ttr
                );
                format!("OK {}\r\n{yaml}\r\n", yaml.len()).into_bytes()
            }
            _ => b"UNKNOWN_COMMAND\r\n".to_vec(),
        }
    }
}

/// The server host: accepts connections until the host crashes.
pub async fn serve(model: BeanstalkRef) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let model = model.clone();
        tokio::task::spawn_local(async move {
            let (mut rd, mut wr) = split(stream);
            let mut framer = RequestFramer::new(65_535);
            let mut used = "default".to_string();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                framer.push(Bytes::copy_from_slice(&buf[..n]));
                let mut out = Vec::new();
                while let Some(req) = framer.pop() {
                    let now = turmoil::sim_elapsed().unwrap_or_default();
                    let answer = model.borrow_mut().answer(now, &mut used, req);
                    match answer {
                        Some(bytes) => out.extend_from_slice(&bytes),
                        None => {
                            let _ = wr.write_all(&out).await;
                            return;
                        }
                    }
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The archiver's [`Server`] port: one turmoil connection to the model.
pub struct SimServer {
    rd: ReadHalf,
    wr: WriteHalf,
    framer: ResponseFramer,
    used: String,
}

fn fault(e: impl std::fmt::Display) -> Fault {
    Fault(e.to_string())
}

impl SimServer {
    /// Connects, and reads the server process's `stats` `id`.
    pub async fn connect(host: &str) -> Result<(SimServer, String), Fault> {
        let stream = TcpStream::connect((host, PORT)).await.map_err(fault)?;
        let (rd, wr) = split(stream);
        let mut s = SimServer {
            rd,
            wr,
            framer: ResponseFramer::new(1 << 20),
            used: "default".into(),
        };
        let r = s.call(b"stats\r\n".to_vec()).await?;
        let yaml = String::from_utf8_lossy(&r.body).to_string();
        let id = yaml
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .ok_or_else(|| fault("stats without an id"))?
            .to_string();
        Ok((s, id))
    }

    async fn call(&mut self, req: Vec<u8>) -> Result<Response, Fault> {
        self.wr.write_all(&req).await.map_err(fault)?;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<Response, Fault> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(r) = self.framer.pop().map_err(|e| fault(format!("{e:?}")))? {
                return Ok(r);
            }
            match self.rd.read(&mut buf).await.map_err(fault)? {
                0 => return Err(fault("beanstalkd closed the connection")),
                n => self.framer.push(Bytes::copy_from_slice(&buf[..n])),
            }
        }
    }
}

fn unexpected(r: &Response) -> Fault {
    Fault(format!(
        "unexpected answer {:?}",
        String::from_utf8_lossy(&r.line)
    ))
}

fn deleted(r: &Response) -> Result<bool, Fault> {
    match &r.kind {
        ResponseKind::Word(w) if w == "DELETED" => Ok(true),
        ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(false),
        _ => Err(unexpected(r)),
    }
}

impl Server for SimServer {
    async fn use_tube(&mut self, tube: &str) -> Result<(), Fault> {
        if self.used == tube {
            return Ok(());
        }
        let r = self.call(format!("use {tube}\r\n").into_bytes()).await?;
        match &r.kind {
            ResponseKind::Using(t) if t == tube => {
                self.used = tube.to_string();
                Ok(())
            }
            _ => Err(unexpected(&r)),
        }
    }

    async fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, Fault> {
        let mut req = format!("put {pri} {delay} {ttr} {}\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"\r\n");
        let r = self.call(req).await?;
        match r.kind {
            ResponseKind::Inserted(id) => Ok(id),
            _ => Err(unexpected(&r)),
        }
    }

    async fn delete(&mut self, id: u64) -> Result<bool, Fault> {
        let r = self.call(format!("delete {id}\r\n").into_bytes()).await?;
        deleted(&r)
    }

    async fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<bool>, Fault> {
        let req: String = ids.iter().map(|id| format!("delete {id}\r\n")).collect();
        self.wr.write_all(req.as_bytes()).await.map_err(fault)?;
        let mut out = Vec::with_capacity(ids.len());
        for _ in ids {
            out.push(deleted(&self.answer().await?)?);
        }
        Ok(out)
    }

    async fn peek(&mut self, id: u64) -> Result<Option<Vec<u8>>, Fault> {
        let r = self.call(format!("peek {id}\r\n").into_bytes()).await?;
        match &r.kind {
            ResponseKind::Found { id: got } if *got == id => {
                Ok(Some(r.body[..r.body.len() - 2].to_vec()))
            }
            ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(None),
            _ => Err(unexpected(&r)),
        }
    }

    async fn stats_job(&mut self, id: u64) -> Result<Option<JobStats>, Fault> {
        let r = self
            .call(format!("stats-job {id}\r\n").into_bytes())
            .await?;
        match &r.kind {
            ResponseKind::Ok => {
                let yaml = String::from_utf8_lossy(&r.body).to_string();
                let field = |k: &str| {
                    yaml.lines()
                        .find_map(|l| l.strip_prefix(k)?.strip_prefix(": "))
                        .map(str::to_string)
                };
                let num = |k: &str| field(k)?.parse::<u64>().ok();
                let stats = (|| {
                    Some(JobStats {
                        tube: field("tube")?,
                        state: field("state")?,
                        pri: num("pri")? as u32,
                        ttr: num("ttr")? as u32,
                        time_left: num("time-left")?,
                    })
                })();
                stats.map(Some).ok_or_else(|| unexpected(&r))
            }
            ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(None),
            _ => Err(unexpected(&r)),
        }
    }
}
