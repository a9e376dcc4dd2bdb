//! The framers' contract: whole messages, delimiter or prefix included; limits enforced as soon
//! as a length gives itself away; sticky errors; nothing lost; the same messages however the
//! stream is split; zero-copy slices for messages inside one chunk.

use fanout_engine::framing::{
    FrameError, Framer, LengthPrefixed, LineFramer, MessageKind, PrefixWidth,
};
use fanout_engine::Bytes;
use proptest::prelude::*;

/// Pops until `Ok(None)` or an error, collecting the messages.
fn pop_all(f: &mut dyn Framer) -> (Vec<Bytes>, Option<FrameError>) {
    let mut messages = Vec::new();
    loop {
        match f.pop() {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => return (messages, None),
            Err(e) => return (messages, Some(e)),
        }
    }
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn too_long_line(limit: u64) -> FrameError {
    FrameError::TooLong {
        kind: MessageKind::Line,
        limit,
        seen: limit + 1,
    }
}

// ---- LineFramer ----

#[test]
fn crlf_and_bare_lf_lines_are_yielded_whole_with_their_terminators() {
    let mut f = LineFramer::new(64);
    f.push(b(b"put 1\r\nuse tube\nreserve\r\n"));
    let (messages, error) = pop_all(&mut f);
    assert_eq!(messages, [&b"put 1\r\n"[..], b"use tube\n", b"reserve\r\n"]);
    assert_eq!(error, None);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn an_empty_line_is_a_message_of_its_terminator_alone() {
    let mut f = LineFramer::new(64);
    f.push(b(b"\n\r\nx\n"));
    assert_eq!(pop_all(&mut f).0, [&b"\n"[..], b"\r\n", b"x\n"]);
}

#[test]
fn a_line_waits_for_its_newline_across_pushes() {
    let mut f = LineFramer::new(64);
    f.push(b(b"hel"));
    assert_eq!(f.pop(), Ok(None));
    f.push(b(b"lo\r"));
    assert_eq!(f.pop(), Ok(None));
    f.push(b(b"\nwor"));
    assert_eq!(f.pop(), Ok(Some(b(b"hello\r\n"))));
    assert_eq!(f.pop(), Ok(None));
    assert_eq!(f.buffered(), 3);
}

#[test]
fn a_line_exactly_max_long_including_its_newline_is_accepted() {
    let mut f = LineFramer::new(8);
    f.push(b(b"1234567\n"));
    assert_eq!(f.pop(), Ok(Some(b(b"1234567\n"))));
    // Exactly max bytes without a newline yet is not an error: the newline may be next.
    let mut f = LineFramer::new(8);
    f.push(b(b"1234567"));
    assert_eq!(f.pop(), Ok(None));
    f.push(b(b"\n"));
    assert_eq!(f.pop(), Ok(Some(b(b"1234567\n"))));
}

#[test]
fn a_line_one_byte_over_max_is_too_long() {
    let mut f = LineFramer::new(8);
    f.push(b(b"12345678\n"));
    assert_eq!(f.pop(), Err(too_long_line(8)));
}

#[test]
fn too_long_is_detected_as_soon_as_max_plus_one_bytes_lack_a_newline() {
    let mut f = LineFramer::new(8);
    f.push(b(b"12345678"));
    assert_eq!(f.pop(), Ok(None));
    f.push(b(b"9"));
    assert_eq!(f.pop(), Err(too_long_line(8)));
    assert_eq!(f.buffered(), 9);
}

#[test]
fn lines_before_a_too_long_one_are_yielded_first() {
    let mut f = LineFramer::new(4);
    f.push(b(b"ab\nabcdefgh\n"));
    assert_eq!(f.pop(), Ok(Some(b(b"ab\n"))));
    assert_eq!(f.pop(), Err(too_long_line(4)));
}

#[test]
fn too_long_is_sticky_whatever_is_pushed_later() {
    let mut f = LineFramer::new(4);
    f.push(b(b"abcdef"));
    let e = f.pop().unwrap_err();
    f.push(b(b"\nok\n"));
    assert_eq!(f.pop(), Err(e.clone()));
    assert_eq!(f.pop(), Err(e.clone()));
    f.take_rest();
    f.push(b(b"ok\n"));
    assert_eq!(f.pop(), Err(e), "take_rest does not resync");
}

#[test]
fn take_rest_after_an_error_returns_the_unyielded_bytes() {
    let mut f = LineFramer::new(4);
    f.push(b(b"ok\nabcdef"));
    f.push(b(b"gh\nmore\n"));
    assert_eq!(f.pop(), Ok(Some(b(b"ok\n"))));
    assert!(f.pop().is_err());
    f.push(b(b"later"));
    assert_eq!(f.take_rest(), b(b"abcdefgh\nmore\nlater"));
    assert_eq!(f.buffered(), 0);
    assert_eq!(f.take_rest(), Bytes::new());
}

#[test]
fn take_rest_at_eof_returns_the_unfinished_line() {
    let mut f = LineFramer::new(64);
    f.push(b(b"one\ntw"));
    f.push(b(b"o"));
    assert_eq!(pop_all(&mut f).0, [&b"one\n"[..]]);
    assert_eq!(f.take_rest(), b(b"two"));
    assert_eq!(f.buffered(), 0);
    assert_eq!(f.pop(), Ok(None));
}

#[test]
fn a_zero_limit_line_framer_accepts_no_line() {
    let mut f = LineFramer::new(0);
    assert_eq!(f.pop(), Ok(None));
    f.push(b(b"\n"));
    assert_eq!(f.pop(), Err(too_long_line(0)));
}

#[test]
fn an_empty_push_changes_nothing() {
    let mut f = LineFramer::new(8);
    f.push(Bytes::new());
    assert_eq!((f.buffered(), f.pop()), (0, Ok(None)));
    let mut f = LengthPrefixed::new(PrefixWidth::U8, 8);
    f.push(Bytes::new());
    assert_eq!((f.buffered(), f.pop()), (0, Ok(None)));
}

// ---- LengthPrefixed ----

#[test]
fn a_zero_length_frame_is_its_prefix_alone() {
    for (width, prefix) in [
        (PrefixWidth::U8, &[0u8][..]),
        (PrefixWidth::U16, &[0, 0]),
        (PrefixWidth::U32, &[0, 0, 0, 0]),
    ] {
        let mut f = LengthPrefixed::new(width, 16);
        f.push(b(prefix));
        assert_eq!(f.pop(), Ok(Some(b(prefix))), "{width:?}");
        assert_eq!(f.buffered(), 0);
    }
}

#[test]
fn each_prefix_width_reads_a_big_endian_length() {
    let payload = [7u8; 258];
    for (width, prefix) in [
        (PrefixWidth::U8, &[3u8][..]),
        (PrefixWidth::U16, &[1, 2]),
        (PrefixWidth::U32, &[0, 0, 1, 2]),
    ] {
        let len = prefix.iter().fold(0usize, |n, &b| n << 8 | b as usize);
        let mut frame = prefix.to_vec();
        frame.extend_from_slice(&payload[..len]);
        let mut stream = frame.clone();
        stream.extend_from_slice(b"next");
        let mut f = LengthPrefixed::new(width, 1000);
        f.push(b(&stream[..stream.len() - 5]));
        assert_eq!(f.pop(), Ok(None), "{width:?}: one payload byte short");
        f.push(b(&stream[stream.len() - 5..]));
        assert_eq!(f.pop(), Ok(Some(b(&frame))), "{width:?}");
        assert_eq!(f.buffered(), 4);
        assert_eq!(width.bytes(), prefix.len());
    }
}

#[test]
fn a_declared_length_over_the_max_is_rejected_before_the_payload_arrives() {
    let mut f = LengthPrefixed::new(PrefixWidth::U32, 1024);
    f.push(b(&[0, 0]));
    assert_eq!(f.pop(), Ok(None), "half a prefix says nothing yet");
    f.push(b(&[4, 1]));
    let e = FrameError::TooLong {
        kind: MessageKind::Frame,
        limit: 1024,
        seen: 1025,
    };
    assert_eq!(f.pop(), Err(e.clone()));
    assert_eq!(f.buffered(), 4);
    f.push(b(&[0; 1025]));
    assert_eq!(f.pop(), Err(e), "sticky once the payload arrives");
    assert_eq!(f.take_rest().len(), 4 + 1025);
}

#[test]
fn a_declared_length_equal_to_the_max_is_accepted() {
    let mut f = LengthPrefixed::new(PrefixWidth::U8, 2);
    f.push(b(&[2, b'h', b'i', 3]));
    assert_eq!(f.pop(), Ok(Some(b(&[2, b'h', b'i']))));
    assert!(f.pop().is_err());
}

#[test]
fn a_frame_split_across_pushes_is_reassembled() {
    let mut f = LengthPrefixed::new(PrefixWidth::U16, 100);
    for piece in [&[0u8][..], &[5, b'h'], b"el", b"l"] {
        f.push(b(piece));
        assert_eq!(f.pop(), Ok(None));
    }
    f.push(b(&[b'o', 0]));
    assert_eq!(f.pop(), Ok(Some(b(b"\0\x05hello"))));
    assert_eq!(f.pop(), Ok(None));
    assert_eq!(f.take_rest(), b(&[0]));
}

// ---- Shared guarantees ----

#[test]
fn a_message_inside_one_chunk_is_a_zero_copy_slice_of_it() {
    let chunk = b(b"one\ntwo\nthr");
    let mut f = LineFramer::new(64);
    f.push(chunk.clone());
    let one = f.pop().unwrap().unwrap();
    let two = f.pop().unwrap().unwrap();
    assert_eq!(one.as_ptr(), chunk.as_ptr());
    assert_eq!(two.as_ptr(), chunk[4..].as_ptr());
    // A line spanning chunks is copied into one buffer.
    f.push(b(b"ee\n"));
    assert_eq!(f.pop(), Ok(Some(b(b"three\n"))));

    let chunk = b(&[1, b'a', 0, 2, b'b']);
    let mut f = LengthPrefixed::new(PrefixWidth::U8, 8);
    f.push(chunk.clone());
    assert_eq!(f.pop().unwrap().unwrap().as_ptr(), chunk.as_ptr());
    assert_eq!(f.pop().unwrap().unwrap().as_ptr(), chunk[2..].as_ptr());
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        too_long_line(65536).to_string(),
        "a line of more than 65536 bytes without a newline"
    );
    let e = FrameError::TooLong {
        kind: MessageKind::Frame,
        limit: 1024,
        seen: 70000,
    };
    assert_eq!(
        e.to_string(),
        "a length prefix declaring 70000 bytes, more than the limit of 1024"
    );
}

// ---- Every split of a stream gives the same messages ----

/// What a framer yielded from a stream: its messages, the error it stopped at, and the rest.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Bytes>,
    error: Option<FrameError>,
    rest: Bytes,
}

/// Pushes `stream` cut at `cuts` (offsets, any order; empty pieces are pushed too), popping
/// after each push, then takes the rest. Checks on the way what holds for any stream: `buffered`
/// counts exactly the bytes not yet yielded, an error repeats on every later pop, a message that
/// lies inside one piece is a slice of it, and messages plus rest are the stream.
fn run(f: &mut dyn Framer, stream: &Bytes, cuts: &[usize]) -> Outcome {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let (mut messages, mut error) = (Vec::new(), None);
    let (mut pushed, mut yielded) = (0, 0);
    for cut in cuts {
        f.push(stream.slice(pushed..cut));
        let piece_start = pushed;
        pushed = cut;
        loop {
            assert_eq!(f.buffered(), (pushed - yielded) as u64);
            match f.pop() {
                Ok(Some(m)) => {
                    assert!(error.is_none(), "a message after {error:?}");
                    assert!(!m.is_empty(), "an empty message");
                    assert_eq!(m, stream[yielded..yielded + m.len()], "not the stream");
                    if yielded >= piece_start {
                        assert_eq!(m.as_ptr(), stream[yielded..].as_ptr(), "copied");
                    }
                    yielded += m.len();
                    messages.push(m);
                }
                Ok(None) => {
                    assert!(error.is_none(), "Ok(None) after {error:?}");
                    break;
                }
                Err(e) => {
                    assert!(error.is_none() || error == Some(e.clone()), "error changed");
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let rest = f.take_rest();
    assert_eq!(f.buffered(), 0);
    assert_eq!(
        f.pop(),
        error.clone().map_or(Ok(None), Err),
        "take_rest resynced"
    );
    assert_eq!(rest, stream[yielded..], "messages and rest are the stream");
    Outcome {
        messages,
        error,
        rest,
    }
}

/// The line framer's definition, applied to the whole stream at once.
fn model_lines(stream: &[u8], max: u64) -> Outcome {
    let mut messages = Vec::new();
    let mut at = 0;
    loop {
        let line = &stream[at..];
        let window = &line[..line.len().min(max as usize)];
        if let Some(i) = window.iter().position(|&c| c == b'\n') {
            messages.push(b(&line[..=i]));
            at += i + 1;
            continue;
        }
        let error = (line.len() as u64 > max).then(|| too_long_line(max));
        return Outcome {
            messages,
            error,
            rest: b(line),
        };
    }
}

/// The length-prefixed framer's definition, applied to the whole stream at once.
fn model_frames(stream: &[u8], width: PrefixWidth, max: u64) -> Outcome {
    let w = width.bytes();
    let mut messages = Vec::new();
    let mut at = 0;
    loop {
        let frame = &stream[at..];
        let mut error = None;
        if frame.len() >= w {
            let len = frame[..w].iter().fold(0u64, |n, &c| n << 8 | u64::from(c));
            if len > max {
                error = Some(FrameError::TooLong {
                    kind: MessageKind::Frame,
                    limit: max,
                    seen: len,
                });
            } else if frame.len() as u64 >= w as u64 + len {
                let end = w + len as usize;
                messages.push(b(&frame[..end]));
                at += end;
                continue;
            }
        }
        return Outcome {
            messages,
            error,
            rest: b(frame),
        };
    }
}

fn width() -> impl Strategy<Value = PrefixWidth> {
    prop_oneof![
        Just(PrefixWidth::U8),
        Just(PrefixWidth::U16),
        Just(PrefixWidth::U32)
    ]
}

/// Bytes rich in `\n` and `\r`, so that lines of every length occur.
fn line_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![2 => Just(b'\n'), 1 => Just(b'\r'), 8 => any::<u8>()];
    proptest::collection::vec(byte, 0..max)
}

/// Encodes `payload` (under 256 bytes, so any width holds its length) as one frame.
fn frame(width: PrefixWidth, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u64).to_be_bytes()[8 - width.bytes()..].to_vec();
    out.extend_from_slice(payload);
    out
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_split_of_a_byte_stream_gives_the_same_lines(
        stream in line_bytes(300), max in 0u64..40, cuts in cuts(),
    ) {
        let stream = Bytes::from(stream);
        let whole = run(&mut LineFramer::new(max), &stream, &[]);
        let split = run(&mut LineFramer::new(max), &stream, &cuts);
        prop_assert_eq!(&whole, &model_lines(&stream, max));
        prop_assert_eq!(&split, &whole);
    }

    #[test]
    fn every_split_of_a_stream_of_lines_gives_back_those_lines(
        lines in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>().prop_filter("no newline", |&c| c != b'\n'), 0..30),
             any::<bool>()),
            0..20),
        tail in proptest::collection::vec(b'a'..=b'z', 0..5),
        cuts in cuts(),
    ) {
        let lines: Vec<Vec<u8>> = lines.into_iter().map(|(mut l, crlf)| {
            l.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            l
        }).collect();
        let stream = Bytes::from([lines.concat(), tail.clone()].concat());
        let split = run(&mut LineFramer::new(32), &stream, &cuts);
        prop_assert_eq!(&split.messages, &lines);
        prop_assert_eq!(split.error, None);
        prop_assert_eq!(&split.rest, &tail);
    }

    #[test]
    fn every_split_of_a_byte_stream_gives_the_same_frames(
        width in width(), stream in proptest::collection::vec(any::<u8>(), 0..300),
        max in prop_oneof![0u64..300, Just(u64::MAX)], cuts in cuts(),
    ) {
        let stream = Bytes::from(stream);
        let whole = run(&mut LengthPrefixed::new(width, max), &stream, &[]);
        let split = run(&mut LengthPrefixed::new(width, max), &stream, &cuts);
        prop_assert_eq!(&whole, &model_frames(&stream, width, max));
        prop_assert_eq!(&split, &whole);
    }

    #[test]
    fn every_split_of_a_stream_of_frames_gives_back_those_frames(
        width in width(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
        garbage in proptest::collection::vec(any::<u8>(), 0..8),
        max in 0u64..50,
        cuts in cuts(),
    ) {
        let frames: Vec<Vec<u8>> = payloads.iter().map(|p| frame(width, p)).collect();
        let stream = Bytes::from([frames.concat(), garbage].concat());
        let whole = run(&mut LengthPrefixed::new(width, max), &stream, &[]);
        let split = run(&mut LengthPrefixed::new(width, max), &stream, &cuts);
        prop_assert_eq!(&whole, &model_frames(&stream, width, max));
        prop_assert_eq!(&split, &whole);
        // Every frame up to the first one over the limit comes back as it was built.
        let fit = payloads.iter().take_while(|p| p.len() as u64 <= max).count();
        prop_assert!(split.messages.len() >= fit);
        prop_assert_eq!(&split.messages[..fit], &frames[..fit]);
    }
}
