//! The capture format: round trips, replay, and bad input that must give a clear error, never a
//! panic or a huge allocation.

mod support;

use fanout_engine::capture::{
    read_segments, Decoder, Encoder, ErrorKind, Header, Part, Record, Replayer, Run, RunId,
    MAX_RECORD, PREAMBLE_LEN,
};
use fanout_engine::{Bytes, Command, Engine, Event, Instant};
use std::time::Duration;
use support::*;

fn header(cfg: fanout_engine::Config) -> Header {
    Header {
        segment: 0,
        mode: "duplex".into(),
        listen: "127.0.0.1:9000".into(),
        backends: vec!["127.0.0.1:8081".into(), "127.0.0.1:8082".into()],
        config: cfg,
        epoch_unix_ms: 1_795_000_000_000,
        run: Some(RUN),
    }
}

/// The run `recorded_session` is recorded by.
const RUN: Run = Run {
    id: RunId(0x5eed_0000_0000_0000_0000_0000_0000_0001),
    started_unix_ms: 1_795_000_000_000,
};

/// Records a small duplex session through the model driver, as the io driver would.
fn recorded_session() -> (Header, Vec<Record>) {
    let cfg = duplex(1);
    let mut h = Harness::new(cfg.clone());
    let mut records = Vec::new();
    let mut digest = fanout_engine::capture::OutputDigest::default();
    let mut feed = |h: &mut Harness, event: Event| {
        // Keep the model driver's view of the sockets in step, as `Harness::open` does.
        match &event {
            Event::Accepted { conn, .. } => {
                h.socks
                    .entry(fanout_engine::SockId::client(*conn))
                    .or_default()
                    .open = true
            }
            Event::Connected { sock } => {
                let m = h.socks.entry(*sock).or_default();
                (m.connecting, m.open) = (false, true);
            }
            Event::Flushed { sock, bytes } => h.socks.entry(*sock).or_default().queued -= bytes,
            _ => {}
        }
        records.push(Record::Input {
            at: h.now,
            event: event.clone(),
        });
        for cmd in h.handle(event) {
            digest.update(&cmd);
        }
    };
    feed(
        &mut h,
        Event::Accepted {
            conn: fanout_engine::ConnId(1),
            client: "127.0.0.1:5000".into(),
        },
    );
    feed(
        &mut h,
        Event::Connected {
            sock: backend(1, P),
        },
    );
    feed(
        &mut h,
        Event::Connected {
            sock: backend(1, S1),
        },
    );
    h.now = h.now + Duration::from_millis(3);
    feed(
        &mut h,
        Event::Read {
            sock: client(1),
            data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
        },
    );
    feed(&mut h, Event::ReadClosed { sock: client(1) });
    for b in [P, S1] {
        feed(
            &mut h,
            Event::Flushed {
                sock: backend(1, b),
                bytes: 18,
            },
        );
    }
    h.now = h.now + Duration::from_millis(2);
    feed(
        &mut h,
        Event::Read {
            sock: backend(1, P),
            data: Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\nhi"),
        },
    );
    feed(
        &mut h,
        Event::Read {
            sock: backend(1, S1),
            data: Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\nho"),
        },
    );
    for b in [P, S1] {
        feed(
            &mut h,
            Event::ReadClosed {
                sock: backend(1, b),
            },
        );
    }
    feed(
        &mut h,
        Event::Flushed {
            sock: client(1),
            bytes: 21,
        },
    );
    assert_eq!(h.reports.len(), 1, "the session ended");
    records.push(Record::Outputs {
        commands: digest.count(),
        digest: digest.value(),
    });
    (header(cfg), records)
}

fn encode(header: &Header, records: &[Record]) -> Vec<u8> {
    let mut enc = Encoder::default();
    let mut file = enc.header(header).unwrap().to_vec();
    for r in records {
        file.extend_from_slice(enc.record(r).unwrap());
    }
    file
}

fn decode_all(bytes: &[u8]) -> Result<(Header, Vec<Record>), fanout_engine::capture::CaptureError> {
    let mut dec = Decoder::new(bytes)?;
    let header = dec.header().clone();
    let records = dec.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((header, records))
}

fn replay(
    header: &Header,
    records: Vec<Record>,
) -> Result<u64, fanout_engine::capture::Divergence> {
    let mut rp = Replayer::new(Engine::new(header.config.clone()).unwrap());
    for r in records {
        rp.apply(r, |_| {})?;
    }
    Ok(rp.checked())
}

#[test]
fn a_capture_round_trips_and_replays_to_the_recorded_digest() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    let (h2, r2) = decode_all(&file).unwrap();
    assert_eq!((&h2, &r2), (&header, &records));
    assert_eq!(replay(&h2, r2), Ok(1));
}

#[test]
fn replay_detects_a_different_engine_behaviour() {
    let (mut header, records) = recorded_session();
    // Same inputs into an engine with other limits: the outputs (here the report) differ.
    header.config.reports = false;
    let err = replay(&header, records).unwrap_err();
    assert!(err.to_string().contains("the capture recorded"), "{err}");
}

#[test]
fn every_truncation_is_a_clear_error_naming_an_offset() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    let boundaries = boundaries(&header, &records);
    for cut in 0..file.len() {
        match decode_all(&file[..cut]) {
            Ok((_, got)) => {
                let at = boundaries.iter().position(|&b| b == cut);
                assert_eq!(
                    at.map(|n| &records[..n]),
                    Some(&got[..]),
                    "cut at {cut} decoded"
                );
            }
            Err(err) => {
                assert!(!boundaries.contains(&cut), "cut at boundary {cut}: {err}");
                assert!(
                    err.offset <= cut as u64,
                    "offset {} past the cut {cut}",
                    err.offset
                );
                assert!(err
                    .to_string()
                    .starts_with(&format!("at byte {}", err.offset)));
                let clear = matches!(err.kind, ErrorKind::Empty | ErrorKind::Truncated { .. });
                assert!(clear, "cut at {cut}: {err}");
                assert!(err.is_truncation());
            }
        }
    }
}

/// Where each record of a capture file starts, and where the last one ends.
fn boundaries(header: &Header, records: &[Record]) -> Vec<usize> {
    (0..=records.len())
        .map(|i| encode(header, &records[..i]).len())
        .collect()
}

#[test]
fn a_capture_torn_at_any_byte_reads_every_complete_record_and_names_the_tear() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    let boundaries = boundaries(&header, &records);
    for cut in 0..file.len() {
        let read = read_segments([("c.fcap".to_string(), &file[..cut])]);
        if cut < boundaries[0] {
            // Nothing to read without the whole header: an error, not a tear.
            let err = read.unwrap_err();
            assert!(err.starts_with("c.fcap: at byte "), "cut at {cut}: {err}");
            continue;
        }
        let capture = read.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // The complete records are those whose end is at or before the cut.
        let complete = boundaries[1..].iter().filter(|&&end| end <= cut).count();
        assert_eq!(capture.records, records[..complete], "cut at {cut}");
        assert_eq!(capture.header, header);
        assert_eq!(capture.extent.files, ["c.fcap"]);
        match &capture.extent.torn {
            None => assert!(boundaries.contains(&cut), "cut at {cut} inside a record"),
            Some(torn) => {
                assert_eq!(
                    (torn.records, torn.offset),
                    (complete as u64, boundaries[complete] as u64),
                    "cut at {cut}"
                );
                let part = if cut - boundaries[complete] < 4 {
                    Part::Length
                } else {
                    Part::Record
                };
                assert!(
                    matches!(torn.kind, ErrorKind::Truncated { part: p, .. } if p == part),
                    "cut at {cut}: {torn}"
                );
                assert!(
                    torn.to_string().starts_with(&format!(
                        "c.fcap: torn after {complete} complete records at byte {}: the file ends inside the ",
                        boundaries[complete]
                    )),
                    "{torn}"
                );
            }
        }
    }
}

#[test]
fn a_later_file_torn_at_any_byte_ends_the_capture_there() {
    let (header, records) = recorded_session();
    let (early, late) = records.split_at(4);
    let first = encode(&header, early);
    let second_header = Header {
        segment: 1,
        ..header.clone()
    };
    let second = encode(&second_header, late);
    let boundaries = boundaries(&second_header, late);
    for cut in 0..second.len() {
        let files = [
            ("c.fcap".to_string(), &first[..]),
            ("c.fcap.1".to_string(), &second[..cut]),
            ("c.fcap.2".to_string(), &first[..]),
        ];
        let capture = read_segments(files).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = boundaries[1..].iter().filter(|&&end| end <= cut).count();
        assert_eq!(
            capture.records.len(),
            early.len() + complete,
            "cut at {cut}"
        );
        let torn = capture.extent.torn.as_ref();
        assert_eq!(
            torn.map(|t| (t.file.as_str(), t.records)),
            (!boundaries.contains(&cut)).then_some(("c.fcap.1", complete as u64)),
            "cut at {cut}"
        );
        if torn.is_some() {
            // Nothing after a tear is read: it could only follow a gap.
            assert_eq!(capture.extent.skipped.len(), 1, "cut at {cut}");
            assert_eq!(capture.extent.skipped[0].file, "c.fcap.2");
        }
    }
}

#[test]
fn files_of_another_run_are_left_out_with_the_reason() {
    let (header, records) = recorded_session();
    let (early, late) = records.split_at(4);
    let ours = encode(&header, early);
    let other_run = Header {
        segment: 1,
        run: Some(Run {
            id: RunId(7),
            ..RUN
        }),
        ..header.clone()
    };
    let next = Header {
        segment: 1,
        ..header.clone()
    };
    let theirs = encode(&other_run, late);
    let files = [
        ("c.fcap".to_string(), &ours[..]),
        ("c.fcap.1".to_string(), &theirs[..]),
        ("c.fcap.2".to_string(), &encode(&next, late)[..]),
    ];
    let capture = read_segments(files).unwrap();
    assert_eq!(capture.records, early);
    assert_eq!(capture.extent.files, ["c.fcap"]);
    let skipped: Vec<String> = capture
        .extent
        .skipped
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        skipped,
        [
            format!(
                "c.fcap.1 was not read: it belongs to another run (run {}), not to this capture's (run {})",
                RunId(7),
                RUN.id
            ),
            "c.fcap.2 was not read: it comes after c.fcap.1, which is not part of this capture"
                .to_string(),
        ]
    );
    assert_eq!(capture.extent.torn, None);

    // Files of schemas before run ids: a run's files share the instant its proxy started.
    let legacy = |segment, epoch_unix_ms| Header {
        segment,
        epoch_unix_ms,
        run: None,
        ..header.clone()
    };
    let files = [
        ("c.fcap".to_string(), encode(&legacy(0, 1000), early)),
        ("c.fcap.1".to_string(), encode(&legacy(1, 2000), late)),
    ];
    let capture = read_segments(files.iter().map(|(n, b)| (n.clone(), &b[..]))).unwrap();
    assert_eq!(capture.records, early);
    assert!(
        capture.extent.skipped[0]
            .why
            .starts_with("it belongs to another run"),
        "{:?}",
        capture.extent.skipped
    );
    // And a file out of place in its own run.
    let files = [
        ("c.fcap".to_string(), encode(&header, early)),
        (
            "c.fcap.1".to_string(),
            encode(
                &Header {
                    segment: 2,
                    ..header.clone()
                },
                late,
            ),
        ),
    ];
    let capture = read_segments(files.iter().map(|(n, b)| (n.clone(), &b[..]))).unwrap();
    assert_eq!(
        capture.extent.skipped[0].why,
        "it is file 2 of this capture, where file 1 belongs"
    );
    // The first file must be the capture's first.
    let err = read_segments([("c.fcap.1".to_string(), &theirs[..])]).unwrap_err();
    assert!(err.contains("not its first"), "{err}");
}

#[test]
fn corrupt_input_is_described_in_sentences_not_debug_text() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    let records_at = encode(&header, &[]).len();
    let first_len =
        u32::from_le_bytes(file[records_at..records_at + 4].try_into().unwrap()) as usize;
    let mut bad_width = file.clone();
    bad_width[records_at + 4..records_at + 12].fill(0xff);
    let mut bad_variant = file.clone();
    bad_variant[records_at + 4] = 9; // Record has two variants
    let mut short = file[..records_at].to_vec();
    short.extend_from_slice(&(first_len as u32 - 3).to_le_bytes());
    short.extend_from_slice(&file[records_at + 4..records_at + 4 + first_len - 3]);
    let mut long = file[..records_at].to_vec();
    long.extend_from_slice(&(first_len as u32 + 2).to_le_bytes());
    long.extend_from_slice(&file[records_at + 4..records_at + 4 + first_len]);
    long.extend_from_slice(&[0, 0]);
    let mut bad_header = file.clone();
    bad_header[PREAMBLE_LEN] = 0xff; // segment: a width marker that does not exist
    for (what, bytes, says) in [
        ("bad width", bad_width, "the record does not decode: a number is stored with a width marker that does not exist"),
        ("bad variant", bad_variant, "the record does not decode: invalid value: integer `9`, expected variant index 0 <= i < 2"),
        ("short", short, "the record does not decode: it ends in the middle of a value"),
        ("long", long, "the record does not decode: 2 bytes are left over after its last value"),
        ("bad header", bad_header, "the header does not decode: a number is stored with a width marker"),
    ] {
        let err = decode_all(&bytes).unwrap_err().to_string();
        assert!(err.contains(says), "{what}: {err}");
        assert!(!err.contains('{') && !err.contains("Some("), "{what}: {err}");
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    for i in 0..file.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut bad = file.clone();
            bad[i] ^= mask;
            // Either a clear error or a capture that decodes (a flipped payload byte); replay of
            // a decodable one may diverge but must not panic.
            if let Ok((h, r)) = decode_all(&bad) {
                if let Ok(engine) = Engine::new(h.config.clone()) {
                    let mut rp = Replayer::new(engine);
                    for rec in r {
                        let _ = rp.apply(rec, |_| {});
                    }
                }
            }
        }
    }
}

#[test]
fn lengths_claiming_gigabytes_are_refused_before_allocating() {
    let (header, _) = recorded_session();
    let mut file = encode(&header, &[]);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(b"tiny");
    let err = decode_all(&file).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::RecordTooLarge(_)), "{err}");
    let mut huge_header = encode(&header, &[]);
    huge_header[PREAMBLE_LEN - 4..PREAMBLE_LEN].copy_from_slice(&(MAX_RECORD * 8).to_le_bytes());
    let err = decode_all(&huge_header).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::HeaderTooLarge(_)), "{err}");
    // A record whose inner Bytes length claims more than the record holds.
    let mut file = encode(&header, &[]);
    let mut body = vec![0u8, 0]; // Record::Input, at = 0
    body.extend_from_slice(&[3, 0, 1, 1]); // Event::Read, conn 1, client
    body.extend_from_slice(&[0xfb, 0xff, 0xff, 0xff, 0x7f]); // a varint length near 2^31
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    assert!(decode_all(&file).is_err());
}

#[test]
fn empty_wrong_magic_and_wrong_versions_say_what_is_wrong() {
    let (header, records) = recorded_session();
    let file = encode(&header, &records);
    assert_eq!(decode_all(&[]).unwrap_err().kind, ErrorKind::Empty);
    assert_eq!(
        decode_all(b"GET / HTTP/1.1\r\n").unwrap_err().kind,
        ErrorKind::BadMagic
    );
    let mut v2 = file.clone();
    v2[8] = 2;
    assert_eq!(
        decode_all(&v2).unwrap_err().kind,
        ErrorKind::UnsupportedFormat(2)
    );
    let mut s9 = file.clone();
    s9[10] = 9;
    assert_eq!(
        decode_all(&s9).unwrap_err().kind,
        ErrorKind::UnsupportedSchema(9)
    );
    let mut fp = file.clone();
    fp[12] ^= 1;
    assert!(matches!(
        decode_all(&fp).unwrap_err().kind,
        ErrorKind::FingerprintMismatch { .. }
    ));
}

#[test]
fn the_schema_1_golden_capture_still_decodes_and_replays() {
    // tests/captures/duplex-session.fcap was written by `recorded_session` with schema 1 (before
    // interceptors). Schema 2 reads it with the interceptor limits at their defaults, and the
    // engine still reproduces its output digest: old captures keep replaying.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session.fcap"
    );
    let golden = std::fs::read(path).expect("golden capture present");
    assert_eq!(u16::from_le_bytes([golden[10], golden[11]]), 1, "schema 1");
    let (h, r) = decode_all(&golden).unwrap();
    let (mut header, records) = recorded_session();
    // Recorded before the secondaries' cap existed: read without one.
    header.config.secondary_memory = fanout_engine::capture::v2::NO_CAP;
    assert_eq!(
        h,
        Header {
            run: None,
            ..header
        },
        "the schema 1 header reads as today's header, with no run"
    );
    assert_eq!(r, records);
    assert_eq!(replay(&h, r), Ok(1));
}

#[test]
fn the_schema_2_golden_capture_still_decodes_and_replays() {
    // tests/captures/duplex-session-v2.fcap is `recorded_session` in schema 2 (before run ids and
    // the secondaries' cap): it reads with no run and no cap, as the engine that recorded it ran.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session-v2.fcap"
    );
    let golden = std::fs::read(path).expect("golden capture present");
    assert_eq!(u16::from_le_bytes([golden[10], golden[11]]), 2, "schema 2");
    let (h, r) = decode_all(&golden).unwrap();
    let (mut header, records) = recorded_session();
    header.config.secondary_memory = fanout_engine::capture::v2::NO_CAP;
    assert_eq!(
        h,
        Header {
            run: None,
            ..header
        },
        "read as today's header, with no run"
    );
    assert_eq!(r, records);
    assert_eq!(replay(&h, r), Ok(1));
}

#[test]
fn the_golden_capture_encodes_byte_for_byte() {
    // tests/captures/duplex-session-v3.fcap is `recorded_session` in today's schema. If this
    // fails the format changed: bump FORMAT_VERSION or SCHEMA_VERSION and keep reading the old
    // one, never silently reinterpret old files.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session-v3.fcap"
    );
    let (header, records) = recorded_session();
    if std::env::var_os("FANOUT_BLESS").is_some() {
        std::fs::write(path, encode(&header, &records)).unwrap();
    }
    let golden = std::fs::read(path).expect("golden capture present (FANOUT_BLESS=1 writes it)");
    assert_eq!(
        golden,
        encode(&header, &records),
        "the encoding of the golden session changed"
    );
    let (h, r) = decode_all(&golden).unwrap();
    assert_eq!(replay(&h, r), Ok(1));
}

#[test]
fn output_digest_tells_commands_apart() {
    let sock = client(1);
    let digests: Vec<u64> = [
        Command::Close { sock },
        Command::Shutdown { sock },
        Command::Write {
            sock,
            data: Bytes::from_static(b"a"),
        },
        Command::Write {
            sock,
            data: Bytes::from_static(b"b"),
        },
        Command::Write {
            sock: backend(1, P),
            data: Bytes::from_static(b"a"),
        },
    ]
    .iter()
    .map(|c| {
        let mut d = fanout_engine::capture::OutputDigest::default();
        d.update(c);
        d.value()
    })
    .collect();
    let mut unique = digests.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), digests.len());
    let _ = Instant::ZERO;
}

#[test]
fn a_schema_2_capture_of_sessions_cut_short_replays_to_the_digest_its_engine_recorded() {
    // tests/captures/older-engines/duplex-cut-short-v2.fcap was recorded by the engine before
    // schema 3 (an idle timeout, a client reset mid-answer, a drain deadline), whose reports said
    // closed-early for all three. Today's engine says idle-timeout, client-gone and
    // drain-timeout; replayed as schema 2, reports hash in the old words and the digest holds.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/older-engines/duplex-cut-short-v2.fcap"
    );
    let golden = std::fs::read(path).expect("capture present");
    let dec = Decoder::new(&golden[..]).unwrap();
    assert_eq!(dec.schema(), 2);
    let (header, records) = decode_all(&golden).unwrap();
    let engine = || Engine::new(header.config.clone()).unwrap();
    let mut outcomes = Vec::new();
    let mut rp = Replayer::for_schema(engine(), 2);
    for r in records.clone() {
        rp.apply(r, |c| {
            if let Command::Report(r) = c {
                outcomes.push(r.backends[0].outcome);
            }
        })
        .expect("the schema 2 digest holds");
    }
    assert_eq!(rp.checked(), 1);
    use fanout_engine::Outcome::*;
    assert_eq!(outcomes, [IdleTimeout, ClientGone, DrainTimeout]);
    // Hashed in today's words, the same run is another digest.
    let mut today = Replayer::new(engine());
    let diverged = records.into_iter().try_for_each(|r| today.apply(r, |_| {}));
    assert!(diverged.is_err());
}

/// Replay runs the contract checker over the recorded inputs and the replayed commands: a
/// recording whose driver fed a `Timeout` before the engine's deadline is named, not passed.
#[test]
fn a_replay_names_the_first_promise_of_the_contract_broken() {
    let mut rp = Replayer::new(Engine::new(relay()).unwrap());
    let accepted = Event::Accepted {
        conn: fanout_engine::ConnId(1),
        client: "10.0.0.1:1".into(),
    };
    let input = |at, event| Record::Input { at, event };
    rp.apply(input(Instant::ZERO, accepted), |_| {}).unwrap();
    assert_eq!(rp.contract(), None);
    let early = Instant::from_nanos(1);
    rp.apply(input(early, Event::Timeout), |_| {}).unwrap();
    let broken = rp.contract().expect("a Timeout before its deadline");
    assert_eq!(broken.rule, fanout_engine::contract::Rule::Timer);
}
