//! The capture format: round trips, replay, and bad input that must give a clear error, never a
//! panic or a huge allocation.

mod support;

use fanout_engine::capture::{
    Decoder, Encoder, ErrorKind, Header, Record, Replayer, MAX_RECORD, PREAMBLE_LEN,
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
    }
}

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
    // Cutting exactly at a record boundary leaves a shorter, valid capture.
    let mut boundaries = vec![encode(&header, &[]).len()];
    for i in 1..=records.len() {
        boundaries.push(encode(&header, &records[..i]).len());
    }
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
            }
        }
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
    // Recorded before the secondary cap existed: read without one.
    header.config.secondary_memory = fanout_engine::capture::v2::NO_CAP;
    assert_eq!(h, header, "the schema 1 header reads as today's header");
    assert_eq!(r, records);
    assert_eq!(replay(&h, r), Ok(1));
}

#[test]
fn the_schema_2_golden_capture_still_decodes_and_replays_without_the_secondary_cap() {
    // tests/captures/duplex-session-v2.fcap is `recorded_session` in schema 2, whose `Config`
    // had no `secondary_memory`: it reads with no cap, as the engine that recorded it ran.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session-v2.fcap"
    );
    let golden = std::fs::read(path).expect("golden capture present");
    assert_eq!(u16::from_le_bytes([golden[10], golden[11]]), 2, "schema 2");
    let (h, r) = decode_all(&golden).unwrap();
    let (mut header, records) = recorded_session();
    header.config.secondary_memory = fanout_engine::capture::v2::NO_CAP;
    assert_eq!(h, header, "the schema 2 header reads as today's header");
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
