//! A capture turned back into traffic: per session, what the client sent and when, what each
//! backend answered and when, and what the client was sent. Replay drivers play these scripts
//! against a simulated or real proxy.

use super::{Header, Record, Replayer};
use crate::command::Command;
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{BackendId, ConnId, Peer};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// Bytes that arrived at one moment, relative to the session's accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub at: Duration,
    pub data: Bytes,
}

/// One direction of one socket as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    pub chunks: Vec<Chunk>,
    /// When the peer closed its write side, if it did.
    pub eof: Option<Duration>,
}

impl Stream {
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.data.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// One recorded session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionScript {
    pub conn: Option<ConnId>,
    /// When the client was accepted, on the capture's clock.
    pub accepted_at: Instant,
    /// What the client sent.
    pub client: Stream,
    /// What each backend sent back, by `BackendId`.
    pub backends: BTreeMap<BackendId, Stream>,
    /// Every byte the engine wrote to the client: what a replay's client must see.
    pub client_saw: Vec<u8>,
}

/// Turns a capture's records into session scripts, in accept order. Replays the inputs through a
/// fresh engine built from the header to learn what each client was sent.
pub fn sessions(header: &Header, records: &[Record]) -> Result<Vec<SessionScript>, String> {
    let engine = Engine::new(header.config.clone()).map_err(|e| e.to_string())?;
    let mut replayer = Replayer::new(engine);
    let mut by_conn: BTreeMap<ConnId, SessionScript> = BTreeMap::new();
    for record in records {
        if let Record::Input { at, event } = record {
            match event {
                Event::Accepted { conn, .. } => {
                    by_conn.insert(
                        *conn,
                        SessionScript {
                            conn: Some(*conn),
                            accepted_at: *at,
                            ..SessionScript::default()
                        },
                    );
                }
                Event::Read { sock, data } => {
                    if let Some(s) = by_conn.get_mut(&sock.conn) {
                        let chunk = Chunk {
                            at: at.saturating_since(s.accepted_at),
                            data: data.clone(),
                        };
                        match sock.peer {
                            Peer::Client => s.client.chunks.push(chunk),
                            Peer::Backend(b) => s.backends.entry(b).or_default().chunks.push(chunk),
                        }
                    }
                }
                Event::ReadClosed { sock } => {
                    if let Some(s) = by_conn.get_mut(&sock.conn) {
                        let when = Some(at.saturating_since(s.accepted_at));
                        match sock.peer {
                            Peer::Client => s.client.eof = when,
                            Peer::Backend(b) => s.backends.entry(b).or_default().eof = when,
                        }
                    }
                }
                _ => {}
            }
        }
        replayer
            .apply(record.clone(), |cmd| {
                if let Command::Write { sock, data } = cmd {
                    if sock.peer == Peer::Client {
                        if let Some(s) = by_conn.get_mut(&sock.conn) {
                            s.client_saw.extend_from_slice(data);
                        }
                    }
                }
            })
            .map_err(|d| d.to_string())?;
    }
    Ok(by_conn.into_values().collect())
}
