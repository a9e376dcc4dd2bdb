//! A small blocking beanstalkd client for the archiver's own connections (archiving deletes,
//! re-injecting puts, settling pending rows after a crash). One command at a time, every read
//! and write under a timeout; answers framed by the engine's [`ResponseFramer`].

pub use fanout_engine::archive::JobStats;
use fanout_engine::framing::beanstalkd::{Response, ResponseFramer, ResponseKind};
use fanout_engine::Bytes;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest answer body read (a job of the largest size beanstalkd allows, 1 GiB, or `stats`).
const MAX_BODY: u64 = 1 << 30;

/// What went wrong talking to beanstalkd.
#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    /// An answer the command cannot have.
    Unexpected {
        command: String,
        answer: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "beanstalkd: {e}"),
            ClientError::Unexpected { command, answer } => {
                write!(f, "beanstalkd answered {answer:?} to {command:?}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// One connection to beanstalkd.
pub struct Client {
    stream: TcpStream,
    framer: ResponseFramer,
    used: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("used", &self.used).finish()
    }
}

impl Client {
    /// Connects within `timeout`; every later read and write also times out after it.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Client, ClientError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Client {
                        stream,
                        framer: ResponseFramer::new(MAX_BODY),
                        used: "default".into(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// Sends `request` and reads its one answer.
    fn call(&mut self, request: &[u8]) -> Result<Response, ClientError> {
        self.stream.write_all(request)?;
        self.answer()
    }

    /// Reads the next answer.
    fn answer(&mut self) -> Result<Response, ClientError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.framer.pop() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e).into()),
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => self.framer.push(Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn unexpected(request: &[u8], r: &Response) -> ClientError {
        ClientError::Unexpected {
            command: String::from_utf8_lossy(request).trim_end().to_string(),
            answer: String::from_utf8_lossy(&r.line).trim_end().to_string(),
        }
    }

    /// `use <tube>`, skipped when it is already the tube in use.
    pub fn use_tube(&mut self, tube: &str) -> Result<(), ClientError> {
        if self.used == tube {
            return Ok(());
        }
        let req = format!("use {tube}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Using(t) if t == tube => {
                self.used = tube.to_string();
                Ok(())
            }
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `put`: the new job's id (`BURIED <id>` too: the job exists, buried for lack of memory).
    pub fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> Result<u64, ClientError> {
        let mut req = format!("put {pri} {delay} {ttr} {}\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"\r\n");
        let r = self.call(&req)?;
        match r.kind {
            ResponseKind::Inserted(id) | ResponseKind::BuriedId(id) => Ok(id),
            _ => Err(Client::unexpected(&req[..req.len() - body.len() - 2], &r)),
        }
    }

    /// `delete <id>`: true if deleted, false if beanstalkd has no such job (or another
    /// connection reserved it).
    pub fn delete(&mut self, id: u64) -> Result<bool, ClientError> {
        let req = format!("delete {id}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Word(w) if w == "DELETED" => Ok(true),
            ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(false),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `delete` for every id, pipelined (all requests, then all answers): for each, whether it
    /// was deleted.
    pub fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<bool>, ClientError> {
        let mut req = Vec::with_capacity(ids.len() * 24);
        for id in ids {
            req.extend_from_slice(format!("delete {id}\r\n").as_bytes());
        }
        self.stream.write_all(&req)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let r = self.answer()?;
            match &r.kind {
                ResponseKind::Word(w) if w == "DELETED" => out.push(true),
                ResponseKind::Word(w) if w == "NOT_FOUND" => out.push(false),
                _ => return Err(Client::unexpected(format!("delete {id}").as_bytes(), &r)),
            }
        }
        Ok(out)
    }

    /// `peek <id>`: the job's body, if it exists.
    pub fn peek(&mut self, id: u64) -> Result<Option<Vec<u8>>, ClientError> {
        let req = format!("peek {id}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Found { id: got } if *got == id => {
                Ok(Some(r.body[..r.body.len() - 2].to_vec()))
            }
            ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(None),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `stats-job <id>`, if the job exists.
    pub fn stats_job(&mut self, id: u64) -> Result<Option<JobStats>, ClientError> {
        let req = format!("stats-job {id}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Ok => {
                let yaml = yaml_fields(&r.body);
                let field = |k: &str| yaml.iter().find(|(key, _)| key == k).map(|(_, v)| v);
                let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
                let stats = (|| {
                    Some(JobStats {
                        tube: field("tube")?.clone(),
                        state: field("state")?.clone(),
                        pri: num("pri")? as u32,
                        ttr: num("ttr")? as u32,
                        time_left: num("time-left")?,
                    })
                })();
                stats.map(Some).ok_or_else(|| Client::unexpected(&req, &r))
            }
            ResponseKind::Word(w) if w == "NOT_FOUND" => Ok(None),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `watch <tube>`.
    pub fn watch(&mut self, tube: &str) -> Result<(), ClientError> {
        let req = format!("watch {tube}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Word(w) if w == "WATCHING" => Ok(()),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `ignore <tube>` (refused for the last tube watched).
    pub fn ignore(&mut self, tube: &str) -> Result<(), ClientError> {
        let req = format!("ignore {tube}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Word(w) if w == "WATCHING" => Ok(()),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `reserve-with-timeout <secs>`: a ready job's id and body, or `None` when none came in
    /// time. The connection's own read timeout must be longer than `secs`.
    pub fn reserve(&mut self, secs: u32) -> Result<Option<(u64, Vec<u8>)>, ClientError> {
        let req = format!("reserve-with-timeout {secs}\r\n").into_bytes();
        let r = self.call(&req)?;
        match &r.kind {
            ResponseKind::Reserved { id } => Ok(Some((*id, r.body[..r.body.len() - 2].to_vec()))),
            ResponseKind::Word(w) if w == "TIMED_OUT" => Ok(None),
            _ => Err(Client::unexpected(&req, &r)),
        }
    }

    /// `stats`: the server's fields (`id` tells one beanstalkd process from another).
    pub fn stats(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        let req = b"stats\r\n";
        let r = self.call(req)?;
        match &r.kind {
            ResponseKind::Ok => Ok(yaml_fields(&r.body)),
            _ => Err(Client::unexpected(req, &r)),
        }
    }
}

/// The `key: value` lines of beanstalkd's flat YAML.
fn yaml_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}
