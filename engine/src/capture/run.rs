//! Which run of a recorder wrote a capture file (since schema 3).
//!
//! Every file of one capture (`FILE`, `FILE.1`, ...) carries the same [`Run`] in its header, so a
//! reader can tell a capture's own files from files an earlier run left at the same path and
//! never stitch the two together ([`super::segments`]). The driver draws the id (128 random bits
//! from the operating system) when the capture starts; the engine only stores and compares it,
//! and stays deterministic.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of one run of a capture's recorder: the same in every file it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Run {
    /// Random, drawn by the driver when the capture starts.
    pub id: RunId,
    /// Wall-clock time the capture started, milliseconds since 1970.
    pub started_unix_ms: u64,
}

/// 128 random bits naming one run. Shown (and written by human-readable formats such as
/// `capture inspect --json`) as 32 lowercase hex digits; stored in captures as a `u128`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u128);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} (started at {} ms since 1970)",
            self.id, self.started_unix_ms
        )
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hex;
        impl Visitor<'_> for Hex {
            type Value = RunId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a run id: 32 hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RunId, E> {
                let valid = v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
                match u128::from_str_radix(v, 16) {
                    Ok(n) if valid => Ok(RunId(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Hex)
        } else {
            u128::deserialize(d).map(RunId)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_32_hex_digits_for_people_and_a_u128_in_captures() {
        let id = RunId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(id, cfg).unwrap();
        let (back, _): (RunId, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, id);
        assert_eq!(
            bytes,
            bincode::serde::encode_to_vec(id.0, cfg).unwrap(),
            "stored as the u128 itself"
        );
    }
}
