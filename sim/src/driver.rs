//! The proxy host: the engine driven by turmoil sockets and turmoil's virtual clock.
//!
//! A thin translator, like the mio driver: each socket gets a reader task and a writer task that
//! turn socket activity into [`Event`]s on one channel; the main loop feeds them to the engine in
//! arrival order, carries out every command, and sleeps until `poll_timeout`. A reader holds one
//! read credit at a time and gets it back only after the engine saw its last read and did not
//! pause it, so at most one read lands after a pause, as with the mio loop.
//!
//! Any interceptor runs on it (relay and duplex are `Passthrough`). `Command::Effect` goes to the
//! run's [`Effects`] (the effect model, or a world's own executor), whose answer comes back as
//! `Event::EffectDone` on the same channel after the effect's virtual latency; with none, every
//! effect is answered `Unavailable` at once.
//!
//! Commands are carried out as the mio driver (`io/src/driver.rs`) carries them out; in
//! particular a `Shutdown` sends the FIN at once, whatever is still queued: bytes queued behind
//! it meet a broken pipe and the socket fails, never silently reordered ahead of the FIN. Every
//! event fed and command carried out also goes through the engine's contract checker
//! ([`fanout_engine::contract`]); what it finds, and any socket the driver still holds once the
//! engine is idle, are the observer's violations.

use crate::effects::Effects;
use crate::observe::Observer;
use crate::scenario::ProxyEvent;
use bytes::Bytes;
use fanout_engine::contract::{Checker, Pacing, Relay, Unpaced};
use fanout_engine::{
    Command, Config, ConnId, EffectError, Engine, Event, Failure, Instant, Interceptor,
    Passthrough, Peer, SockId,
};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use turmoil::net::{TcpListener, TcpStream};

/// The largest single read, in bytes. Small, because a turmoil socket buffers a fixed number of
/// segments (64) whatever their size: with 2 KiB writes a peer that stops reading pushes back
/// after about 128 KiB, as a real socket buffer would.
pub const READ_SIZE: usize = 2 * 1024;

/// What the proxy host runs.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub cfg: Config,
    pub port: u16,
    /// Backend host names and ports, by `BackendId`.
    pub backends: Vec<(String, u16)>,
    /// Records every engine input and output as a capture does (a failing seed's evidence).
    pub capture: Option<crate::evidence::RecordingRef>,
    /// What happens to the proxy itself, in time order (since the simulation started): a
    /// drain is fed as `Event::Drain`; a stall stops the loop, not its sockets' tasks.
    pub events: Vec<(Duration, ProxyEvent)>,
}

enum Msg {
    Event(Event),
    Connected(SockId, TcpStream),
}

enum WriteOp {
    Data(Bytes),
    Shutdown,
}

/// The driver's side of one socket.
struct Sock {
    writer: Option<mpsc::UnboundedSender<WriteOp>>,
    credit: Arc<Semaphore>,
    paused: bool,
    /// The reader is waiting for a credit it was not given because the socket was paused.
    owed: bool,
    /// Set when the socket is closed: the writer drops queued data but still sends a FIN it was
    /// asked for, then sends one of its own, as a kernel does after `close()`.
    closing: Rc<Cell<bool>>,
    /// Set when the engine asks for our FIN: it goes out at once, and data still queued behind
    /// it fails with a broken pipe (as `shutdown(Write)` in the mio driver).
    fin: Rc<Cell<bool>>,
    /// The reader (or the connect attempt): stopped at once on close.
    tasks: Vec<JoinHandle<()>>,
}

impl Sock {
    fn connecting(task: JoinHandle<()>) -> Self {
        Sock {
            writer: None,
            credit: Arc::new(Semaphore::new(0)),
            paused: false,
            owed: false,
            closing: Rc::default(),
            fin: Rc::default(),
            tasks: vec![task],
        }
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.closing.set(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn failure_of(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Failure::Refused,
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof => Failure::Reset,
        TimedOut => Failure::TimedOut,
        HostUnreachable | NetworkUnreachable | AddrNotAvailable => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// Starts the reader and writer tasks of an established socket.
fn attach(sock: SockId, stream: TcpStream, tx: &mpsc::UnboundedSender<Msg>) -> Sock {
    let (mut rd, mut wr) = crate::conn::split(stream);
    let credit = Arc::new(Semaphore::new(1));
    let reader = {
        let (tx, credit) = (tx.clone(), credit.clone());
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; READ_SIZE];
            loop {
                match credit.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                let event = match rd.read(&mut buf).await {
                    Ok(0) => Event::ReadClosed { sock },
                    Ok(n) => Event::Read {
                        sock,
                        data: Bytes::copy_from_slice(&buf[..n]),
                    },
                    Err(e) => Event::Failed {
                        sock,
                        reason: failure_of(&e),
                    },
                };
                let last = !matches!(event, Event::Read { .. });
                let _ = tx.send(Msg::Event(event));
                if last {
                    return;
                }
            }
        })
    };
    let (wtx, mut wrx) = mpsc::unbounded_channel::<WriteOp>();
    let closing: Rc<Cell<bool>> = Rc::default();
    let fin: Rc<Cell<bool>> = Rc::default();
    // The writer outlives a close until its FIN is out; the socket drops with it.
    {
        let (tx, closing, fin) = (tx.clone(), closing.clone(), fin.clone());
        tokio::task::spawn_local(async move {
            let mut shut = false;
            while let Some(op) = wrx.recv().await {
                let result = match op {
                    WriteOp::Data(_) if closing.get() => continue,
                    WriteOp::Data(_) if fin.get() => {
                        // Queued before a FIN that already went out: a broken pipe.
                        if !std::mem::replace(&mut shut, true) {
                            let _ = wr.shutdown().await;
                        }
                        Err(std::io::ErrorKind::BrokenPipe.into())
                    }
                    WriteOp::Data(data) => wr.write_all(&data).await.map(|_| data.len()),
                    WriteOp::Shutdown if shut => continue,
                    WriteOp::Shutdown => {
                        shut = true;
                        wr.shutdown().await.map(|_| 0)
                    }
                };
                let event = match result {
                    Ok(0) => continue,
                    Ok(n) => Event::Flushed {
                        sock,
                        bytes: n as u64,
                    },
                    Err(e) => Event::Failed {
                        sock,
                        reason: failure_of(&e),
                    },
                };
                let failed = matches!(event, Event::Failed { .. });
                let _ = tx.send(Msg::Event(event));
                if failed {
                    return;
                }
            }
            if !shut {
                let _ = wr.shutdown().await;
            }
        });
    }
    Sock {
        writer: Some(wtx),
        credit,
        paused: false,
        owed: false,
        closing,
        fin,
        tasks: vec![reader],
    }
}

/// Runs the proxy with `hooks` until the simulation ends, carrying out effects with `effects`.
/// Every input and output goes through `obs`.
pub async fn run_proxy<I: Interceptor>(
    spec: ProxySpec,
    hooks: I,
    effects: Option<Rc<dyn Effects>>,
    obs: Rc<RefCell<Observer>>,
) -> turmoil::Result {
    // Dropped once the engine has drained: the process would exit, and clients still waiting
    // to be accepted are refused.
    let mut listener = Some(TcpListener::bind(("0.0.0.0", spec.port)).await?);
    let mut proxy_events = spec.events.iter().copied().peekable();
    let mut engine = Engine::with_interceptor(spec.cfg.clone(), hooks)?;
    #[cfg(feature = "sim-mutants")]
    engine.set_mutant(crate::mutants::current());
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let epoch = tokio::time::Instant::now();
    let mut socks: BTreeMap<SockId, Sock> = BTreeMap::new();
    let mut next_conn = 1u64;
    let mut accepting = true;
    let mut checker = Checker::new(&spec.cfg);
    // The water marks need to know which reader each backlog paces: relay and duplex are known;
    // another interceptor's routes are its own, so only pause pairing is checked for it.
    let relay = Relay::new(&spec.cfg, READ_SIZE as u64);
    let pacing: &dyn Pacing = if std::any::type_name::<I>() == std::any::type_name::<Passthrough>()
    {
        &relay
    } else {
        &Unpaced
    };
    loop {
        let deadline = engine.poll_timeout();
        let wake = deadline.map(|t| epoch + Duration::from_nanos(t.as_nanos()));
        let next_event = proxy_events.peek().map(|(at, _)| epoch + *at);
        let msg = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(next_event.unwrap_or(epoch)), if next_event.is_some() => {
                match proxy_events.next().map(|(_, e)| e) {
                    Some(ProxyEvent::Stall(length)) => {
                        // Nothing is handled meanwhile: events queue, and the engine's clock
                        // leaps by `length` before the next one.
                        tokio::time::sleep(length).await;
                        continue;
                    }
                    _ => Msg::Event(Event::Drain),
                }
            }
            Some(msg) = rx.recv() => msg,
            accepted = accept(listener.as_ref()), if accepting && listener.is_some() => {
                let (stream, addr) = accepted?;
                let conn = ConnId(next_conn);
                next_conn += 1;
                socks.insert(SockId::client(conn), attach(SockId::client(conn), stream, &tx));
                Msg::Event(Event::Accepted { conn, client: addr.to_string() })
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(epoch)), if wake.is_some() => {
                Msg::Event(Event::Timeout)
            }
        };
        let event = match msg {
            Msg::Event(event) => {
                if let Event::Failed { sock, .. } | Event::ConnectFailed { sock, .. } = &event {
                    // The driver drops a failed socket before telling the engine.
                    if socks.remove(sock).is_none() {
                        continue;
                    }
                } else if let Some(sock) = sock_of(&event) {
                    if !socks.contains_key(&sock) {
                        continue; // a late report from a socket already closed
                    }
                }
                event
            }
            Msg::Connected(sock, stream) => match socks.get(&sock) {
                Some(s) if s.writer.is_none() => {
                    socks.insert(sock, attach(sock, stream, &tx));
                    Event::Connected { sock }
                }
                _ => continue,
            },
        };
        let now = Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
        let read_on = match &event {
            Event::Read { sock, .. } => Some(*sock),
            _ => None,
        };
        obs.borrow_mut().input(now, &event);
        if let Err(v) = checker.event(now, &event) {
            obs.borrow_mut().violation(v.to_string());
        }
        if let Some(c) = &spec.capture {
            c.borrow_mut().input(now, &event);
        }
        engine.handle(now, event);
        while let Some(cmd) = engine.poll_command() {
            obs.borrow_mut().output(&cmd, |s| socks.contains_key(&s));
            if let Err(v) = checker.command(&cmd) {
                obs.borrow_mut().violation(v.to_string());
            }
            if let Some(c) = &spec.capture {
                c.borrow_mut().output(&cmd);
            }
            match cmd {
                Command::Connect { sock, upstream } => {
                    if sock.peer == Peer::Client {
                        continue;
                    }
                    let (host, port) = spec.backends[upstream.0 as usize].clone();
                    let tx = tx.clone();
                    let task = tokio::task::spawn_local(async move {
                        let msg = match TcpStream::connect((host.as_str(), port)).await {
                            Ok(stream) => Msg::Connected(sock, stream),
                            Err(e) => Msg::Event(Event::ConnectFailed {
                                sock,
                                reason: failure_of(&e),
                            }),
                        };
                        let _ = tx.send(msg);
                    });
                    socks.insert(sock, Sock::connecting(task));
                }
                Command::Write { sock, data } => {
                    if let Some(w) = socks.get(&sock).and_then(|s| s.writer.as_ref()) {
                        let _ = w.send(WriteOp::Data(data));
                    }
                }
                Command::Shutdown { sock } => {
                    if let Some(s) = socks.get(&sock) {
                        shutdown(s);
                    }
                }
                Command::Close { sock } => {
                    socks.remove(&sock);
                }
                Command::PauseRead { sock } => {
                    if let Some(s) = socks.get_mut(&sock) {
                        s.paused = true;
                    }
                }
                Command::ResumeRead { sock } => {
                    if let Some(s) = socks.get_mut(&sock) {
                        s.paused = false;
                        if std::mem::take(&mut s.owed) {
                            s.credit.add_permits(1);
                        }
                    }
                }
                Command::PauseAccept => accepting = false,
                Command::ResumeAccept => accepting = true,
                Command::Report(report) => obs.borrow_mut().report(*report),
                Command::Effect { conn, id, request } => {
                    let tx = tx.clone();
                    match &effects {
                        Some(model) => {
                            let done = model.execute(epoch.elapsed(), conn, id, *request);
                            tokio::task::spawn_local(async move {
                                let _ = tx.send(Msg::Event(done.await));
                            });
                        }
                        None => {
                            let result = Err(EffectError::Unavailable("no executor".into()));
                            let _ = tx.send(Msg::Event(Event::EffectDone { id, result }));
                        }
                    }
                }
                Command::Drained => listener = None,
            }
        }
        // The reader whose bytes were just handled may read again, unless it was paused.
        if let Some(s) = read_on.and_then(|sock| socks.get_mut(&sock)) {
            if s.paused {
                s.owed = true;
            } else {
                s.credit.add_permits(1);
            }
        }
        obs.borrow_mut().after_step(&engine);
        if let Err(v) = checker.settled(&engine, pacing) {
            obs.borrow_mut().violation(v.to_string());
        }
        if engine.is_idle() {
            quiescent(&checker, &socks, &mut obs.borrow_mut());
        }
    }
}

/// The next client `listener` accepts (never, without one).
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The engine is idle: the contract's promises about a whole run hold so far, and the driver
/// holds no socket of its own (every one was closed or failed).
fn quiescent(checker: &Checker, socks: &BTreeMap<SockId, Sock>, obs: &mut Observer) {
    if let Err(v) = checker.finish() {
        obs.violation(format!("quiescence: {v}"));
    }
    if !socks.is_empty() {
        let held: Vec<String> = socks.keys().map(|s| s.to_string()).collect();
        obs.violation(format!(
            "quiescence: the engine is idle but the driver still holds {}",
            held.join(", ")
        ));
    }
}

/// `Command::Shutdown`, as the mio driver carries it out (`shutdown(Write)` at once): the FIN
/// goes out now, and whatever is still queued behind it fails with a broken pipe.
fn shutdown(s: &Sock) {
    if let Some(w) = &s.writer {
        s.fin.set(true);
        let _ = w.send(WriteOp::Shutdown);
    }
}

fn sock_of(event: &Event) -> Option<SockId> {
    match event {
        Event::Connected { sock }
        | Event::ConnectFailed { sock, .. }
        | Event::Read { sock, .. }
        | Event::ReadClosed { sock }
        | Event::Flushed { sock, .. }
        | Event::Spliced { sock, .. }
        | Event::Failed { sock, .. } => Some(*sock),
        Event::Accepted { .. } | Event::Timeout | Event::Drain | Event::EffectDone { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The mio driver's semantics: a FIN asked for while bytes are still queued goes out at once;
    /// the queued bytes meet a broken pipe and the socket fails. The peer sees the FIN and never
    /// those bytes, so an engine that sends a FIN too early loses data here as it would in
    /// production, instead of having its FIN quietly reordered behind the data.
    #[test]
    fn a_shutdown_over_queued_bytes_sends_the_fin_at_once_and_fails_the_socket() {
        let mut sim = turmoil::Builder::new().build();
        let peer_got: Rc<Cell<Option<usize>>> = Rc::default();
        let got = peer_got.clone();
        sim.host("peer", move || {
            let got = got.clone();
            async move {
                let listener = TcpListener::bind(("0.0.0.0", 9)).await?;
                let (mut stream, _) = listener.accept().await?;
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).await?;
                got.set(Some(buf.len()));
                Ok(())
            }
        });
        let seen = peer_got.clone();
        sim.client("proxy", async move {
            let stream = TcpStream::connect(("peer", 9)).await?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let sock = SockId::client(ConnId(1));
            let s = attach(sock, stream, &tx);
            let w = s.writer.as_ref().expect("attached");
            let _ = w.send(WriteOp::Data(Bytes::from(vec![7u8; 1000])));
            shutdown(&s);
            loop {
                match rx.recv().await {
                    Some(Msg::Event(Event::ReadClosed { .. })) => continue,
                    Some(Msg::Event(e)) => {
                        assert_eq!(
                            e,
                            Event::Failed {
                                sock,
                                reason: Failure::Reset
                            },
                            "the bytes queued behind the FIN must fail"
                        );
                        break;
                    }
                    _ => panic!("the socket's tasks ended without a word"),
                }
            }
            // The peer reads to its EOF (turmoil's default run length bounds the wait).
            while seen.get().is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            drop(s);
            Ok(())
        });
        sim.run().expect("the simulation runs");
        assert_eq!(
            peer_got.get(),
            Some(0),
            "the peer saw the FIN, not the bytes"
        );
    }
}
