//! The peers of the intercept scenarios: line clients that pipeline their lines through the line
//! rewriter, and an echo service as primary and mirror.
//!
//! A line client writes all its lines without waiting for answers, then either half-closes at
//! once or (`half_close` false) waits until it heard one answer line per line sent and then
//! half-closes; it reads to EOF, reading nothing for `stall` first and pausing `read_delay`
//! between reads. The echo service writes back every byte it reads, in order, and half-closes
//! after the peer's EOF; while its writes are blocked it reads nothing, as a real one would.

use crate::hosts::{ClientResult, SharedRef, BACKEND_PORT, PROXY_PORT};
use crate::scenario::ClientPlan;
use std::cell::Cell;
use std::time::Duration;
use tokio::sync::Notify;
use turmoil::net::{TcpListener, TcpStream};

/// One line client (see the module doc).
pub async fn client(plan: ClientPlan, shared: SharedRef) -> turmoil::Result {
    tokio::time::sleep(plan.start_at).await;
    let stream = loop {
        match TcpStream::connect(("proxy", PROXY_PORT)).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let addr = stream.local_addr().ok().map(|a| a.to_string());
    let (mut rd, mut wr) = crate::conn::split(stream);
    let request = plan.lines.concat();
    let limit = plan.vanish_after.map_or(request.len(), |v| v as usize);
    let mut result = ClientResult {
        addr,
        ..ClientResult::default()
    };

    // What the reader tells the writer: answer lines heard so far, and whether it hit the end.
    let heard = Cell::new(0usize);
    let ended = Cell::new(false);
    let progress = Notify::new();
    let writer = async {
        for part in request[..limit.min(request.len())].chunks(plan.chunk as usize) {
            wr.write_all(part).await?;
            if !plan.gap.is_zero() {
                tokio::time::sleep(plan.gap).await;
            }
        }
        if plan.vanish_after.is_some() {
            return Ok(());
        }
        if !plan.half_close {
            while heard.get() < plan.lines.len() && !ended.get() {
                progress.notified().await;
            }
        }
        wr.shutdown().await
    };
    if plan.vanish_after.is_some() {
        let _ = writer.await;
        result.vanished = true;
        result.done_at = Some(now());
        shared.borrow_mut().clients.insert(plan.id, result);
        return Ok(()); // both halves dropped: the client is gone
    }
    let reader = async {
        tokio::time::sleep(plan.stall).await;
        let mut buf = vec![0u8; 4096];
        let mut received = Vec::new();
        let mut arrivals = Vec::new();
        let outcome = loop {
            if !plan.read_delay.is_zero() {
                tokio::time::sleep(plan.read_delay).await;
            }
            match rd.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    arrivals.push((received.len() as u64, now()));
                    heard.set(heard.get() + buf[..n].iter().filter(|&&c| c == b'\n').count());
                    progress.notify_one();
                }
                Err(e) => break Err(e),
            }
        };
        ended.set(true);
        progress.notify_one();
        (received, arrivals, outcome)
    };
    let (_, (received, arrivals, outcome)) = tokio::join!(writer, reader);
    result.received = received;
    result.arrivals = arrivals;
    result.error = outcome.err().map(|e| e.to_string());
    result.done_at = Some(now());
    shared.borrow_mut().clients.insert(plan.id, result);
    Ok(())
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// The echo service (primary, or mirror).
pub async fn echo_backend() -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", BACKEND_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(async move {
            let _ = echo(stream).await;
        });
    }
}

async fn echo(stream: TcpStream) -> std::io::Result<()> {
    let (mut rd, mut wr) = crate::conn::split(stream);
    let mut buf = vec![0u8; 8192];
    loop {
        match rd.read(&mut buf).await? {
            0 => return wr.shutdown().await,
            n => wr.write_all(&buf[..n]).await?,
        }
    }
}
