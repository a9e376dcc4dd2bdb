//! The simulated peers: clients that send a scripted request and read the answer, a primary that
//! answers deterministically, and secondaries that answer, lie, stall or crawl.
//!
//! Wire format between client and backend: a 12-byte header (client id, response length, request
//! length, little-endian u32s; the request length's top bit set asks for the answer only after
//! the request's EOF, the next bit says another request follows), then the request body,
//! [`request_byte`]s. The backend answers `response length` bytes ([`response_byte`]s; at its
//! plan's pace); after the last request it shuts down its write side and keeps reading until
//! EOF. A pipelining client sends its requests back to back: bodies and answers number their
//! bytes on from the previous request's, so the whole connection reads as one pattern. Every backend records every byte it reads on every connection
//! ([`Shared::backend_reads`]) and every byte it writes ([`Shared::answered`]), so the oracles
//! check both directions against what the hosts did, not what the engine says.

use crate::scenario::{ClientPlan, SecondaryKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

pub const PROXY_PORT: u16 = 9000;
pub const BACKEND_PORT: u16 = 8000;

/// What a client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientResult {
    pub received: Vec<u8>,
    /// Virtual time at which the client finished (EOF or error), since the run started.
    pub done_at: Option<Duration>,
    pub error: Option<String>,
    pub vanished: bool,
    /// After each read: the bytes received so far, and the virtual time (since the run
    /// started) they had all arrived by. What the isolation oracle compares.
    pub arrivals: Vec<(u64, Duration)>,
    /// The client's own address, as the proxy's report names it.
    pub addr: Option<String>,
}

/// State the hosts share with the runner (turmoil runs every host on one thread).
#[derive(Default, Debug)]
pub struct Shared {
    /// What the primary wrote for each client id, in order.
    pub primary_sent: BTreeMap<u32, Vec<u8>>,
    pub clients: BTreeMap<u32, ClientResult>,
    /// Every connection a backend host accepted, in accept order: which host (0 the primary,
    /// `n` secondary `n`) and every byte it read there, in order.
    pub backend_reads: Vec<(usize, Vec<u8>)>,
    /// What each backend host (0 the primary) wrote for each client id, in order.
    pub answered: BTreeMap<(usize, u32), Vec<u8>>,
}

/// How a backend paces its answer: `bytes` per write, `gap` between writes (none: as fast as
/// the socket takes it, 8 KiB per write).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    pub bytes: u32,
    pub gap: Duration,
}

pub type SharedRef = Rc<RefCell<Shared>>;

/// The byte at `offset` of the response to client `id`: a pattern that makes misplaced,
/// duplicated or dropped bytes visible.
pub fn response_byte(seed: u64, id: u32, offset: u64) -> u8 {
    let x = seed
        .wrapping_add(u64::from(id).wrapping_mul(0x9e37_79b9))
        .wrapping_add(offset.wrapping_mul(0x2545_f491_4f6c_dd1d));
    (x >> 56) as u8 ^ (offset as u8)
}

/// The byte at `offset` of client `id`'s request body: a pattern of its own, so a backend that
/// hears another client's bytes, or its own out of order, cannot pass.
pub fn request_byte(seed: u64, id: u32, offset: u64) -> u8 {
    response_byte(
        seed ^ 0x5eed_0f2e_9e57,
        id.wrapping_add(0x8000_0000),
        offset,
    )
}

/// More than any plan asks for: a header naming a longer response is not a client's header.
const MAX_RESPONSE: u32 = 1 << 24;

/// Top bit of the header's request length: answer only after the request's EOF.
pub const AFTER_EOF: u32 = 1 << 31;

/// The next bit: another request follows this one on the connection (pipelining).
pub const MORE: u32 = 1 << 30;

/// The request length bits of a header's third word.
const LENGTH: u32 = MORE - 1;

/// Everything client `plan` sends when it does not vanish: for each request, the header, then
/// the body.
pub fn request_bytes(seed: u64, plan: &ClientPlan) -> Vec<u8> {
    let requests: Vec<(u32, u32)> = std::iter::once((plan.request_len, plan.response_len))
        .chain(plan.more.iter().copied())
        .collect();
    let body: usize = requests.iter().map(|&(q, _)| q as usize).sum();
    let mut req = Vec::with_capacity(12 * requests.len() + body);
    let mut offset = 0u64;
    for (k, &(request_len, response_len)) in requests.iter().enumerate() {
        let last = k + 1 == requests.len();
        let flags = match (last, plan.half_close) {
            (false, _) => MORE,
            (true, true) => AFTER_EOF,
            (true, false) => 0,
        };
        req.extend_from_slice(&plan.id.to_le_bytes());
        req.extend_from_slice(&response_len.to_le_bytes());
        req.extend_from_slice(&(request_len | flags).to_le_bytes());
        let end = offset + u64::from(request_len);
        req.extend((offset..end).map(|i| request_byte(seed, plan.id, i)));
        offset = end;
    }
    req
}

/// How long a client's write may stay blocked once the proxy ended what it sends back: past it
/// the proxy has closed the socket, which a real client learns from an RST but turmoil never
/// tells a writer waiting for send credits.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// How long a client keeps trying to connect to a proxy that refuses it.
const CONNECT_PATIENCE: Duration = Duration::from_secs(1);

/// One client: connect, write the request (maybe vanishing or half-closing), read to EOF.
pub async fn client(seed: u64, plan: ClientPlan, shared: SharedRef) -> turmoil::Result {
    tokio::time::sleep(plan.start_at).await;
    let mut result = ClientResult::default();
    let mut refused = Duration::ZERO;
    let stream = loop {
        match TcpStream::connect(("proxy", PROXY_PORT)).await {
            Ok(s) => break s,
            // The proxy may not listen yet in the first instant; once it has drained and
            // stopped listening, nobody will.
            Err(e) if refused >= CONNECT_PATIENCE => {
                result.error = Some(format!("connect: {e}"));
                result.done_at = Some(now());
                shared.borrow_mut().clients.insert(plan.id, result);
                return Ok(());
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                refused += Duration::from_millis(10);
            }
        }
    };
    result.addr = stream.local_addr().ok().map(|a| a.to_string());
    let (mut rd, mut wr) = crate::conn::split(stream);
    let request = request_bytes(seed, &plan);
    // Set once the proxy ended what it sends this client (EOF or error).
    let read_done = std::cell::Cell::new(false);
    let read_done_now = tokio::sync::Notify::new();
    // Resolves once a write has been blocked for `WRITER_GRACE` since it began or since the
    // read side ended, whichever is later.
    let stalled = || async {
        if !read_done.get() {
            read_done_now.notified().await;
        }
        tokio::time::sleep(WRITER_GRACE).await;
    };
    let writer = async {
        let limit = plan.vanish_after.map_or(request.len(), |v| 12 + v as usize);
        for part in request[..limit.min(request.len())].chunks(plan.chunk as usize) {
            tokio::select! {
                r = wr.write_all(part) => r?,
                _ = stalled() => return Err(std::io::ErrorKind::BrokenPipe.into()),
            }
            if !plan.gap.is_zero() {
                tokio::time::sleep(plan.gap).await;
            }
        }
        if plan.half_close && plan.vanish_after.is_none() {
            wr.shutdown().await?;
        }
        Ok::<_, std::io::Error>(wr)
    };
    if plan.vanish_after.is_some() {
        let _ = writer.await;
        result.vanished = true;
        result.done_at = Some(now());
        shared.borrow_mut().clients.insert(plan.id, result);
        return Ok(()); // both halves dropped: the client is gone
    }
    let reader = async {
        let mut buf = vec![0u8; 4096];
        let mut received = Vec::new();
        let mut arrivals = Vec::new();
        loop {
            if !plan.read_delay.is_zero() {
                tokio::time::sleep(plan.read_delay).await;
            }
            match rd.read(&mut buf).await {
                Ok(0) => {
                    read_done.set(true);
                    read_done_now.notify_one();
                    return (Ok(()), received, arrivals);
                }
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    arrivals.push((received.len() as u64, now()));
                }
                Err(e) => {
                    read_done.set(true);
                    read_done_now.notify_one();
                    return (Err(e), received, arrivals);
                }
            }
        }
    };
    let (written, (read, received, arrivals)) = tokio::join!(writer, reader);
    result.received = received;
    result.arrivals = arrivals;
    result.error = read.err().map(|e| e.to_string());
    result.done_at = Some(now());
    if let Ok(mut wr) = written {
        if !plan.half_close {
            let _ = wr.shutdown().await;
        }
    }
    shared.borrow_mut().clients.insert(plan.id, result);
    Ok(())
}

/// Virtual time since the simulation started (the same clock for every host).
fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// A backend host: `host` 0 (with `kind` None) is the primary, `n` secondary `n`. With
/// `early_close`, it answers each request after reading only part of it, then closes.
pub async fn backend(
    seed: u64,
    host: usize,
    kind: Option<SecondaryKind>,
    pace: Pace,
    early_close: bool,
    shared: SharedRef,
) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", BACKEND_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let _ = serve(seed, host, kind, pace, early_close, stream, shared).await;
        });
    }
}

/// Reads from one backend connection, recording every byte in [`Shared::backend_reads`].
struct Recorder {
    rd: crate::conn::ReadHalf,
    shared: SharedRef,
    slot: usize,
}

impl Recorder {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rd.read(buf).await?;
        self.shared.borrow_mut().backend_reads[self.slot]
            .1
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]).await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(())
    }

    async fn drain(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 8192];
        while self.read(&mut buf).await? > 0 {}
        Ok(())
    }
}

async fn serve(
    seed: u64,
    host: usize,
    kind: Option<SecondaryKind>,
    pace: Pace,
    early_close: bool,
    stream: TcpStream,
    shared: SharedRef,
) -> std::io::Result<()> {
    let (rd, mut wr) = crate::conn::split(stream);
    let slot = {
        let mut s = shared.borrow_mut();
        s.backend_reads.push((host, Vec::new()));
        s.backend_reads.len() - 1
    };
    let mut rd = Recorder {
        rd,
        shared: shared.clone(),
        slot,
    };
    match kind {
        Some(SecondaryKind::NeverReads) => {
            // Hold the connection open, never reading, until the peer goes away.
            std::future::pending::<()>().await;
            return Ok(());
        }
        Some(SecondaryKind::SlowReader) => {
            let mut buf = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if rd.read(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
        }
        _ => {}
    }
    let answerer = Answerer {
        seed,
        host,
        kind,
        pace,
        shared: shared.clone(),
    };
    // Where the next answer's bytes start in the connection's pattern.
    let mut base = 0u64;
    let mut first = true;
    loop {
        let mut header = [0u8; 12];
        rd.read_exact(&mut header).await?;
        if kind == Some(SecondaryKind::Resets) && first {
            // Wait for more of the request to arrive, then drop it unread: the peer sees a reset.
            let mut one = [0u8; 1];
            rd.read_exact(&mut one).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(());
        }
        first = false;
        let id = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let response_len = u32::from_le_bytes(header[4..8].try_into().unwrap());
        let word = u32::from_le_bytes(header[8..12].try_into().unwrap());
        let (after_eof, more) = (word & AFTER_EOF != 0, word & MORE != 0);
        let request_len = word & LENGTH;
        if response_len > MAX_RESPONSE {
            // Not a header any client sends (the request-bytes oracle says whose bytes these
            // are): read on, answer nothing.
            return rd.drain().await;
        }
        if early_close && !after_eof {
            // Read part of the request, answer all of it, and close: a reset if bytes of the
            // request are left unread.
            let cut = early_cut(seed, id, request_len);
            rd.read_exact(&mut vec![0u8; cut as usize]).await?;
            answerer.answer(&mut wr, id, base, response_len).await?;
            return Ok(());
        }
        if more {
            let mut body = vec![0u8; request_len as usize];
            let (a, b) = tokio::join!(
                answerer.answer(&mut wr, id, base, response_len),
                rd.read_exact(&mut body)
            );
            a.and(b)?;
            base += u64::from(response_len);
            continue;
        }
        if after_eof {
            rd.drain().await?;
        }
        let answer = async {
            answerer.answer(&mut wr, id, base, response_len).await?;
            answerer.finished(id);
            wr.shutdown().await
        };
        if after_eof {
            return answer.await;
        }
        let (a, d) = tokio::join!(answer, rd.drain());
        return a.and(d);
    }
}

/// How much of client `id`'s `request_len`-byte body a primary that closes early reads: none,
/// some or all of it, a third of the clients each.
fn early_cut(seed: u64, id: u32, request_len: u32) -> u32 {
    let x = u32::from(response_byte(seed ^ 0xea21, id, 1))
        | u32::from(response_byte(seed ^ 0xea21, id, 2)) << 8;
    match x % 3 {
        0 => 0,
        1 => (x >> 2) % (request_len + 1),
        _ => request_len,
    }
}

/// Writes a backend host's answers, recording each byte as it goes.
struct Answerer {
    seed: u64,
    host: usize,
    kind: Option<SecondaryKind>,
    pace: Pace,
    shared: SharedRef,
}

impl Answerer {
    /// Writes the `response_len` bytes of client `id`'s answer that start at `base` in the
    /// connection's pattern, at the host's pace; a lying secondary inverts the second half.
    async fn answer(
        &self,
        wr: &mut crate::conn::WriteHalf,
        id: u32,
        base: u64,
        response_len: u32,
    ) -> std::io::Result<()> {
        let step = if self.pace.bytes == 0 {
            8192
        } else {
            u64::from(self.pace.bytes)
        };
        let len = u64::from(response_len);
        let mut offset = 0u64;
        while offset < len {
            if offset > 0 && !self.pace.gap.is_zero() {
                tokio::time::sleep(self.pace.gap).await;
            }
            let n = (len - offset).min(step);
            let mut chunk: Vec<u8> = (base + offset..base + offset + n)
                .map(|o| response_byte(self.seed, id, o))
                .collect();
            if self.kind == Some(SecondaryKind::Garbage) && offset + n >= len / 2 {
                chunk.iter_mut().for_each(|b| *b = !*b);
            }
            {
                let mut s = self.shared.borrow_mut();
                if self.kind.is_none() {
                    s.primary_sent
                        .entry(id)
                        .or_default()
                        .extend_from_slice(&chunk);
                }
                s.answered
                    .entry((self.host, id))
                    .or_default()
                    .extend_from_slice(&chunk);
            }
            wr.write_all(&chunk).await?;
            offset += n;
        }
        Ok(())
    }

    /// Client `id` has its last answer: an empty one is recorded too.
    fn finished(&self, id: u32) {
        let mut s = self.shared.borrow_mut();
        if self.kind.is_none() {
            s.primary_sent.entry(id).or_default();
        }
        s.answered.entry((self.host, id)).or_default();
    }
}
