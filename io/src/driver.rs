//! One event loop: a mio `Poll`, an [`Engine`], and the sockets the engine names.
//!
//! The loop translates and nothing more:
//!
//! - readiness and accepted connections become engine [`Event`]s;
//! - after every `Engine::handle` the driver drains `poll_command` to `None` and carries out
//!   each [`Command`] in order. Writes are queued during the drain and flushed right after it,
//!   so several `Write`s to one socket become one `writev`; events those flushes produce
//!   (`Flushed`, `Failed`, an immediate `ConnectFailed`) are fed in afterwards, never in the
//!   middle of a drain;
//! - the poll timeout is the engine's next deadline; when it passes, `Event::Timeout`;
//! - `Command::Effect` goes to the effect pool's [`Lane`] (never run here); a refusal (queue
//!   full, no executor) is answered at once as a pending `Event::EffectDone`, and finished
//!   effects come back through the lane's waker and enter the engine like every other event.
//!
//! Sockets are registered once, readable and writable, edge-triggered, and never re-registered:
//! pausing a reader is a flag, closing is dropping the descriptor. A socket is read until it
//! would block, a read comes back short (the kernel buffer is drained), the engine pauses it,
//! or it has been read [`READS_PER_TURN`] times in this turn; then it goes to the back of the
//! ready list so one busy socket cannot starve the rest.

use crate::addr::Backend;
use crate::capture::Recorder;
use crate::clock::Clock;
use crate::effects::{Lane, Pool};
use crate::report::ReportSink;
use crate::slots::Lease;
use crate::sockets::{Sock, Sockets};
use crate::splice::{Filled, Pipe, SpliceMode, AUTO_AFTER};
use crate::stream::{connect_failure, io_failure, is_out_of_resources, Stream};
use crate::writeq::Stop;
use bytes::{Bytes, BytesMut};
use fanout_engine::{
    Command, ConnId, EffectError, EffectId, EffectRequest, Engine, Event, Failure, Interceptor,
    Peer, Role, SockId, UpstreamId,
};
use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const LISTENER: Token = Token(usize::MAX);
const DRAIN: Token = Token(usize::MAX - 1);
const EFFECTS: Token = Token(usize::MAX - 2);
const SLOTS: Token = Token(usize::MAX - 3);

/// Reads of one socket before it yields to others.
const READS_PER_TURN: usize = 16;
/// Accepts in a row before other sockets get a turn.
const ACCEPTS_PER_TURN: usize = 64;
/// The read buffer block; reads split `Bytes` off it until less than [`MIN_READ`] is left.
const READ_BLOCK: usize = 64 * 1024;
const MIN_READ: usize = 4 * 1024;
/// Accept back-off after running out of descriptors or memory.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Everything one event loop owns. `I` is the engine's interceptor; the driver never calls it.
pub(crate) struct Driver<I: Interceptor> {
    poll: Poll,
    engine: Engine<I>,
    clock: Clock,
    listener: Option<TcpListener>,
    drain_rx: UnixStream,
    /// The upstream table: `Command::Connect`'s `UpstreamId` indexes it.
    backends: Arc<[Backend]>,
    /// `--bind-source`: TCP connects to backends bind to this address first.
    bind_source: Option<IpAddr>,
    /// `--splice` (`Never` while capturing: a capture must see every byte).
    splice: SpliceMode,
    /// The effect pool, when the program has an executor.
    effects: Option<Lane>,
    socks: Sockets,
    /// Read buffer; each read's bytes are split off it as `Bytes`.
    buf: BytesMut,
    /// Sockets (and the listener) with work left after their turn.
    ready: VecDeque<Token>,
    listener_queued: bool,
    /// Sockets with queued writes to flush after the current command drain.
    dirty: Vec<Token>,
    /// Events produced while carrying out commands, fed to the engine after the drain.
    pending: VecDeque<Event>,
    accept: AcceptGate,
    /// This loop's part of the process-wide `--max-connections`.
    slots: Lease,
    next_conn: u64,
    reports: ReportSink,
    /// `--capture`: sees every event handed to the engine and every command it emits.
    recorder: Option<Recorder>,
    draining: bool,
    /// A second drain request ended the drain before the engine was drained.
    cut_short: bool,
    done: bool,
}

/// What a splice attempt left for the read loop to do.
enum Spliced {
    /// Bytes went through; try again.
    More,
    /// Nothing more now (would block, EOF, waiting on the destination, or failed).
    Stop,
    /// No splice possible here: read into memory instead.
    Copy,
}

/// How a loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every session finished, or the drain deadline closed what was left.
    Drained,
    /// A second drain request closed the sessions still open.
    CutShort,
}

/// Whether the driver may accept now.
#[derive(Debug, Default)]
struct AcceptGate {
    /// `PauseAccept` from the engine.
    paused: bool,
    /// Out of descriptors or memory: no accepting until then.
    backoff_until: Option<std::time::Instant>,
    /// The current back-off step (zero when not backing off).
    backoff: Duration,
    /// When the last back-off warning was logged.
    warned: Option<std::time::Instant>,
    /// When "max connections reached" was last logged.
    full_warned: Option<std::time::Instant>,
}

impl<I: Interceptor> std::fmt::Debug for Driver<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sessions", &self.engine.session_count())
            .field("sockets", &self.socks.len())
            .field("draining", &self.draining)
            .finish()
    }
}

/// What a loop connects to: the upstream table and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    pub(crate) table: Arc<[Backend]>,
    pub(crate) bind_source: Option<IpAddr>,
    /// How bytes between a client and its backend may move (`--splice`).
    pub(crate) splice: SpliceMode,
}

/// What starts work on a loop: its listener, its share of the connection limit, and the reading
/// end of its drain trigger.
#[derive(Debug)]
pub(crate) struct Intake {
    pub(crate) listener: TcpListener,
    pub(crate) slots: Lease,
    pub(crate) drain: UnixStream,
}

impl<I: Interceptor> Driver<I> {
    pub(crate) fn new(
        engine: Engine<I>,
        clock: Clock,
        intake: Intake,
        upstreams: Upstreams,
        effects: Option<&Pool>,
        reports: ReportSink,
        recorder: Option<Recorder>,
    ) -> io::Result<Self> {
        let Intake {
            mut listener,
            mut slots,
            drain: mut drain_rx,
        } = intake;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut drain_rx, DRAIN, Interest::READABLE)?;
        poll.registry()
            .register(slots.source(), SLOTS, Interest::READABLE)?;
        let effects = match effects {
            Some(pool) => Some(pool.lane(poll.registry(), EFFECTS)?),
            None => None,
        };
        Ok(Driver {
            poll,
            engine,
            clock,
            listener: Some(listener),
            drain_rx,
            backends: upstreams.table,
            bind_source: upstreams.bind_source,
            splice: if recorder.is_some() {
                SpliceMode::Never
            } else {
                upstreams.splice
            },
            effects,
            socks: Sockets::default(),
            buf: BytesMut::with_capacity(READ_BLOCK),
            ready: VecDeque::new(),
            listener_queued: false,
            dirty: Vec::new(),
            pending: VecDeque::new(),
            accept: AcceptGate::default(),
            slots,
            next_conn: 1,
            reports,
            recorder,
            draining: false,
            cut_short: false,
            done: false,
        })
    }

    /// Runs until the engine says `Drained` after a drain request.
    pub(crate) fn run(mut self) -> io::Result<Ended> {
        let mut events = Events::with_capacity(1024);
        while !self.done {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_ready(),
                    DRAIN => self.drain_requested(),
                    EFFECTS => self.effects_done(),
                    SLOTS => {
                        self.slots.woken();
                        self.queue_listener();
                    }
                    token => self.socket_ready(token, ev),
                }
            }
            self.run_ready();
            self.expire();
            self.slots.hold(self.engine.open_clients());
        }
        if let Some(r) = &mut self.recorder {
            r.finish();
        }
        Ok(if self.cut_short {
            Ended::CutShort
        } else {
            Ended::Drained
        })
    }

    /// How long the next poll may block: not at all with work on the ready list, otherwise
    /// until the engine's next deadline or the end of an accept back-off.
    fn timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let engine = self.engine.poll_timeout().map(|t| self.clock.to_std(t));
        let next = match (engine, self.accept.backoff_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }

    // ---- feeding the engine -------------------------------------------------------------

    /// Hands one event to the engine and carries out everything that follows.
    fn dispatch(&mut self, event: Event) {
        self.handle(event);
        self.pump();
    }

    /// The one place events enter the engine, so a capture sees each of them with the very
    /// instant the engine was given.
    fn handle(&mut self, event: Event) {
        let now = self.clock.now();
        if let Some(r) = &mut self.recorder {
            r.input(now, &event);
        }
        self.engine.handle(now, event);
    }

    /// Drains commands, flushes the writes they queued, and feeds back the events that
    /// produced, until nothing is left.
    fn pump(&mut self) {
        loop {
            while let Some(cmd) = self.engine.poll_command() {
                if let Some(r) = &mut self.recorder {
                    r.output(&cmd);
                }
                self.execute(cmd);
            }
            self.flush_dirty();
            match self.pending.pop_front() {
                Some(event) => self.handle(event),
                None => break,
            }
        }
    }

    fn execute(&mut self, cmd: Command) {
        if tracing::enabled!(tracing::Level::TRACE) && !matches!(cmd, Command::Write { .. }) {
            tracing::trace!("command {cmd:?}");
        }
        match cmd {
            Command::Connect { sock, upstream } => self.connect(sock, upstream),
            Command::Write { sock, data } => {
                // A secondary that takes no bytes now may hold them for long. Reads are slices
                // of shared 64 KiB blocks, and one slice keeps its whole block alive: it gets a
                // copy of its own, so what it holds is what the engine counts against
                // `--secondary-memory`. (Never on the primary path, and only while blocked.)
                let hold = self.socks.by_id(sock).is_some_and(|(_, s)| s.write_blocked)
                    && self.engine.role(sock) == Some(Role::Secondary);
                let data = if hold {
                    Bytes::copy_from_slice(&data)
                } else {
                    data
                };
                if let Some((token, s)) = self.socks.by_id(sock) {
                    s.queue.push(data);
                    if !s.dirty {
                        s.dirty = true;
                        self.dirty.push(token);
                    }
                }
            }
            Command::Shutdown { sock } => {
                // After this drain's writes (the engine shuts down only a socket with nothing
                // unflushed, so there are none before it), and not at all if a `Close` in the
                // same drain drops the socket: closing sends the FIN then, one syscall fewer.
                if let Some((token, s)) = self.socks.by_id(sock) {
                    s.shut_pending = true;
                    if !s.dirty {
                        s.dirty = true;
                        self.dirty.push(token);
                    }
                }
            }
            Command::Close { sock } => {
                if let Some(token) = self.socks.token(sock) {
                    self.socks.remove(token);
                }
            }
            Command::PauseRead { sock } => {
                if let Some((_, s)) = self.socks.by_id(sock) {
                    s.read_paused = true;
                }
            }
            Command::ResumeRead { sock } => {
                if let Some((token, s)) = self.socks.by_id(sock) {
                    s.read_paused = false;
                    if s.wants_read() && !s.queued {
                        s.queued = true;
                        self.ready.push_back(token);
                    }
                }
            }
            Command::PauseAccept => {
                self.accept.paused = true;
                self.warn_full();
            }
            Command::ResumeAccept => {
                self.accept.paused = false;
                self.queue_listener();
            }
            Command::Report(r) => self.reports.emit(&r),
            Command::Drained => self.done = true,
            Command::Effect { id, request, .. } => self.effect(id, *request),
        }
    }

    // ---- effects ------------------------------------------------------------------------

    /// Hands an effect to the pool; a refusal is the engine's answer, fed after this drain, as
    /// is the result of an effect the executor runs inline.
    fn effect(&mut self, id: EffectId, request: EffectRequest) {
        if let Some(result) = self.effects.as_ref().and_then(|l| l.inline(&request)) {
            self.pending.push_back(Event::EffectDone { id, result });
            return;
        }
        let refused = match &self.effects {
            Some(lane) => lane.submit(id, request).err(),
            None => Some(EffectError::Unavailable("no executor".into())),
        };
        if let Some(e) = refused {
            tracing::debug!("effect {}: {e}", id.0);
            self.pending
                .push_back(Event::EffectDone { id, result: Err(e) });
        }
    }

    /// The lane's waker fired: feed every finished effect to the engine. A result that lands
    /// after this collects wakes the loop again (workers wake after sending).
    fn effects_done(&mut self) {
        let Some(lane) = &self.effects else { return };
        // Collected first: dispatching needs `&mut self`.
        let done: Vec<_> = lane.completed().collect();
        for (id, result) in done {
            self.dispatch(Event::EffectDone { id, result });
        }
    }

    // ---- sockets ------------------------------------------------------------------------

    fn connect(&mut self, sock: SockId, upstream: UpstreamId) {
        if sock.peer == Peer::Client {
            return;
        }
        let Some(backend) = self.backends.get(usize::from(upstream.0)) else {
            tracing::error!("{sock}: the engine asked for a backend that is not configured");
            self.pending.push_back(Event::ConnectFailed {
                sock,
                reason: fanout_engine::Failure::Other,
            });
            return;
        };
        let stream = match Stream::connect(&backend.target, self.bind_source) {
            Ok(s) => s,
            Err(e) => {
                let reason = connect_failure(&e);
                if reason == Failure::NoDescriptors {
                    // A client accepted now could not get a backend either: accepting it would
                    // only spend a descriptor to fail it. Pause accepts as when accept itself
                    // runs out; new clients wait in the listen queue until sessions end.
                    self.back_off("cannot open a backend socket", &e);
                } else {
                    tracing::debug!("{sock}: connect to {} failed: {e}", backend.name);
                }
                self.pending
                    .push_back(Event::ConnectFailed { sock, reason });
                return;
            }
        };
        let token = self.socks.insert(self.new_sock(sock, stream, true));
        let s = self.socks.get_mut(token).expect("just inserted");
        if let Err(e) = self.poll.registry().register(
            &mut s.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("{sock}: cannot register a backend socket: {e}");
            self.socks.remove(token);
            let reason = if is_out_of_resources(&e) {
                Failure::NoDescriptors
            } else {
                Failure::Other
            };
            self.pending
                .push_back(Event::ConnectFailed { sock, reason });
        }
    }

    /// A readiness event for a client or backend socket.
    fn socket_ready(&mut self, token: Token, ev: &mio::event::Event) {
        let Some(s) = self.socks.get_mut(token) else {
            return; // closed earlier in this round
        };
        if s.connecting {
            // Writable with no error or hang-up is a finished connect: no syscall to ask.
            let plain = ev.is_writable() && !ev.is_error() && !ev.is_write_closed();
            let result = if plain {
                Ok(true)
            } else {
                s.stream.connect_result()
            };
            match result {
                Ok(false) => return,
                Ok(true) => {
                    s.connecting = false;
                    let sock = s.id;
                    self.dispatch(Event::Connected { sock });
                }
                Err(e) => {
                    let sock = s.id;
                    tracing::debug!("{sock}: connect failed: {e}");
                    self.socks.remove(token);
                    self.dispatch(Event::ConnectFailed {
                        sock,
                        reason: connect_failure(&e),
                    });
                    return;
                }
            }
        }
        let Some(s) = self.socks.get_mut(token) else {
            return;
        };
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            s.write_blocked = false;
            if !s.queue.is_empty() || s.fed_by.is_some() {
                self.flush(token);
                self.pump();
            }
        }
        let Some(s) = self.socks.get_mut(token) else {
            return;
        };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            // An error surfaces from the next read.
            s.readable = true;
            s.peer_closed |= ev.is_read_closed() || ev.is_error();
            self.read_some(token);
        }
    }

    /// Reads `token` until it would block, the engine pauses it, or its turn is over.
    fn read_some(&mut self, token: Token) {
        for _ in 0..READS_PER_TURN {
            let Some(s) = self.socks.get_mut(token) else {
                return;
            };
            if !s.wants_read() {
                return;
            }
            if s.splicing {
                if let Some(to) = self.engine.splice_route(s.id) {
                    match self.splice_some(token, to) {
                        Spliced::More => continue,
                        Spliced::Stop => return,
                        Spliced::Copy => {}
                    }
                }
            }
            let Some(s) = self.socks.get_mut(token) else {
                return;
            };
            if self.buf.capacity() < MIN_READ {
                // Reclaims the block if every `Bytes` split off it is gone; else a new block.
                self.buf.reserve(READ_BLOCK);
            }
            let spare = self.buf.spare_capacity_mut();
            let room = spare.len();
            match s.stream.recv(spare) {
                Ok(0) => {
                    s.read_closed = true;
                    s.readable = false;
                    let sock = s.id;
                    self.dispatch(Event::ReadClosed { sock });
                    return;
                }
                Ok(n) => {
                    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
                    unsafe { self.buf.set_len(n) };
                    if n < room && !s.peer_closed {
                        // A short read emptied the kernel's buffer; with edge-triggered epoll
                        // new data brings a new event, so skip the read that would block. Not
                        // after a FIN: its edge came with this data and will not come again.
                        s.readable = false;
                    }
                    if n >= AUTO_AFTER && self.splice == SpliceMode::Auto {
                        s.splicing = s.stream.tcp_fd().is_some();
                    }
                    let sock = s.id;
                    let data = self.buf.split().freeze();
                    tracing::trace!("{sock}: read {n} bytes");
                    self.dispatch(Event::Read { sock, data });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let sock = s.id;
                    tracing::debug!("{sock}: read failed: {e}");
                    self.socks.remove(token);
                    self.dispatch(Event::Failed {
                        sock,
                        reason: io_failure(&e),
                    });
                    return;
                }
            }
        }
        if let Some(s) = self.socks.get_mut(token) {
            if s.wants_read() && !s.queued {
                s.queued = true;
                self.ready.push_back(token);
            }
        }
    }

    fn flush_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            if let Some(s) = self.socks.get_mut(token) {
                s.dirty = false;
                self.flush(token);
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
    }

    /// Writes what `token` has queued, after what a pipe feeding it holds; the outcome goes to
    /// `pending`.
    fn flush(&mut self, token: Token) {
        if !self.drain_pipe_into(token) {
            return;
        }
        let Some(s) = self.socks.get_mut(token) else {
            return;
        };
        if s.write_blocked || s.queue.is_empty() {
            s.shut_if_asked();
            return;
        }
        let (written, stop) = s.queue.write_to(&mut s.stream);
        let sock = s.id;
        if written > 0 {
            tracing::trace!("{sock}: wrote {written} bytes");
            self.pending.push_back(Event::Flushed {
                sock,
                bytes: written,
            });
        }
        match stop {
            Stop::Empty => s.shut_if_asked(),
            Stop::Blocked => s.write_blocked = true,
            Stop::Failed(e) => {
                tracing::debug!("{sock}: write failed: {e}");
                self.socks.remove(token);
                self.pending.push_back(Event::Failed {
                    sock,
                    reason: io_failure(&e),
                });
            }
        }
    }

    // ---- splicing -----------------------------------------------------------------------

    /// A socket as the driver keeps it; with `--splice always` a TCP socket splices from its
    /// first byte.
    fn new_sock(&self, id: SockId, stream: Stream, connecting: bool) -> Sock {
        let mut s = Sock::new(id, stream, connecting);
        s.splicing = self.splice == SpliceMode::Always && s.stream.tcp_fd().is_some();
        s
    }

    /// One splice of `token`'s bytes towards `to`, which the engine just granted: into the
    /// socket's pipe, then on into `to`. What reached `to` goes to the engine as
    /// `Event::Spliced`; an EOF as `ReadClosed`, which (the pipe being empty whenever it is
    /// filled) can never overtake spliced bytes.
    fn splice_some(&mut self, token: Token, to: SockId) -> Spliced {
        let Some(dest) = self.socks.token(to) else {
            return Spliced::Copy;
        };
        match self.socks.get_mut(dest) {
            // The destination's own queue goes first.
            Some(d) if d.queue.is_empty() && d.stream.tcp_fd().is_some() => {}
            _ => return Spliced::Copy,
        }
        let Some(s) = self.socks.get_mut(token) else {
            return Spliced::Stop;
        };
        let Some(from) = s.stream.tcp_fd() else {
            return Spliced::Copy;
        };
        if s.pipe.as_ref().is_some_and(|p| p.held() > 0) {
            // `to` has not taken the last fill; its drain puts this socket back on the ready list.
            return Spliced::Stop;
        }
        if s.pipe.is_none() {
            match Pipe::new() {
                Ok(p) => {
                    tracing::debug!("{}: splicing to {to}", s.id);
                    s.pipe = Some(p);
                }
                Err(e) => {
                    tracing::debug!("{}: no pipe ({e}): copying instead", s.id);
                    s.splicing = false;
                    return Spliced::Copy;
                }
            }
        }
        let sock = s.id;
        let filled = s.pipe.as_mut().map(|p| p.fill(from));
        match filled {
            Some(Ok(Filled::Bytes(_))) => {}
            Some(Ok(Filled::WouldBlock)) | None => {
                s.readable = false;
                return Spliced::Stop;
            }
            Some(Ok(Filled::Eof)) => {
                s.read_closed = true;
                s.readable = false;
                self.dispatch(Event::ReadClosed { sock });
                return Spliced::Stop;
            }
            Some(Err(e)) => {
                tracing::debug!("{sock}: splice read failed: {e}");
                self.socks.remove(token);
                self.dispatch(Event::Failed {
                    sock,
                    reason: io_failure(&e),
                });
                return Spliced::Stop;
            }
        }
        if let Some(d) = self.socks.get_mut(dest) {
            d.fed_by = Some(token);
        }
        let emptied = self.drain_pipe_into(dest);
        self.pump();
        if emptied {
            Spliced::More
        } else {
            Spliced::Stop
        }
    }

    /// Moves what the pipe feeding `dest` holds into it. True when no pipe holds bytes for
    /// `dest` any more (its own queue may be written); false while they wait for it to drain,
    /// or when it failed. Bytes moved go to `pending` as `Event::Spliced`, a failure as `Failed`.
    fn drain_pipe_into(&mut self, dest: Token) -> bool {
        let Some(d) = self.socks.get_mut(dest) else {
            return false;
        };
        let Some(source) = d.fed_by else {
            return true;
        };
        if d.write_blocked {
            return false;
        }
        let (to, dest_id) = (d.stream.tcp_fd(), d.id);
        let pipe = match self.socks.get_mut(source) {
            Some(s) => s.pipe.as_mut().map(|p| (s.id, p)),
            None => None,
        };
        let (Some(to), Some((sock, pipe))) = (to, pipe) else {
            // The source is gone and its pipe with it.
            if let Some(d) = self.socks.get_mut(dest) {
                d.fed_by = None;
            }
            return true;
        };
        let moved = match pipe.drain(to) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("{dest_id}: splice write failed: {e}");
                self.socks.remove(dest);
                self.pending.push_back(Event::Failed {
                    sock: dest_id,
                    reason: io_failure(&e),
                });
                return false;
            }
        };
        let emptied = pipe.held() == 0;
        if moved > 0 {
            self.pending.push_back(Event::Spliced {
                sock,
                bytes: moved as u64,
            });
        }
        if let Some(s) = self.socks.get_mut(source) {
            if emptied && s.wants_read() && !s.queued {
                s.queued = true;
                self.ready.push_back(source);
            }
        }
        if let Some(d) = self.socks.get_mut(dest) {
            if emptied {
                d.fed_by = None;
            } else {
                d.write_blocked = true;
            }
        }
        emptied
    }

    /// Gives every socket on the ready list (as it is now) another turn.
    fn run_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            if token == LISTENER {
                self.listener_queued = false;
                self.accept_ready();
                continue;
            }
            if let Some(s) = self.socks.get_mut(token) {
                s.queued = false;
                self.read_some(token);
            }
        }
    }

    // ---- accepting ----------------------------------------------------------------------

    fn queue_listener(&mut self) {
        if !self.listener_queued && self.listener.is_some() {
            self.listener_queued = true;
            self.ready.push_back(LISTENER);
        }
    }

    /// Accepts until the listener would block, the engine pauses accepting, the process has no
    /// connection slot left (this loop is woken when one frees), or the turn ends.
    fn accept_ready(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            // Slots of clients that closed, or of an accept that found none, go back first.
            self.slots.hold(self.engine.open_clients());
            if self.accept.paused || self.accept.backoff_until.is_some() {
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            if !self.slots.take() {
                self.warn_full();
                return;
            }
            match listener.accept() {
                Ok((stream, addr)) => {
                    self.accept.backoff = Duration::ZERO;
                    // TCP_NODELAY comes from the listener (listener.rs).
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let sock = SockId::client(conn);
                    let new = self.new_sock(sock, Stream::Tcp(stream), false);
                    let token = self.socks.insert(new);
                    let s = self.socks.get_mut(token).expect("just inserted");
                    if let Err(e) = self.poll.registry().register(
                        &mut s.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!("accepted {addr}: cannot register: {e}");
                        self.socks.remove(token);
                        continue;
                    }
                    tracing::debug!("conn {}: accepted {addr}", conn.0);
                    self.dispatch(Event::Accepted {
                        conn,
                        client: addr.to_string(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.slots.hold(self.engine.open_clients());
                    return;
                }
                Err(e) if is_out_of_resources(&e) => {
                    self.slots.hold(self.engine.open_clients());
                    self.back_off("cannot accept", &e);
                    return;
                }
                // ECONNABORTED, EINTR, EPERM (firewall): this one connection is lost.
                Err(e) => tracing::debug!("accept: {e}"),
            }
        }
        self.slots.hold(self.engine.open_clients());
        self.queue_listener();
    }

    /// Out of descriptors or memory (`what` failed with `e`): stop accepting for a while, longer
    /// each time it happens again before an accept succeeds.
    fn back_off(&mut self, what: &str, e: &io::Error) {
        let gate = &mut self.accept;
        let now = std::time::Instant::now();
        if gate.backoff.is_zero() {
            // One warning per episode, and at most one per WARN_EVERY when episodes flap.
            if may_warn(&mut gate.warned, now) {
                tracing::warn!("{what}: {e}; pausing accepts (backing off up to 1s)");
            }
            gate.backoff = BACKOFF_FIRST;
        } else {
            gate.backoff = (gate.backoff * 2).min(BACKOFF_MAX);
        }
        gate.backoff_until = Some(now + gate.backoff);
    }

    /// The process has `--max-connections` clients open (this loop found no slot, or its engine
    /// paused accepting): said at most once per [`WARN_EVERY`] by each loop, since a busy proxy
    /// may touch the limit many times a second.
    fn warn_full(&mut self) {
        if self.draining {
            return;
        }
        if may_warn(&mut self.accept.full_warned, std::time::Instant::now()) {
            tracing::warn!(
                "max connections reached: {} clients open (--max-connections); not accepting \
                 until one leaves",
                self.engine.config().max_connections
            );
        }
    }

    // ---- time and draining --------------------------------------------------------------

    /// Fires the engine's timers and ends an accept back-off when their time has come.
    fn expire(&mut self) {
        if let Some(at) = self.engine.poll_timeout() {
            if self.clock.now() >= at {
                self.dispatch(Event::Timeout);
            }
        }
        if let Some(until) = self.accept.backoff_until {
            if std::time::Instant::now() >= until {
                self.accept.backoff_until = None;
                self.queue_listener();
            }
        }
    }

    /// SIGTERM/SIGINT or a `Stopper`, one byte each: the first closes the listener so new
    /// connects are refused, then lets the engine drain; a second one while sessions are still
    /// open ends the drain at once (the engine closes them).
    fn drain_requested(&mut self) {
        let mut buf = [0u8; 64];
        let mut requests = 0;
        while let Ok(n @ 1..) = (&self.drain_rx).read(&mut buf) {
            requests += n;
        }
        if requests == 0 || self.done {
            return;
        }
        if !self.draining {
            self.start_drain();
            requests -= 1;
        }
        if requests > 0 && !self.done {
            tracing::info!(
                "drain cut short: closing {} open session(s) now",
                self.engine.session_count()
            );
            self.cut_short = true;
            self.dispatch(Event::Drain);
        }
    }

    fn start_drain(&mut self) {
        self.draining = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        tracing::info!(
            "draining: no longer accepting; {} open session(s) may finish",
            self.engine.session_count()
        );
        self.dispatch(Event::Drain);
    }
}

/// Whether a warning last given at `last` may be given again at `now`; if so, notes `now`.
fn may_warn(last: &mut Option<std::time::Instant>, now: std::time::Instant) -> bool {
    if matches!(*last, Some(at) if now.duration_since(at) < WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}
