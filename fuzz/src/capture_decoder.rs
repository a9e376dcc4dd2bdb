//! Fuzz target `capture_decoder`: raw bytes as a capture file.
//!
//! The decoder must never panic and must bound what it allocates (libFuzzer's `-rss_limit_mb`
//! catches an unbounded allocation); every error must point inside the input. The whole-capture
//! reader takes the input as one file and as two (the input after itself, which must never be
//! read as one capture: a file is segment 0 or it is not): a tear must lie inside the input and
//! follow every complete record, and a file left out must be named with a reason. What decodes must
//! survive a round trip through the [`Encoder`], and is then replayed into an engine built from
//! the header's configuration: the replay may diverge from the recorded digests (the bytes are
//! arbitrary) but must not panic. Raw bytes suit this target: the format is bytes, and the seed
//! corpus (the golden capture and mutations of it) gives the fuzzer valid structure to mutate.

use fanout_engine::capture::{
    read_segments, CaptureError, Decoder, Encoder, Record, Replayer, SCHEMA_VERSION,
};
use fanout_engine::{Engine, Event, Instant};

/// Secondaries above which a decoded configuration is not replayed: every accept would open
/// that many connections, which is slow without finding anything new.
const MAX_REPLAY_SECONDARIES: u16 = 8;

/// Records replayed at most per input.
const MAX_REPLAY_RECORDS: usize = 10_000;

/// The target.
pub fn run(data: &[u8]) {
    let check_error = |e: &CaptureError| {
        assert!(
            e.offset <= data.len() as u64,
            "error offset {} past the end of a {}-byte input: {e}",
            e.offset,
            data.len()
        );
        let _ = e.to_string();
    };
    // The whole-capture reader, as `fanout replay` and `capture inspect` use it.
    match read_segments([("fuzz".to_string(), data)]) {
        Err(e) => assert!(e.starts_with("fuzz: "), "{e}"),
        Ok(capture) => {
            assert_eq!(capture.extent.skipped, []);
            if let Some(torn) = &capture.extent.torn {
                assert!(torn.offset < data.len() as u64, "{torn}");
                assert!(torn.records <= capture.records.len() as u64, "{torn}");
                assert!(torn.to_string().starts_with("fuzz: torn after "), "{torn}");
            }
        }
    }
    // The same file twice: the second copy is segment 0 again, never part of the first's capture.
    if let Ok(capture) = read_segments([("fuzz".to_string(), data), ("fuzz.1".to_string(), data)]) {
        let once = read_segments([("fuzz".to_string(), data)]).expect("read alone above");
        assert_eq!(capture.records, once.records, "a second segment 0 was read");
        if once.extent.torn.is_none() {
            assert_eq!(capture.extent.skipped.len(), 1);
            assert!(!capture.extent.skipped[0].why.is_empty());
        }
    }
    let mut dec = match Decoder::new(data) {
        Ok(dec) => dec,
        Err(e) => return check_error(&e),
    };
    let header = dec.header().clone();
    let schema = u16::from_le_bytes([data[10], data[11]]);
    assert!(
        header.run.is_none() || schema == SCHEMA_VERSION,
        "a run read from schema {schema}"
    );
    let mut enc = Encoder::default();
    if let Ok(bytes) = enc.header(&header) {
        let again = Decoder::new(bytes).expect("an encoded header decodes");
        assert_eq!(again.header(), &header, "header round trip");
    }
    let mut records = Vec::new();
    for record in dec.by_ref() {
        match record {
            Ok(record) => {
                assert_round_trip(&mut enc, &record);
                records.push(record);
            }
            Err(e) => {
                check_error(&e);
                break;
            }
        }
    }
    replay(header.config, records);
}

/// Encoding a decoded record and decoding it again gives the same record.
fn assert_round_trip(enc: &mut Encoder, record: &Record) {
    let Ok(bytes) = enc.record(record) else {
        return;
    };
    // A record alone is not a file: decode it behind a minimal valid header.
    let mut file = Encoder::default()
        .header(&minimal_header())
        .expect("the minimal header encodes")
        .to_vec();
    file.extend_from_slice(bytes);
    let mut dec = Decoder::new(&file[..]).expect("the minimal header decodes");
    let again = dec.next_record().expect("an encoded record decodes");
    assert_eq!(again.as_ref(), Some(record), "record round trip");
}

fn minimal_header() -> fanout_engine::capture::Header {
    fanout_engine::capture::Header {
        segment: 0,
        mode: String::new(),
        listen: String::new(),
        backends: Vec::new(),
        config: fanout_engine::Config::default(),
        epoch_unix_ms: 0,
        run: None,
    }
}

/// Replays `records` into an engine made from `config`. Instants are clamped so time never goes
/// backwards (the one input rule no capture writer can break); everything else is fed as decoded.
fn replay(config: fanout_engine::Config, records: Vec<Record>) {
    if config.secondaries > MAX_REPLAY_SECONDARIES {
        return;
    }
    let Ok(engine) = Engine::new(config) else {
        return;
    };
    let mut replayer = Replayer::new(engine);
    let mut now = Instant::ZERO;
    for record in records.into_iter().take(MAX_REPLAY_RECORDS) {
        let record = match record {
            Record::Input { at, event } => {
                now = now.max(at);
                Record::Input { at: now, event }
            }
            outputs => outputs,
        };
        let _ = replayer.apply(record, |_| {});
    }
    // Whatever state the replay left, a final timeout far in the future must not panic either.
    let engine = &mut replayer.engine;
    if let Some(at) = engine.poll_timeout() {
        engine.handle(at.max(now), Event::Timeout);
        while engine.poll_command().is_some() {}
    }
}
