//! The simulated peers: clients that send a scripted request and read the answer, a primary that
//! answers deterministically, and secondaries that answer, lie, stall or crawl.
//!
//! Wire format between client and backend: a 12-byte header (client id, response length, request
//! length, little-endian u32s), then the request body. The backend answers `response length`
//! bytes, then shuts down its write side, and keeps reading until EOF.

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
}

/// State the hosts share with the runner (turmoil runs every host on one thread).
#[derive(Default, Debug)]
pub struct Shared {
    /// What the primary wrote for each client id, in order.
    pub primary_sent: BTreeMap<u32, Vec<u8>>,
    pub clients: BTreeMap<u32, ClientResult>,
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

fn request_bytes(plan: &ClientPlan, response_len: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(12 + plan.request_len as usize);
    req.extend_from_slice(&plan.id.to_le_bytes());
    req.extend_from_slice(&response_len.to_le_bytes());
    req.extend_from_slice(&plan.request_len.to_le_bytes());
    req.extend((0..plan.request_len).map(|i| (i % 251) as u8));
    req
}

/// One client: connect, write the request (maybe vanishing or half-closing), read to EOF.
pub async fn client(plan: ClientPlan, shared: SharedRef) -> turmoil::Result {
    tokio::time::sleep(plan.start_at).await;
    let mut result = ClientResult::default();
    let stream = loop {
        match TcpStream::connect(("proxy", PROXY_PORT)).await {
            Ok(s) => break s,
            // The proxy may not listen yet in the first instant.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let (mut rd, mut wr) = crate::conn::split(stream);
    let request = request_bytes(&plan, plan.response_len);
    let writer = async {
        let limit = plan.vanish_after.map_or(request.len(), |v| 12 + v as usize);
        for part in request[..limit.min(request.len())].chunks(plan.chunk as usize) {
            wr.write_all(part).await?;
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
        loop {
            if !plan.read_delay.is_zero() {
                tokio::time::sleep(plan.read_delay).await;
            }
            match rd.read(&mut buf).await {
                Ok(0) => return Ok(received),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Err((e, received)),
            }
        }
    };
    let (written, read) = tokio::join!(writer, reader);
    match read {
        Ok(received) => result.received = received,
        Err((e, received)) => {
            result.received = received;
            result.error = Some(e.to_string());
        }
    }
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

/// A backend host: `kind` None is the primary.
pub async fn backend(seed: u64, kind: Option<SecondaryKind>, shared: SharedRef) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", BACKEND_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let _ = serve(seed, kind, stream, shared).await;
        });
    }
}

async fn serve(
    seed: u64,
    kind: Option<SecondaryKind>,
    stream: TcpStream,
    shared: SharedRef,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = crate::conn::split(stream);
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
    let mut header = [0u8; 12];
    rd.read_exact(&mut header).await?;
    if kind == Some(SecondaryKind::Resets) {
        // Wait for more of the request to arrive, then drop it unread: the peer sees a reset.
        let mut one = [0u8; 1];
        rd.read_exact(&mut one).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        return Ok(());
    }
    let id = u32::from_le_bytes(header[0..4].try_into().unwrap());
    let response_len = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let drain = async {
        let mut buf = vec![0u8; 8192];
        while rd.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let answer = async {
        let mut offset = 0u64;
        while offset < u64::from(response_len) {
            let n = (u64::from(response_len) - offset).min(8192);
            let mut chunk: Vec<u8> = (offset..offset + n)
                .map(|o| response_byte(seed, id, o))
                .collect();
            if kind == Some(SecondaryKind::Garbage) && offset + n >= u64::from(response_len) / 2 {
                chunk.iter_mut().for_each(|b| *b = !*b);
            }
            if kind.is_none() {
                shared
                    .borrow_mut()
                    .primary_sent
                    .entry(id)
                    .or_default()
                    .extend_from_slice(&chunk);
            }
            wr.write_all(&chunk).await?;
            offset += n;
        }
        if kind.is_none() {
            shared.borrow_mut().primary_sent.entry(id).or_default();
        }
        wr.shutdown().await
    };
    let (a, d) = tokio::join!(answer, drain);
    a.and(d)
}
