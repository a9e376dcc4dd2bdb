//! A deterministic byte stream that can be written and verified on the fly at memcpy speed.
//!
//! The stream is a 1 MiB block of pseudo-random bytes repeated, with the first 8 bytes of every
//! 1 MiB page replaced by the page's index. A lost, duplicated, reordered or altered byte changes
//! what the verifier sees at some offset, and the verifier names the first such offset.

use super::ReadRetrying;
use std::io::{ErrorKind, Read, Write};
use std::sync::OnceLock;
use xxhash_rust::xxh3::Xxh3Default;

const PAGE: usize = 1 << 20;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

fn block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| {
        // splitmix64
        let mut x: u64 = 0x5eed_f00d_cafe_beef;
        let mut v = Vec::with_capacity(PAGE);
        while v.len() < PAGE {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            v.extend_from_slice(&z.to_le_bytes());
        }
        v
    })
}

/// Fills `buf` with the stream's bytes from `offset` on.
pub fn fill(offset: u64, buf: &mut [u8]) {
    let block = block();
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let page = at / PAGE as u64;
        let within = (at % PAGE as u64) as usize;
        let n = (PAGE - within).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&block[within..within + n]);
        if within < 8 {
            let header = page.to_le_bytes();
            for i in within..8.min(within + n) {
                buf[done + i - within] = header[i];
            }
        }
        done += n;
    }
}

/// The first `len` bytes of the stream.
pub fn bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(0, &mut v);
    v
}

/// XXH3-64 of the first `len` bytes of the stream (what fanout's report digest should say).
pub fn digest(len: u64) -> u64 {
    let mut h = Xxh3Default::new();
    let mut buf = vec![0u8; PAGE];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(PAGE as u64) as usize;
        fill(at, &mut buf[..n]);
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.digest()
}

/// Writes the first `len` bytes of the stream to `w`; `progress` is called with the total
/// written after every chunk. Returns the error that stopped it, if any.
pub fn write(w: &mut impl Write, len: u64, mut progress: impl FnMut(u64)) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        fill(at, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        at += n as u64;
        progress(at);
    }
    Ok(())
}

/// Checks bytes against the stream as they arrive.
pub struct Verifier {
    offset: u64,
    expected: Vec<u8>,
    hash: Xxh3Default,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            offset: 0,
            expected: Vec::new(),
            hash: Xxh3Default::new(),
        }
    }

    /// Checks `data`, the next bytes received; panics at the first byte that differs.
    pub fn check(&mut self, data: &[u8]) {
        self.expected.resize(data.len(), 0);
        fill(self.offset, &mut self.expected);
        if data != self.expected.as_slice() {
            let i = data
                .iter()
                .zip(&self.expected)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "stream differs at offset {}: got {:#04x}, expected {:#04x}",
                self.offset + i as u64,
                data[i],
                self.expected[i]
            );
        }
        self.hash.update(data);
        self.offset += data.len() as u64;
    }

    /// XXH3-64 of the bytes verified so far.
    pub fn digest(&self) -> u64 {
        self.hash.digest()
    }

    /// Reads `r` to EOF, verifying everything; panics on an error (a read timeout included),
    /// naming how much was verified. Returns the total.
    pub fn read_to_eof(&mut self, r: &mut impl Read) -> u64 {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read_retrying(&mut buf) {
                Ok(0) => return self.offset,
                Ok(n) => self.check(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "read failed after {} verified bytes: {}",
                    self.offset,
                    super::client::describe(&e)
                ),
            }
        }
    }

    /// Reads and verifies exactly `n` more bytes.
    pub fn read_exactly(&mut self, r: &mut impl Read, n: u64) {
        let end = self.offset + n;
        let mut buf = vec![0u8; 256 * 1024];
        while self.offset < end {
            let want = ((end - self.offset) as usize).min(buf.len());
            match r.read_retrying(&mut buf[..want]) {
                Ok(0) => panic!("EOF after {} verified bytes, wanted {end}", self.offset),
                Ok(k) => self.check(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "read failed after {} verified bytes: {}",
                    self.offset,
                    super::client::describe(&e)
                ),
            }
        }
    }
}

/// Reads `r` to EOF, returning the count and XXH3-64 of what arrived (for a backend that checks an
/// upload).
pub fn count_and_digest(r: &mut impl Read) -> std::io::Result<(u64, u64)> {
    let mut h = Xxh3Default::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read_retrying(&mut buf) {
            Ok(0) => return Ok((n, h.digest())),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// XXH3-64 of `data`, as the report prints it (16 lowercase hex digits).
pub fn hex_digest(data: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(data))
}
