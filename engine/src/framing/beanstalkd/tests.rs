//! Each framing rule of beanstalkd, pinned by a stream that shows it; then split invariance and
//! nothing lost over any stream, split anywhere.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;

/// Every piece of `stream` pushed whole, and what is left.
fn pieces(stream: &[u8]) -> (Vec<Request>, Bytes) {
    pieces_split(stream, &[])
}

/// Every piece of `stream` pushed in chunks cut at `cuts`, popping after each push.
fn pieces_split(stream: &[u8], cuts: &[usize]) -> (Vec<Request>, Bytes) {
    let mut f = RequestFramer::new(10);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    for cut in cuts {
        f.push(Bytes::copy_from_slice(&stream[at..cut]));
        at = cut;
        while let Some(p) = f.pop() {
            out.push(p);
        }
    }
    (out, f.take_rest())
}

fn answers(stream: &[u8]) -> u32 {
    pieces(stream).0.iter().map(Request::answers).sum()
}

#[test]
fn pipelined_commands_are_one_piece_each() {
    let (p, rest) = pieces(b"use jobs\r\nstats\r\ndelete 7\r\n");
    assert_eq!(p.len(), 3);
    assert_eq!(
        p[0],
        Request::Command {
            line: Bytes::from_static(b"use jobs\r\n"),
            command: Command::Use {
                tube: "jobs".into()
            }
        }
    );
    assert!(matches!(
        p[2],
        Request::Command {
            command: Command::Job {
                verb: JobVerb::Delete,
                id: 7
            },
            ..
        }
    ));
    assert!(rest.is_empty());
}

#[test]
fn a_put_comes_whole_with_its_body_and_the_two_bytes_after_it() {
    let (p, _) = pieces(b"put 1 300 60 5\r\nhello\r\nstats\r\n");
    assert_eq!(
        p[0],
        Request::Put {
            line: Bytes::from_static(b"put 1 300 60 5\r\n"),
            put: Put {
                pri: 1,
                delay: 300,
                ttr: 60,
                bytes: 5
            },
            body: Bytes::from_static(b"hello\r\n"),
        }
    );
    assert_eq!(p.len(), 2);
    // A body not followed by \r\n is still exactly 5 + 2 bytes: EXPECTED_CRLF, then commands.
    let (p, _) = pieces(b"put 0 0 1 1\r\nabcstats\r\n");
    assert!(matches!(&p[0], Request::Put { body, .. } if &body[..] == b"abc"));
    assert!(matches!(&p[1], Request::Command { line, .. } if &line[..] == b"stats\r\n"));
}

#[test]
fn a_malformed_put_line_leaves_its_body_to_be_read_as_commands() {
    for line in [
        &b"put 1 2 3\r\n"[..],
        b"put 1 2 3 x\r\n",
        b"put 1 2 3 4 \r\n",
        b"put -1 2 3 4\r\n",
        b"put 4294967296 0 0 1\r\n",
        b"put 1 2 3 4x\r\n",
    ] {
        let stream = [line, b"stats\r\n"].concat();
        let (p, _) = pieces(&stream);
        assert_eq!(p.len(), 2, "{:?}", String::from_utf8_lossy(line));
        assert!(matches!(
            &p[0],
            Request::Command {
                command: Command::Other,
                ..
            }
        ));
        assert_eq!(answers(&stream), 2);
    }
}

#[test]
fn a_body_over_the_max_job_size_is_thrown_away_then_answered_once() {
    // max job size 10: 11 bytes + 2 thrown away, even with garbage after the size.
    let stream = b"put 0 0 1 11 trailing\r\n0123456789\r\n\r\nstats\r\n";
    let (p, _) = pieces_split(stream, &[25, 30]);
    assert!(matches!(&p[0], Request::PutTooBig { bytes: 11, .. }));
    let discarded: Vec<u8> = p[1..p.len() - 1]
        .iter()
        .flat_map(|r| r.parts()[0].to_vec())
        .collect();
    assert_eq!(discarded, b"0123456789\r\n\r".to_vec());
    assert_eq!(
        p.iter().map(Request::answers).collect::<Vec<_>>(),
        [0, 0, 0, 1, 1]
    );
    assert!(matches!(
        &p[p.len() - 2],
        Request::Discard {
            ends: Some(Discarded::TooBig),
            ..
        }
    ));
    // Trailing garbage after a size within the limit is BAD_FORMAT, no body.
    assert_eq!(answers(b"put 0 0 1 2 x\r\nab\r\n"), 2);
}

#[test]
fn a_line_longer_than_the_buffer_is_thrown_away_window_by_window_and_answered_once() {
    let mut stream = vec![b'a'; 500];
    stream.extend_from_slice(b"\r\nstats\r\n");
    let (p, _) = pieces(&stream);
    // 224 + 224 thrown away, then the window holding the end: 52 + 2.
    assert_eq!(p.len(), 4);
    assert_eq!(p[0].len(), 224);
    assert_eq!(p[1].len(), 224);
    assert!(
        matches!(&p[2], Request::Discard { bytes, ends: Some(Discarded::LongLine) } if bytes.len() == 54)
    );
    assert_eq!(answers(&stream), 2);
}

#[test]
fn a_line_of_exactly_224_bytes_is_a_command_and_of_225_is_too_long() {
    let line = |n: usize| {
        let mut l = b"use ".to_vec();
        l.resize(n - 2, b'x');
        l.extend_from_slice(b"\r\n");
        l
    };
    let (p, _) = pieces(&line(224));
    assert!(matches!(&p[..], [Request::Command { line, .. }] if line.len() == 224));
    // 225: the \r is the buffer's 224th byte, which the server does not look at; the window is
    // thrown away and the lone \n after it does not end the line: the next \r\n does.
    let stream = [line(225), b"stats\r\nstats\r\n".to_vec()].concat();
    let (p, _) = pieces(&stream);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        matches!(&p[1], Request::Discard { bytes, ends: Some(Discarded::LongLine) } if &bytes[..] == b"\nstats\r\n")
    );
    assert_eq!(answers(&stream), 2);
}

#[test]
fn only_the_first_carriage_return_of_a_window_can_end_a_line() {
    // "a\rb" has a \r not followed by \n: no line end in this window until it fills.
    let mut f = RequestFramer::new(10);
    f.push(Bytes::from_static(b"a\rbc\r\nstats\r\n"));
    assert_eq!(f.pop(), None);
    f.push(Bytes::from(vec![b'z'; 300]));
    f.push(Bytes::from_static(b"\r\nstats\r\n"));
    let mut got = Vec::new();
    while let Some(p) = f.pop() {
        got.push(p);
    }
    assert_eq!(got.iter().map(Request::answers).sum::<u32>(), 2);
}

#[test]
fn a_nul_byte_makes_a_line_bad_format_even_for_put() {
    let (p, _) = pieces(b"put 0 0 1 1\0\r\nx\r\n");
    assert!(matches!(
        &p[0],
        Request::Command {
            command: Command::Other,
            ..
        }
    ));
    assert_eq!(p.len(), 2);
}

#[test]
fn quit_ends_what_the_server_reads() {
    let (p, _) = pieces(b"quitnow\r\nstats\r\n");
    assert!(matches!(
        &p[0],
        Request::Command {
            command: Command::Quit,
            ..
        }
    ));
    assert_eq!(p[1], Request::AfterQuit(Bytes::from_static(b"stats\r\n")));
    assert_eq!(answers(b"quit\r\nstats\r\n"), 0);
}

#[test]
fn the_used_tube_follows_valid_use_commands_only() {
    let mut f = RequestFramer::default();
    f.push(Bytes::from_static(b"use a-b\r\nuse -x\r\nuse  sp\r\n"));
    while f.pop().is_some() {}
    assert_eq!(f.used_tube(), "a-b");
    assert!(is_valid_tube(&[b'x'; 200]) && !is_valid_tube(&[b'x'; 201]));
}

#[test]
fn release_and_job_commands_parse_as_the_server_does() {
    let cmd = |s: &[u8]| match pieces(s).0.remove(0) {
        Request::Command { command, .. } => command,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        cmd(b"release 5 10 3600\r\n"),
        Command::Release {
            id: 5,
            pri: 10,
            delay: 3600
        }
    );
    assert_eq!(cmd(b"release 5 10 3600 \r\n"), Command::Other);
    assert_eq!(
        cmd(b"release 5  10   3600\r\n"),
        cmd(b"release 5 10 3600\r\n")
    );
    assert_eq!(cmd(b"peek 18446744073709551616\r\n"), Command::Other);
    assert_eq!(
        cmd(b"kick-job 3\r\n"),
        Command::Job {
            verb: JobVerb::KickJob,
            id: 3
        }
    );
    assert_eq!(cmd(b"peek-ready\r\n"), Command::Other);
    assert_eq!(cmd(b"bury 2 1\r\n"), Command::Bury { id: 2, pri: 1 });
}

#[test]
fn responses_come_whole_with_their_bodies() {
    let mut f = ResponseFramer::new(1 << 20);
    let stream = b"INSERTED 12\r\nRESERVED 12 5\r\nhello\r\nOK 3\r\n---\r\nUSING t\r\nBURIED 4\r\nBURIED\r\nNOT_FOUND\r\n";
    for b in stream {
        f.push(Bytes::copy_from_slice(&[*b]));
    }
    let mut kinds = Vec::new();
    while let Some(r) = f.pop().unwrap() {
        kinds.push(r.kind);
    }
    assert_eq!(
        kinds,
        [
            ResponseKind::Inserted(12),
            ResponseKind::Reserved { id: 12 },
            ResponseKind::Ok,
            ResponseKind::Using("t".into()),
            ResponseKind::BuriedId(4),
            ResponseKind::Word("BURIED".into()),
            ResponseKind::Word("NOT_FOUND".into()),
        ]
    );
    let mut bad = ResponseFramer::new(4);
    bad.push(Bytes::from_static(b"FOUND 1 5\r\nhello\r\n"));
    assert!(matches!(bad.pop(), Err(ResponseError::BadLength { .. })));
    assert!(bad.pop().is_err(), "desync is sticky");
}

/// Streams with beanstalkd's interesting bytes: commands, puts (good, malformed, too big),
/// stray \r and \n, NULs, long runs.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"put 0 0 1 3\r\n".to_vec()),
        Just(b"put 1 2 3 12\r\n".to_vec()),
        Just(b"put 1 2 3 x\r\n".to_vec()),
        Just(b"use tube\r\n".to_vec()),
        Just(b"quit\r\n".to_vec()),
        Just(b"stats\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(vec![0u8]),
        (1usize..300).prop_map(|n| vec![b'q'; n]),
        proptest::collection::vec(any::<u8>(), 1..20),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// `pieces` with each run of discarded bytes, and the bytes after `quit`, as one piece: they are
/// yielded as they arrive, so only where such a run ends, and why, is independent of the splits.
fn merged(pieces: &[Request]) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    for p in pieces {
        if let (
            Some(Request::Discard {
                bytes: acc,
                ends: None,
            }),
            Request::Discard { bytes, ends },
        ) = (out.last_mut(), p)
        {
            *acc = [&acc[..], &bytes[..]].concat().into();
            if let Some(Request::Discard { ends: e, .. }) = out.last_mut() {
                *e = *ends;
            }
            continue;
        }
        if let (Some(Request::AfterQuit(acc)), Request::AfterQuit(bytes)) = (out.last_mut(), p) {
            *acc = [&acc[..], &bytes[..]].concat().into();
            continue;
        }
        out.push(p.clone());
    }
    out
}

proptest! {
    #[test]
    fn requests_are_split_invariant_and_lose_nothing(
        stream in stream(),
        cuts in proptest::collection::vec(0usize..2_000, 0..30),
    ) {
        let whole = pieces(&stream);
        let split = pieces_split(&stream, &cuts);
        prop_assert_eq!(merged(&whole.0), merged(&split.0));
        prop_assert_eq!(&whole.1, &split.1);
        let mut again: Vec<u8> = whole.0.iter().flat_map(|p| p.parts().map(|b| b.to_vec()).concat()).collect();
        again.extend_from_slice(&whole.1);
        prop_assert_eq!(again, stream);
        prop_assert!(whole.0.iter().all(|p| !p.is_empty()));
    }
}

/// What a client asks in the tap's property test, and what the server answers.
#[derive(Clone, Debug)]
enum Op {
    Use(String),
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Vec<u8>,
    },
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    Stats,
    Reserve,
    Delete(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}".prop_map(Op::Use),
        (
            0u32..5,
            0u32..200,
            0u32..100,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(pri, delay, ttr, body)| Op::Put {
                pri,
                delay,
                ttr,
                body
            }),
        (1u64..1000, 0u32..5, 0u32..200).prop_map(|(id, pri, delay)| Op::Release {
            id,
            pri,
            delay
        }),
        Just(Op::Stats),
        Just(Op::Reserve),
        (1u64..1000).prop_map(Op::Delete),
    ]
}

/// The op's request bytes, the server's answer, and the record the tap owes for it (archiving
/// from `after` seconds on), given the tube in use and the next job id.
fn exchange(
    op: &Op,
    after: u32,
    tube: &mut String,
    next_id: &mut u64,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    match op {
        Op::Use(t) => {
            tube.clone_from(t);
            (
                format!("use {t}\r\n").into(),
                format!("USING {t}\r\n").into(),
                vec![],
            )
        }
        Op::Put {
            pri,
            delay,
            ttr,
            body,
        } => {
            *next_id += 1;
            let mut req = format!("put {pri} {delay} {ttr} {}\r\n", body.len()).into_bytes();
            req.extend_from_slice(body);
            req.extend_from_slice(b"\r\n");
            let mut record = Vec::new();
            if *delay >= after {
                record =
                    format!("P {next_id} {pri} {delay} {ttr} {tube} {}\n", body.len()).into_bytes();
                record.extend_from_slice(body);
            }
            (req, format!("INSERTED {next_id}\r\n").into(), record)
        }
        Op::Release { id, pri, delay } => (
            format!("release {id} {pri} {delay}\r\n").into(),
            b"RELEASED\r\n".to_vec(),
            if *delay >= after {
                format!("R {id} {pri} {delay}\n").into()
            } else {
                vec![]
            },
        ),
        Op::Stats => (
            b"stats\r\n".to_vec(),
            b"OK 5\r\na\r\nb\n\r\n".to_vec(),
            vec![],
        ),
        Op::Reserve => (
            b"reserve\r\n".to_vec(),
            b"RESERVED 7 4\r\nRE\r\n\r\n".to_vec(),
            vec![],
        ),
        Op::Delete(id) => (
            format!("delete {id}\r\n").into(),
            b"NOT_FOUND\r\n".to_vec(),
            vec![],
        ),
    }
}

/// Feeds `bytes` to `f` in chunks cut at the offsets `cuts` picks.
fn chunked(bytes: &[u8], cuts: &[usize], mut f: impl FnMut(Bytes)) {
    let mut at = 0;
    for &c in cuts {
        let end = (at + c % 64 + 1).min(bytes.len());
        if at < end {
            f(Bytes::copy_from_slice(&bytes[at..end]));
        }
        at = end;
    }
    if at < bytes.len() {
        f(Bytes::copy_from_slice(&bytes[at..]));
    }
}

proptest! {
    #[test]
    fn the_tap_owes_one_record_per_far_future_job_beanstalkd_took_in_answer_order(
        ops in proptest::collection::vec(op(), 0..40),
        after in 1u32..150,
        cuts in proptest::collection::vec(any::<usize>(), 0..60),
        lockstep in any::<bool>(),
    ) {
        let (mut tube, mut next_id) = ("default".to_string(), 0u64);
        let exchanges: Vec<_> = ops.iter().map(|op| exchange(op, after, &mut tube, &mut next_id)).collect();
        let want: Vec<u8> = exchanges.iter().flat_map(|(_, _, r)| r.clone()).collect();
        let mut tap = Tap::new(after, 1 << 16);
        if lockstep {
            // Each answer right after its request.
            for (req, ans, _) in &exchanges {
                chunked(req, &cuts, |b| tap.client(b));
                chunked(ans, &cuts, |b| assert_eq!(tap.server(b), None));
            }
        } else {
            // Fully pipelined: every request, then every answer.
            let reqs: Vec<u8> = exchanges.iter().flat_map(|(q, _, _)| q.clone()).collect();
            let answers: Vec<u8> = exchanges.iter().flat_map(|(_, a, _)| a.clone()).collect();
            chunked(&reqs, &cuts, |b| tap.client(b));
            chunked(&answers, &cuts, |b| { tap.server(b); });
        }
        prop_assert_eq!(tap.lost(), None);
        prop_assert_eq!(tap.take_records(), want);
    }
}

#[test]
fn an_answer_nobody_asked_for_stops_the_tap() {
    let mut tap = Tap::new(10, 100);
    tap.client(Bytes::from_static(b"stats\r\n"));
    assert_eq!(tap.server(Bytes::from_static(b"OK 1\r\nx\r\n")), None);
    assert_eq!(
        tap.server(Bytes::from_static(b"DELETED\r\n")),
        Some(&Lost::UnaskedAnswer)
    );
    tap.client(Bytes::from_static(b"put 0 99 1 1\r\nx\r\n"));
    tap.server(Bytes::from_static(b"INSERTED 5\r\n"));
    assert!(!tap.has_records(), "a lost tap archives nothing");
}
