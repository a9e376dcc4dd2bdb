//! The buffer under every framer: the chunks pushed and not yet taken, in order.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Bytes pushed and not yet taken, kept as the pushed chunks: a message inside one chunk is
/// taken as a slice of it, and only a message spanning chunks is copied, once.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: VecDeque<Bytes>,
    /// The sum of the chunks' lengths.
    len: usize,
}

impl Chunks {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len = self.len.saturating_add(data.len());
            self.chunks.push_back(data);
        }
    }

    /// The offset of the first `byte` at an offset in `from..to` (`to` clamped to the length).
    /// Walks back from the newest chunk to the one holding `from`, so a caller that remembers how
    /// far it searched scans each byte once however small the chunks.
    pub(crate) fn find(&self, byte: u8, from: usize, to: usize) -> Option<usize> {
        let to = to.min(self.len);
        if from >= to {
            return None;
        }
        // Find the first chunk that ends after `from`, walking back from the end.
        let mut index = self.chunks.len();
        let mut start = self.len;
        while start > from {
            index -= 1;
            start -= self.chunks[index].len();
        }
        // `start <= from` is now the start of chunk `index`, which holds offset `from`.
        for chunk in self.chunks.range(index..) {
            if start >= to {
                break;
            }
            let lo = from.saturating_sub(start);
            let hi = chunk.len().min(to - start);
            if let Some(i) = chunk[lo..hi].iter().position(|&b| b == byte) {
                return Some(start + lo + i);
            }
            start += chunk.len();
        }
        None
    }

    /// The byte at offset `i`, if that many are buffered.
    pub(crate) fn byte_at(&self, mut i: usize) -> Option<u8> {
        for chunk in &self.chunks {
            if i < chunk.len() {
                return Some(chunk[i]);
            }
            i -= chunk.len();
        }
        None
    }

    /// Copies the first `out.len()` bytes into `out`; false (and `out` unspecified) if fewer are
    /// buffered.
    pub(crate) fn copy_prefix(&self, out: &mut [u8]) -> bool {
        if self.len < out.len() {
            return false;
        }
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = chunk.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == out.len() {
                break;
            }
        }
        true
    }

    /// Takes the first `n` bytes (all of them if fewer are buffered): a slice of the front chunk
    /// when it holds them all, otherwise one copy of the chunks they span.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= n {
                let out = front.split_to(n);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                return out;
            }
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = n - out.len();
            if front.len() <= want {
                out.extend_from_slice(front);
                self.chunks.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(want));
            }
        }
        out.freeze()
    }

    /// Takes everything buffered.
    pub(crate) fn take_all(&mut self) -> Bytes {
        self.take(self.len)
    }
}
