//! The interceptor under test: routing, answering, holding and effects, decided by the client's
//! bytes so that a model can say what every socket must receive.
//!
//! Each client chunk (one `Event::Read`) is one request: its first byte picks an [`Action`], its
//! second (if any) is the action's argument. Backends are opened by *name* (0..[`NAMES`]) the
//! first time a chunk is sent to that name, as primary or secondary; a name whose backend closed
//! may be opened again. Responses of a primary are rewritten (every byte + 1) before they reach the
//! client; a secondary's are only compared. An effect's result (or failure, or timeout) is
//! answered to the client at the effect's place. Optionally the primary is opened at accept, and a
//! backend that cannot connect is replaced by a new one to another upstream, which gets the bytes
//! the failed one never got.
//!
//! The decisions are written once, against [`Exec`]: the engine runs them through [`Conn`]
//! ([`Fuzzy`](super::Fuzzy)), the model through its own reading of the interceptor API
//! ([`Spec`](super::model::Spec)). Both see the same hook calls, so any difference in what the
//! sockets receive is the engine's.

use fanout_engine::{
    BackendId, Bytes, Conn, EffectError, EffectId, EffectRequest, EffectResult, Misuse, Open, Role,
    UpstreamId,
};

/// Backend names a session may use; name `n` opens upstream `n` (a replacement: `n + NAMES`).
pub const NAMES: usize = 4;

/// The message of the interceptor's deliberate panic (the fuzz target's panic hook stays quiet
/// about it, so that libFuzzer does not take it for a crash).
pub const MARKER: &str = "fanout-fuzz: the interceptor under test panics on purpose";

/// The kind of every effect the interceptor requests (its payload is the chunk).
pub const EFFECT_KIND: &str = "fuzz-lookup";

/// A backend id no session ever opens (`Config::max_backends` is at most 63).
pub const UNKNOWN: BackendId = BackendId(60);

/// What a client chunk asks for. The chunk's first byte is the action's index in [`Action::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// `forward` the chunk to every open backend.
    Forward,
    /// `send` it to the backend named `arg % NAMES`, opening it first if the name has none (or,
    /// with bit 0x40 of `arg`, if its backend closed): a primary with bit 0x80, else a
    /// secondary. A second open primary, or more than `max_backends`, is a misuse.
    Send,
    /// `answer` the client at once with [`answer_of`] the chunk.
    Answer,
    /// `hold` the chunk (past `max_held`: a misuse).
    Hold,
    /// `take_held` and `forward` each held chunk.
    Release,
    /// Request an effect with the chunk as payload; `on_effect` answers its result (past
    /// `max_effects` pending: a misuse).
    Effect,
    /// Panic in the hook.
    Panic,
    /// `close` the session at once.
    Close,
    /// `close_client`: its FIN once its queue drained, then close it.
    CloseClient,
    /// `shutdown` the backend named `arg % NAMES`; for a name with no backend, `send` to a
    /// backend never opened (a misuse).
    Shutdown,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Forward,
        Action::Send,
        Action::Answer,
        Action::Hold,
        Action::Release,
        Action::Effect,
        Action::Panic,
        Action::Close,
        Action::CloseClient,
        Action::Shutdown,
    ];

    /// The action a chunk starting with `byte` asks for.
    pub fn of(byte: u8) -> Action {
        Action::ALL[usize::from(byte) % Action::ALL.len()]
    }

    /// The first byte of a chunk asking for this action.
    pub fn byte(self) -> u8 {
        Action::ALL.iter().position(|&a| a == self).expect("listed") as u8
    }
}

/// The interceptor's knobs, chosen by the fuzz input.
#[derive(Debug, Clone, Copy, Default, arbitrary::Arbitrary)]
pub struct Flags {
    /// Open name 0 as the primary at accept (else backends open only when a chunk names them).
    pub eager: bool,
    /// Replace a backend that cannot connect by a new one to upstream `name + NAMES`, sending it
    /// the bytes the failed one never got.
    pub failover: bool,
}

/// The per-session state of the program.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The backend each name opened last.
    pub names: [Option<BackendId>; NAMES],
    /// A primary was opened: its end ends the client's stream. Without one, the client's EOF does
    /// (`close_client`), or nothing would.
    pub has_primary: bool,
}

/// What the program may do: [`Conn`]'s methods. The model implements it by the API's documented
/// rules.
pub trait Exec {
    fn open(&mut self, upstream: UpstreamId, how: Open) -> Result<BackendId, Misuse>;
    fn is_open(&self, b: BackendId) -> bool;
    fn role(&self, b: BackendId) -> Option<Role>;
    fn forward(&mut self, data: Bytes);
    fn send(&mut self, b: BackendId, data: Bytes);
    fn answer(&mut self, data: Bytes);
    fn hold(&mut self, data: Bytes);
    fn take_held(&mut self) -> Vec<Bytes>;
    fn unsent(&mut self) -> Vec<Bytes>;
    fn effect(&mut self, request: EffectRequest) -> Result<EffectId, Misuse>;
    fn shutdown(&mut self, b: BackendId);
    fn close_client(&mut self);
    fn close(&mut self);
    /// Panics (the engine must contain it); the program does nothing after it.
    fn panic(&mut self);
}

impl Exec for Conn<'_> {
    fn open(&mut self, upstream: UpstreamId, how: Open) -> Result<BackendId, Misuse> {
        Conn::open(self, upstream, how)
    }
    fn is_open(&self, b: BackendId) -> bool {
        Conn::is_open(self, b)
    }
    fn role(&self, b: BackendId) -> Option<Role> {
        Conn::role(self, b)
    }
    fn forward(&mut self, data: Bytes) {
        Conn::forward(self, data)
    }
    fn send(&mut self, b: BackendId, data: Bytes) {
        Conn::send(self, b, data)
    }
    fn answer(&mut self, data: Bytes) {
        Conn::answer(self, data)
    }
    fn hold(&mut self, data: Bytes) {
        Conn::hold(self, data)
    }
    fn take_held(&mut self) -> Vec<Bytes> {
        Conn::take_held(self)
    }
    fn unsent(&mut self) -> Vec<Bytes> {
        Conn::unsent(self)
    }
    fn effect(&mut self, request: EffectRequest) -> Result<EffectId, Misuse> {
        Conn::effect(self, request)
    }
    fn shutdown(&mut self, b: BackendId) {
        Conn::shutdown(self, b)
    }
    fn close_client(&mut self) {
        Conn::close_client(self)
    }
    fn close(&mut self) {
        Conn::close(self)
    }
    fn panic(&mut self) {
        std::panic::panic_any(MARKER)
    }
}

/// The client's answer to a chunk: its bytes in reverse order, each with bit 5 flipped (same
/// length, so one read's answer is one read's worth of bytes).
pub fn answer_of(chunk: &[u8]) -> Bytes {
    chunk.iter().rev().map(|b| b ^ 0x20).collect()
}

/// A primary's response as the client hears it: every byte + 1.
pub fn rewrite(response: &[u8]) -> Bytes {
    response.iter().map(|b| b.wrapping_add(1)).collect()
}

/// What the client hears for an effect's outcome.
pub fn effect_answer(result: &EffectResult) -> Bytes {
    match result {
        Ok(bytes) => bytes.clone(),
        Err(EffectError::Failed(_)) => Bytes::from_static(b"<failed>"),
        Err(EffectError::Unavailable(_)) => Bytes::from_static(b"<unavailable>"),
        Err(EffectError::TimedOut) => Bytes::from_static(b"<timed out>"),
    }
}

fn how(primary: bool) -> Open {
    if primary {
        Open::primary()
    } else {
        Open::secondary()
    }
}

/// `on_connect`: the session's plan, with the primary opened if `flags.eager`.
pub fn on_connect(flags: Flags, x: &mut impl Exec) -> Plan {
    let mut plan = Plan::default();
    if flags.eager {
        if let Ok(b) = x.open(UpstreamId(0), Open::primary()) {
            plan.names[0] = Some(b);
            plan.has_primary = true;
        }
    }
    plan
}

/// `on_data`: one chunk, one action.
pub fn on_data(plan: &mut Plan, x: &mut impl Exec, chunk: Bytes) {
    let arg = chunk.get(1).copied().unwrap_or(0);
    let name = usize::from(arg) % NAMES;
    match Action::of(chunk[0]) {
        Action::Forward => x.forward(chunk),
        Action::Send => {
            let reopen = arg & 0x40 != 0;
            let b = match plan.names[name] {
                Some(b) if !reopen || x.is_open(b) => b,
                _ => {
                    let primary = arg & 0x80 != 0;
                    let Ok(b) = x.open(UpstreamId(name as u16), how(primary)) else {
                        return;
                    };
                    plan.names[name] = Some(b);
                    plan.has_primary |= primary;
                    b
                }
            };
            x.send(b, chunk);
        }
        Action::Answer => x.answer(answer_of(&chunk)),
        Action::Hold => x.hold(chunk),
        Action::Release => {
            for held in x.take_held() {
                x.forward(held);
            }
        }
        Action::Effect => {
            let _ = x.effect(EffectRequest::new(EFFECT_KIND, chunk));
        }
        Action::Panic => x.panic(),
        Action::Close => x.close(),
        Action::CloseClient => {
            x.close_client();
        }
        Action::Shutdown => match plan.names[name] {
            Some(b) => x.shutdown(b),
            None => x.send(UNKNOWN, chunk),
        },
    }
}

/// `on_client_eof`: with no primary, nothing else would end the client's stream.
pub fn on_client_eof(plan: &mut Plan, x: &mut impl Exec) {
    if !plan.has_primary {
        x.close_client();
    }
}

/// `on_response`: a primary's bytes, rewritten, to the client; a secondary's nowhere.
pub fn on_response(x: &mut impl Exec, b: BackendId, data: &[u8]) {
    if x.role(b) == Some(Role::Primary) {
        x.answer(rewrite(data));
    }
}

/// `on_effect`: the outcome, answered at the effect's place.
pub fn on_effect(x: &mut impl Exec, result: &EffectResult) {
    x.answer(effect_answer(result));
}

/// `on_connect_failed`: with `flags.failover`, the name gets a new backend of the same role to
/// upstream `name + NAMES`, which gets the bytes the failed one never got.
pub fn on_connect_failed(flags: Flags, plan: &mut Plan, x: &mut impl Exec, b: BackendId) {
    if !flags.failover {
        return;
    }
    let Some(name) = plan.names.iter().position(|n| *n == Some(b)) else {
        return;
    };
    let primary = x.role(b) == Some(Role::Primary);
    let Ok(next) = x.open(UpstreamId((name + NAMES) as u16), how(primary)) else {
        return;
    };
    plan.names[name] = Some(next);
    for data in x.unsent() {
        x.send(next, data);
    }
}
