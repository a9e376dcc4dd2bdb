//! Backends as threads of the test process: a listener on 127.0.0.1:0 whose every connection runs
//! a handler on its own thread, plus the peers that misbehave (a closed port, a full accept
//! backlog).
//!
//! Handlers finish cleanly: after answering they shut down their write side and read until the
//! proxy's FIN, so the kernel never turns their close into a reset because of unread bytes.

use super::pattern;
use super::ReadRetrying;
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a backend socket op may block before the handler gives up.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Set when the backend is dropped; handlers that hold a connection forever watch it.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `d` in small steps; returns false if the backend stopped meanwhile.
    pub fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(20);
        let mut left = d;
        while !left.is_zero() {
            if self.stopped() {
                return false;
            }
            let s = step.min(left);
            std::thread::sleep(s);
            left -= s;
        }
        !self.stopped()
    }

    /// Holds until the backend is dropped.
    pub fn wait(&self) {
        while self.sleep(Duration::from_millis(50)) {}
    }
}

type Handler = dyn Fn(TcpStream, &Stop) + Send + Sync + 'static;

/// A listening backend. Stops accepting when dropped.
pub struct Backend {
    addr: SocketAddr,
    stop: Stop,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend on 127.0.0.1:0 running `handler` for each connection.
    pub fn spawn(handler: impl Fn(TcpStream, &Stop) + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Backend::on(listener, handler)
    }

    /// A backend on `listener` running `handler` for each connection.
    pub fn on(
        listener: TcpListener,
        handler: impl Fn(TcpStream, &Stop) + Send + Sync + 'static,
    ) -> Backend {
        let addr = listener.local_addr().unwrap();
        let stop = Stop::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (stop, accepted) = (stop.clone(), Arc::clone(&accepted));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.stopped() {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    conn.set_read_timeout(Some(BACKEND_TIMEOUT)).unwrap();
                    conn.set_write_timeout(Some(BACKEND_TIMEOUT)).unwrap();
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (handler, stop) = (Arc::clone(&handler), stop.clone());
                    std::thread::spawn(move || handler(conn, &stop));
                }
            })
        };
        Backend {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a fanout argument.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.stop();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- handlers ---------------------------------------------------------------------------

/// Ends a connection cleanly: FIN, then read (discarding) until the peer's FIN.
pub fn finish(mut s: TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = [0u8; 16 * 1024];
    while matches!(s.read_retrying(&mut buf), Ok(n) if n > 0) {}
}

/// Reads until EOF (or an error); returns what arrived.
pub fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut req = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read_retrying(&mut buf) {
            Ok(0) => return req,
            Ok(n) => req.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return req,
        }
    }
}

/// Echoes every byte back until EOF, then FIN.
pub fn echo(mut s: TcpStream, _: &Stop) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read_retrying(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// A handler that reads the request to EOF, then sends `response` and closes.
pub fn answer(response: Vec<u8>) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s, _| {
        read_request(&mut s);
        if s.write_all(&response).is_ok() {
            finish(s);
        }
    }
}

/// A handler that sends `len` bytes of the pattern stream at once, then closes.
pub fn stream(len: u64) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s, _| {
        if pattern::write(&mut s, len, |_| {}).is_ok() {
            finish(s);
        }
    }
}

/// A handler that reads the request to EOF, then sends `len` bytes of the pattern stream.
pub fn stream_after_eof(len: u64) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s, _| {
        read_request(&mut s);
        if pattern::write(&mut s, len, |_| {}).is_ok() {
            finish(s);
        }
    }
}

/// A handler that reads the upload to EOF and answers `"<count> <xxh3 hex>\n"`.
pub fn count_upload(mut s: TcpStream, _: &Stop) {
    if let Ok((n, digest)) = pattern::count_and_digest(&mut s) {
        if s.write_all(count_line(n, digest).as_bytes()).is_ok() {
            finish(s);
        }
    }
}

/// What [`count_upload`] answers for an upload of `n` bytes with XXH3-64 `digest`.
pub fn count_line(n: u64, digest: u64) -> String {
    format!("{n} {digest:016x}\n")
}

/// Accepts and never reads or writes, holding the connection until the backend is dropped.
pub fn never_read(s: TcpStream, stop: &Stop) {
    stop.wait();
    drop(s);
}

/// Reads one byte a second and never answers.
pub fn slow_reader(mut s: TcpStream, stop: &Stop) {
    let mut b = [0u8; 1];
    while stop.sleep(Duration::from_secs(1)) {
        if !matches!(s.read_retrying(&mut b), Ok(1)) {
            // EOF or error: keep holding without reading, as a stuck peer would.
            stop.wait();
            return;
        }
    }
}

/// Reads at least one byte of the request (so the proxy has connected and written), then resets
/// the connection (SO_LINGER 0 and close).
pub fn reset_after_first_byte(mut s: TcpStream, _: &Stop) {
    let mut b = [0u8; 1];
    let _ = s.read_retrying(&mut b);
    reset(s);
}

/// Closes `s` with a RST instead of a FIN.
pub fn reset(s: TcpStream) {
    let sock = Socket::from(s);
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(sock);
}

// ---- peers that are not there ---------------------------------------------------------------

/// An address on which nothing listens: connects are refused.
pub fn closed_port() -> SocketAddr {
    // Bound and never listening: connections to it are refused, and the port stays this test
    // process's for the whole run, so no other test's listener can be handed it meanwhile (which
    // a port bound and dropped again allowed: a "refused" secondary once answered).
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(s);
    addr
}

/// A listener whose accept queue is full and which never accepts: further SYNs are dropped, so a
/// connect to it hangs until the connector times out.
pub struct FullBacklog {
    _listener: Socket,
    _fillers: Vec<Socket>,
    addr: SocketAddr,
}

impl FullBacklog {
    pub fn new() -> FullBacklog {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        // Connect until two attempts in a row time out: from then on the queue is full and SYNs
        // are dropped (one timeout alone might be a slow machine).
        let mut timeouts = 0;
        for _ in 0..64 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            match s.connect_timeout(&addr.into(), Duration::from_millis(200)) {
                Ok(()) => timeouts = 0,
                Err(_) => timeouts += 1,
            }
            fillers.push(s);
            if timeouts == 2 {
                return FullBacklog {
                    _listener: listener,
                    _fillers: fillers,
                    addr,
                };
            }
        }
        panic!("64 connects to a backlog-1 listener that never accepts all succeeded");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes room in the queue and starts accepting with `handler`: a connect whose SYN was
    /// dropped succeeds on its next retransmission (about a second after the first SYN).
    pub fn start_accepting(
        self,
        handler: impl Fn(TcpStream, &Stop) + Send + Sync + 'static,
    ) -> Backend {
        let listener: TcpListener = self._listener.into();
        // The fillers were never meant to be served; the handler sees them as instant EOFs.
        drop(self._fillers);
        Backend::on(listener, handler)
    }
}

/// A one-shot signal from the test to a backend handler ("go on").
#[derive(Clone, Default)]
pub struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    /// Waits until opened; false if `within` passed first.
    pub fn wait(&self, within: Duration) -> bool {
        let (lock, cvar) = &*self.0;
        let guard = lock.lock().unwrap();
        let (guard, _) = cvar
            .wait_timeout_while(guard, within, |open| !*open)
            .unwrap();
        *guard
    }
}

/// A handler that sends the first `first` bytes of the pattern stream, waits for `gate`, then sends
/// the rest up to `len` and closes. Proves cut-through: the client can only see the first bytes
/// before the gate opens if the proxy forwarded them as they came.
pub fn gated_stream(
    first: u64,
    len: u64,
    gate: Gate,
) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s, _| {
        let mut buf = vec![0u8; first as usize];
        pattern::fill(0, &mut buf);
        if s.write_all(&buf).is_err() || !gate.wait(BACKEND_TIMEOUT) {
            return;
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut at = first;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            pattern::fill(at, &mut buf[..n]);
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
            at += n as u64;
        }
        finish(s);
    }
}
