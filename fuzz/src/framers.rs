//! Fuzz target `framers`: a byte stream through a framer, whole and in arbitrary pieces.
//!
//! The first bytes choose the setup, the rest is the stream:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | the framer, `% 4`: [`LineFramer`], or [`LengthPrefixed`] with a `U8`, `U16` or `U32` prefix |
//! | 1 | its limit: `0..=127` as is (`0x00..=0x7f`), multiples of 64 up to 4,032 (`0x80..=0xbf`), or `u64::MAX` |
//! | 2 | how many cuts follow, `% 16` |
//! | 3.. | one byte per cut: the length of the next piece (0 pushes an empty piece) |
//!
//! The stream is pushed whole into one framer and piece by piece into another, popping after
//! every push. Both must yield exactly what the framer's definition, applied to the whole stream
//! by [`model`], yields: the same messages, then the same error or none. On the way: `buffered`
//! counts the bytes not yet yielded, an error repeats on every later pop and no message follows
//! it, a message lying inside one piece is a slice of that piece (not a copy), and the messages
//! followed by `take_rest` are the stream. Raw bytes suit this target: a framer sees raw bytes,
//! and the seeds give the fuzzer lines and frames to mutate.
//!
//! Set `FANOUT_FUZZ_DEBUG=1` to print the decoded setup and the expected outcome.

use fanout_engine::framing::{
    FrameError, Framer, LengthPrefixed, LineFramer, MessageKind, PrefixWidth,
};
use fanout_engine::Bytes;

/// Which framer an input drives.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Line,
    Prefixed(PrefixWidth),
}

impl Kind {
    fn framer(self, limit: u64) -> Box<dyn Framer> {
        match self {
            Kind::Line => Box::new(LineFramer::new(limit)),
            Kind::Prefixed(width) => Box::new(LengthPrefixed::new(width, limit)),
        }
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let [kind, limit, cuts, rest @ ..] = data else {
        return;
    };
    let kind = match kind % 4 {
        0 => Kind::Line,
        1 => Kind::Prefixed(PrefixWidth::U8),
        2 => Kind::Prefixed(PrefixWidth::U16),
        _ => Kind::Prefixed(PrefixWidth::U32),
    };
    let limit = match limit {
        0x00..=0x7f => u64::from(*limit),
        0x80..=0xbf => u64::from(limit & 0x3f) * 64,
        _ => u64::MAX,
    };
    let cuts = usize::from(cuts % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(cuts);
    let stream = Bytes::copy_from_slice(stream);
    let mut cuts = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for &n in lengths {
        at = (at + usize::from(n)).min(stream.len());
        cuts.push(at);
    }

    let expected = model(kind, limit, &stream);
    if std::env::var_os("FANOUT_FUZZ_DEBUG").is_some() {
        eprintln!("{kind:?}, limit {limit}, cuts {cuts:?}, expected {expected:#?}");
    }
    let whole = drive(&mut *kind.framer(limit), &stream, &[]);
    assert_eq!(whole, expected, "the stream pushed whole");
    let split = drive(&mut *kind.framer(limit), &stream, &cuts);
    assert_eq!(split, expected, "the stream pushed cut at {cuts:?}");
}

/// What a framer yielded from a stream: its messages, the error it stopped at, and the rest.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Bytes>,
    error: Option<FrameError>,
    rest: Bytes,
}

/// Pushes `stream` cut at `cuts` (ascending offsets; empty pieces are pushed too), pops after
/// every push, then takes the rest, checking on the way what holds for any stream.
fn drive(f: &mut dyn Framer, stream: &Bytes, cuts: &[usize]) -> Outcome {
    let (mut messages, mut error) = (Vec::new(), None::<FrameError>);
    let (mut pushed, mut yielded) = (0, 0);
    for &cut in cuts.iter().chain([&stream.len()]) {
        let piece_start = pushed;
        f.push(stream.slice(pushed..cut));
        pushed = cut;
        loop {
            assert_eq!(f.buffered(), (pushed - yielded) as u64, "buffered");
            match f.pop() {
                Ok(Some(m)) => {
                    assert!(error.is_none(), "a message after {error:?}");
                    assert!(!m.is_empty(), "an empty message");
                    assert!(
                        yielded + m.len() <= pushed,
                        "a message past the bytes pushed"
                    );
                    assert_eq!(
                        m,
                        stream[yielded..yielded + m.len()],
                        "not the stream's bytes"
                    );
                    if yielded >= piece_start {
                        assert_eq!(
                            m.as_ptr(),
                            stream[yielded..].as_ptr(),
                            "a message inside one piece was copied"
                        );
                    }
                    yielded += m.len();
                    messages.push(m);
                }
                Ok(None) => {
                    assert!(error.is_none(), "Ok(None) after {error:?}");
                    break;
                }
                Err(e) => {
                    if let Some(first) = &error {
                        assert_eq!(&e, first, "the error changed");
                    }
                    let _ = e.to_string();
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let rest = f.take_rest();
    assert_eq!(
        rest,
        stream[yielded..],
        "messages and rest are not the stream"
    );
    assert_eq!(f.buffered(), 0, "take_rest left bytes");
    assert_eq!(
        f.pop(),
        error.clone().map_or(Ok(None), Err),
        "after take_rest"
    );
    Outcome {
        messages,
        error,
        rest,
    }
}

/// The framer's definition applied to the whole stream at once: the oracle.
fn model(kind: Kind, limit: u64, stream: &Bytes) -> Outcome {
    let mut messages = Vec::new();
    let mut at = 0;
    let error = loop {
        let next = &stream[at..];
        let (len, error) = match kind {
            Kind::Line => {
                let window = &next[..next.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
                match window.iter().position(|&c| c == b'\n') {
                    Some(i) => (Some(i + 1), None),
                    None if next.len() as u64 > limit => (
                        None,
                        Some(FrameError::TooLong {
                            kind: MessageKind::Line,
                            limit,
                            seen: limit.saturating_add(1),
                        }),
                    ),
                    None => (None, None),
                }
            }
            Kind::Prefixed(width) => {
                let w = width.bytes();
                match next.get(..w) {
                    None => (None, None),
                    Some(prefix) => {
                        let declared = prefix.iter().fold(0u64, |n, &c| n << 8 | u64::from(c));
                        if declared > limit {
                            let e = FrameError::TooLong {
                                kind: MessageKind::Frame,
                                limit,
                                seen: declared,
                            };
                            (None, Some(e))
                        } else if (next.len() as u64) < w as u64 + declared {
                            (None, None)
                        } else {
                            (Some(w + declared as usize), None)
                        }
                    }
                }
            }
        };
        match len {
            Some(len) => {
                messages.push(stream.slice(at..at + len));
                at += len;
            }
            None => break error,
        }
    };
    Outcome {
        messages,
        error,
        rest: stream.slice(at..),
    }
}
