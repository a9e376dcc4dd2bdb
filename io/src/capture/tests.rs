use super::*;
use fanout_engine::capture::{read_segments, Decoder, Replayer};
use fanout_engine::{Config, ConnId, Engine, SockId};
use std::time::Instant as StdInstant;

const SECOND: Duration = Duration::from_secs(1);

fn header() -> Header {
    Header {
        segment: 0,
        mode: "relay".into(),
        listen: "127.0.0.1:9000".into(),
        backends: vec!["127.0.0.1:8081".into()],
        config: Config::default(),
        epoch_unix_ms: 0,
        run: Some(new_run(SystemTime::now()).unwrap()),
    }
}

/// Drives an engine as the driver does: record, handle, drain into the digest.
fn session(rec: &mut Recorder, engine: &mut Engine, conn: u64, t: u64) {
    let conn = ConnId(conn);
    let client = SockId::client(conn);
    let events = [
        Event::Accepted {
            conn,
            client: "127.0.0.1:5000".into(),
        },
        Event::Read {
            sock: client,
            data: vec![b'x'; 400].into(),
        },
        Event::ReadClosed { sock: client },
    ];
    for (i, event) in events.into_iter().enumerate() {
        let at = Instant::from_nanos(t + i as u64 * 1000);
        rec.input(at, &event);
        engine.handle(at, event);
        while let Some(cmd) = engine.poll_command() {
            rec.output(&cmd);
        }
    }
}

fn segments(base: &Path) -> Vec<(String, File)> {
    let base = base.to_str().unwrap();
    (0..)
        .map(|n| segment_name(base, n))
        .map_while(|name| File::open(&name).ok().map(|f| (name, f)))
        .collect()
}

/// Polls `cond` every 5 ms for up to 10 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while StdInstant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn rotated_files_each_end_with_the_digest_so_far_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    let mut rec = Recorder::create(&path, 500, SECOND, header()).unwrap();
    let mut engine = Engine::new(Config::default()).unwrap();
    for conn in 1..=4 {
        session(&mut rec, &mut engine, conn, conn * 1_000_000);
    }
    rec.finish();
    let files = segments(&path);
    assert!(
        files.len() >= 3,
        "4 sessions of 400 bytes should rotate at 500 bytes"
    );
    let capture = read_segments(files).unwrap();
    assert_eq!(capture.extent.skipped, []);
    let outputs = capture
        .records
        .iter()
        .filter(|r| matches!(r, Record::Outputs { .. }))
        .count();
    assert_eq!(outputs, segments(&path).len(), "one digest per file");
    let mut replayer = Replayer::new(Engine::new(Config::default()).unwrap());
    for r in capture.records {
        replayer.apply(r, |_| {}).unwrap();
    }
    assert_eq!(replayer.checked() as usize, outputs);
}

#[test]
fn the_header_is_in_the_file_as_soon_as_it_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    let h = header();
    let _rec = Recorder::create(&path, 1 << 30, SECOND, h.clone()).unwrap();
    let mut dec = Decoder::new(File::open(&path).unwrap()).unwrap();
    assert_eq!(dec.header(), &h);
    assert_eq!(dec.next_record().unwrap(), None);
}

#[test]
fn records_reach_the_file_within_the_flush_interval_while_the_proxy_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    let mut rec = Recorder::create(&path, 1 << 30, Duration::from_millis(50), header()).unwrap();
    let mut engine = Engine::new(Config::default()).unwrap();
    session(&mut rec, &mut engine, 1, 0);
    let inputs = || {
        let capture = read_segments(segments(&path)).unwrap();
        assert_eq!(capture.extent.torn, None, "whole records only");
        capture.records.len()
    };
    assert!(
        eventually(|| inputs() == 3),
        "the session never reached the file"
    );
    // And the next ones, by the same timer.
    session(&mut rec, &mut engine, 2, 1000);
    assert!(
        eventually(|| inputs() == 6),
        "the second session never reached the file"
    );
    drop(rec);
}

#[test]
fn a_digest_is_recorded_before_the_first_input_a_flush_interval_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    let mut rec = Recorder::create(&path, 1 << 30, SECOND, header()).unwrap();
    let mut engine = Engine::new(Config::default()).unwrap();
    let ms = 1_000_000;
    for (conn, t) in [
        (1, 0),
        (2, 500 * ms),
        (3, 1_100 * ms),
        (4, 1_200 * ms),
        (5, 2_500 * ms),
    ] {
        session(&mut rec, &mut engine, conn, t);
    }
    rec.finish();
    let capture = read_segments(segments(&path)).unwrap();
    let kinds: String = capture
        .records
        .iter()
        .map(|r| match r {
            Record::Input { .. } => 'i',
            Record::Outputs { .. } => 'O',
        })
        .collect();
    assert_eq!(
        kinds, "iiiiiiOiiiiiiOiiiO",
        "at 1.1 s, at 2.5 s, and at the end"
    );
    let mut replayer = Replayer::new(Engine::new(Config::default()).unwrap());
    for r in capture.records {
        replayer.apply(r, |_| {}).unwrap();
    }
    assert_eq!(replayer.checked(), 3);
}

#[test]
fn a_path_holding_any_file_of_an_earlier_capture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    for theirs in ["c.fcap.3", "c.fcap.t1", "c.fcap.t2.1"] {
        std::fs::write(dir.path().join(theirs), b"earlier").unwrap();
    }
    // Other captures' files and look-alikes are not this capture's.
    for other in [
        "c.fcap.x",
        "c.fcap.t",
        "c.fcap.1.t1",
        "c.fcapture",
        "b.fcap.1",
    ] {
        std::fs::write(dir.path().join(other), b"other").unwrap();
    }
    let err = Recorder::create(&path, 1 << 30, SECOND, header()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    let message = err.to_string();
    let listed = |name: &str| message.contains(&format!("{}", dir.path().join(name).display()));
    assert!(
        ["c.fcap.3", "c.fcap.t1", "c.fcap.t2.1"]
            .iter()
            .all(|n| listed(n)),
        "{message}"
    );
    assert!(
        !["c.fcap.x", "c.fcapture", "b.fcap.1"]
            .iter()
            .any(|n| listed(n)),
        "{message}"
    );
    assert!(!path.exists(), "nothing was created");
    for theirs in ["c.fcap.3", "c.fcap.t1", "c.fcap.t2.1"] {
        assert_eq!(std::fs::read(dir.path().join(theirs)).unwrap(), b"earlier");
    }
}

#[test]
fn a_symlink_at_the_capture_path_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"precious").unwrap();
    let path = dir.path().join("c.fcap");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    assert!(Recorder::create(&path, 1 << 30, SECOND, header()).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // Dangling, too: nothing is created through it.
    std::fs::remove_file(&target).unwrap();
    assert!(Recorder::create(&path, 1 << 30, SECOND, header()).is_err());
    assert!(!target.exists());
}

#[test]
fn a_write_error_stops_capturing_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.fcap");
    let mut rec = Recorder::create(&path, 500, Duration::from_millis(1), header()).unwrap();
    // Something takes the next file's name after the start: the rotation cannot create it.
    let squatter = dir.path().join("c.fcap.1");
    std::fs::write(&squatter, b"not ours").unwrap();
    let mut engine = Engine::new(Config::default()).unwrap();
    let mut conn = 0;
    assert!(
        eventually(|| {
            conn += 1;
            session(&mut rec, &mut engine, conn, conn * 1000);
            rec.writer.is_none()
        }),
        "the failed write turned the recorder off"
    );
    session(&mut rec, &mut engine, conn + 1, 0); // ignored, no panic
    rec.finish();
    assert_eq!(std::fs::read(&squatter).unwrap(), b"not ours");
    let first = segments(&path).into_iter().take(1);
    let capture = read_segments(first).unwrap();
    assert_eq!(capture.extent.torn, None, "the first file stays whole");
    assert!(matches!(
        capture.records.last(),
        Some(Record::Outputs { .. })
    ));
}

#[test]
fn a_writer_that_cannot_keep_up_makes_the_loop_stop_recording_never_wait() {
    // A socket nobody reads: the writer blocks on its first write, as on a stalled disk.
    let (stalled, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    let file = File::from(std::os::fd::OwnedFd::from(stalled));
    let writer = Writer::start(file, "stalled".into(), Duration::from_millis(1)).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut appended = 0;
    let refused = loop {
        match writer.append(&chunk) {
            Ok(()) => appended += chunk.len(),
            Err(e) => break e,
        }
        assert!(
            appended <= 2 * MAX_BACKLOG,
            "the backlog grew without bound"
        );
    };
    assert_eq!(refused, Refused::Behind);
    // Unblock the writer (its writes fail once the reader is gone) so it ends.
    drop(reader);
    drop(writer);
}

#[test]
fn a_recorder_whose_disk_stalls_stops_recording_and_the_loop_goes_on() {
    // The capture "file" is a socket nobody reads: every write of the writer blocks for good.
    let (stalled, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    let file = File::from(std::os::fd::OwnedFd::from(stalled));
    let mut rec = Recorder::start("stalled".into(), file, 1 << 40, SECOND, header()).unwrap();
    // The loop's side on a thread of its own, so a loop that waited for the disk fails the
    // test at the deadline instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut engine = Engine::new(Config::default()).unwrap();
        let read = Event::Read {
            sock: SockId::client(ConnId(1)),
            data: vec![0u8; 64 * 1024].into(),
        };
        let mut fed = 0;
        while rec.writer.is_some() && fed <= 2 * MAX_BACKLOG {
            rec.input(Instant::ZERO, &read);
            fed += 64 * 1024;
        }
        let stopped = rec.writer.is_none();
        session(&mut rec, &mut engine, 2, 0); // ignored, no panic
        rec.finish(); // returns at once: the stalled writer was left to itself
        let _ = done.send((stopped, fed));
    });
    let (stopped, fed) = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the loop waited for a stalled disk");
    assert!(stopped, "recorded {fed} bytes past the backlog bound");
    assert!(
        fed > MAX_BACKLOG - 64 * 1024,
        "stopped early, after {fed} bytes"
    );
    drop(reader); // the writer's writes fail now, and it ends
}

#[test]
fn loop_k_records_to_its_own_file() {
    assert_eq!(loop_path(Path::new("/t/c.fcap"), 0), Path::new("/t/c.fcap"));
    assert_eq!(
        loop_path(Path::new("/t/c.fcap"), 3),
        Path::new("/t/c.fcap.t3")
    );
}

#[test]
fn every_run_draws_its_own_id() {
    let now = SystemTime::now();
    assert_ne!(new_run(now).unwrap().id, new_run(now).unwrap().id);
}

#[test]
fn a_file_cut_short_by_a_stalled_disk_ends_with_a_digest_that_replays() {
    // The capture "file" is a socket nobody reads until the recorder gave up on it.
    let (stalled, mut reader) = std::os::unix::net::UnixStream::pair().unwrap();
    let file = File::from(std::os::fd::OwnedFd::from(stalled));
    let mut rec = Recorder::start("stalled".into(), file, 1 << 40, SECOND, header()).unwrap();
    let mut engine = Engine::new(Config::default()).unwrap();
    // Sessions whose every input makes the engine emit a command, so a digest taken one input
    // early or late cannot match.
    let mut conn = 0;
    while rec.writer.is_some() {
        conn += 1;
        let id = ConnId(conn);
        let events = [
            Event::Accepted {
                conn: id,
                client: "127.0.0.1:5000".into(),
            },
            Event::Connected {
                sock: SockId::backend(id, fanout_engine::BackendId(0)),
            },
            Event::Read {
                sock: SockId::client(id),
                data: vec![b'x'; 64 * 1024].into(),
            },
            Event::ReadClosed {
                sock: SockId::client(id),
            },
        ];
        for event in events {
            let at = Instant::from_nanos(conn * 1000);
            rec.input(at, &event);
            engine.handle(at, event);
            while let Some(cmd) = engine.poll_command() {
                rec.output(&cmd);
            }
        }
        assert!(conn < 10_000, "the recorder never noticed the stall");
    }
    rec.finish();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
    let capture = read_segments([("stalled".to_string(), &bytes[..])]).unwrap();
    assert_eq!(capture.extent.torn, None, "the writer wrote whole records");
    assert!(matches!(
        capture.records.last(),
        Some(Record::Outputs { .. })
    ));
    let mut replayer = Replayer::new(Engine::new(Config::default()).unwrap());
    for r in capture.records {
        replayer
            .apply(r, |_| {})
            .unwrap_or_else(|e| panic!("after {conn} sessions: {e}"));
    }
    assert!(replayer.checked() >= 1);
}
