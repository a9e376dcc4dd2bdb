//! Duplex analysis: digests of every backend's response, and where a secondary's response first
//! differs from the primary's, in bounded memory.
//!
//! The primary's response bytes are kept (as shared `Bytes`, not copies) only as far back as the
//! slowest secondary still being compared; a secondary's bytes are kept only while they run ahead
//! of the primary's. Either backlog passing the compare window ends exact comparison for that
//! secondary, after which only digests and lengths are compared.

use bytes::Bytes;
use std::collections::VecDeque;
use xxhash_rust::xxh3::Xxh3Default;

/// A streaming digest (XXH3-64) of one response.
#[derive(Clone, Default)]
pub(crate) struct Digest(Xxh3Default);

impl Digest {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub(crate) fn value(&self) -> u64 {
        self.0.digest()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({:016x})", self.value())
    }
}

/// The primary's response bytes that some secondary has not yet been compared against.
#[derive(Debug, Default)]
pub(crate) struct PrimaryTail {
    /// Offset of the first retained byte.
    start: u64,
    /// Total bytes the primary has sent.
    end: u64,
    chunks: VecDeque<Bytes>,
}

impl PrimaryTail {
    pub(crate) fn push(&mut self, data: Bytes) {
        self.end += data.len() as u64;
        self.chunks.push_back(data);
    }

    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Bytes retained for comparisons.
    pub(crate) fn retained(&self) -> u64 {
        self.end - self.start
    }

    /// The retained primary bytes from `offset` on, as a slice of the chunk holding `offset`.
    fn at(&self, offset: u64) -> Option<&[u8]> {
        let mut pos = self.start;
        for chunk in &self.chunks {
            let len = chunk.len() as u64;
            if offset < pos + len {
                return Some(&chunk[(offset - pos) as usize..]);
            }
            pos += len;
        }
        None
    }

    /// Drops bytes before `offset`: nobody needs them any more.
    pub(crate) fn trim_to(&mut self, offset: u64) {
        while let Some(front) = self.chunks.front() {
            let len = front.len() as u64;
            if self.start + len > offset {
                break;
            }
            self.start += len;
            self.chunks.pop_front();
        }
    }
}

/// Where one secondary stands against the primary.
#[derive(Debug)]
pub(crate) enum Comparison {
    /// Equal so far up to `offset`; `ahead` holds the secondary's bytes past what the primary has
    /// sent.
    Equal {
        offset: u64,
        ahead: VecDeque<Bytes>,
        ahead_len: u64,
    },
    /// The responses first differ at this offset.
    DiffersAt(u64),
    /// A backlog passed the window after the responses were equal up to `equal_to`; only
    /// digests and lengths are compared from here on.
    GaveUp { equal_to: u64 },
    /// The secondary's response ended (EOF, failure, detach) with every byte of it equal to the
    /// primary's, `equal_to` bytes: what the primary sends after that decides only lengths, so
    /// none of it is kept.
    Complete { equal_to: u64 },
}

impl Default for Comparison {
    fn default() -> Self {
        Comparison::Equal {
            offset: 0,
            ahead: VecDeque::new(),
            ahead_len: 0,
        }
    }
}

impl Comparison {
    /// The secondary sent `data`.
    pub(crate) fn push(&mut self, data: Bytes) {
        if let Comparison::Equal {
            ahead, ahead_len, ..
        } = self
        {
            *ahead_len += data.len() as u64;
            ahead.push_back(data);
        }
    }

    /// Compares as far as both sides have bytes, then gives up if either backlog passed `window`.
    pub(crate) fn advance(&mut self, primary: &PrimaryTail, window: u64) {
        let Comparison::Equal {
            offset,
            ahead,
            ahead_len,
        } = self
        else {
            return;
        };
        while let Some(front) = ahead.front_mut() {
            let Some(theirs) = primary.at(*offset) else {
                break;
            };
            let n = front.len().min(theirs.len());
            // Whole slices first (memcmp); the position only once they differ.
            if front[..n] != theirs[..n] {
                let i = front
                    .iter()
                    .zip(theirs.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                *self = Comparison::DiffersAt(*offset + i as u64);
                return;
            }
            *offset += n as u64;
            *ahead_len -= n as u64;
            if n == front.len() {
                ahead.pop_front();
            } else {
                let _ = front.split_to(n);
            }
        }
        if *ahead_len > window || primary.len() - *offset > window {
            *self = Comparison::GaveUp { equal_to: *offset };
        }
    }

    /// The secondary will send nothing more. Bytes of it still ahead of the primary's keep
    /// their claim on the primary's next bytes (bounded by the window); with none ahead the
    /// comparison is complete and keeps nothing.
    pub(crate) fn secondary_ended(&mut self) {
        if let Comparison::Equal {
            offset,
            ahead_len: 0,
            ..
        } = *self
        {
            *self = Comparison::Complete { equal_to: offset };
        }
    }

    /// How far back this comparison still needs the primary's bytes.
    pub(crate) fn needs_from(&self) -> Option<u64> {
        match self {
            Comparison::Equal { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The verdict once both responses are complete: (matches, first differing offset).
    pub(crate) fn verdict(
        &self,
        primary: (u64, u64),
        secondary: (u64, u64),
    ) -> (bool, Option<u64>) {
        let ((p_len, p_digest), (s_len, s_digest)) = (primary, secondary);
        let shorter = p_len.min(s_len);
        match self {
            Comparison::DiffersAt(at) => (false, Some(*at)),
            // Equal as far as the shorter response goes: it differs where that one ends.
            Comparison::Equal { offset, .. }
            | Comparison::GaveUp { equal_to: offset }
            | Comparison::Complete { equal_to: offset }
                if p_len != s_len && *offset == shorter =>
            {
                (false, Some(shorter))
            }
            Comparison::Equal { .. } | Comparison::GaveUp { .. } | Comparison::Complete { .. } => {
                (p_len == s_len && p_digest == s_digest, None)
            }
        }
    }
}
