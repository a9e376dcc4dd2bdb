//! `fanout beanstalkd` between a real client and a real beanstalkd, archiving to SQLite: a
//! far-future job leaves beanstalkd for the store right after the client hears its `INSERTED`,
//! comes back before it is due, and is reserved no earlier than its delay with its body,
//! priority and ttr; a near job is never touched.

use crate::support::beanstalkd::Beanstalkd;
use crate::support::proxy::{args, run_to_exit, Fanout};
use crate::support::{eventually, LIVENESS};
use fanout_io::beanstalkd::client::Client;
use std::time::{Duration, Instant};

/// `fanout beanstalkd status --store STORE`, as `(pending, archived)`.
fn status(store: &str) -> (u64, u64) {
    let out = run_to_exit(&args(["beanstalkd", "status", "--store", store]), LIVENESS);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.stdout;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    (field("pending "), field("archived "))
}

#[test]
fn a_far_future_job_waits_in_sqlite_and_comes_back_on_time() {
    let server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("archive.db").display());
    let proxy = Fanout::start(&args([
        "beanstalkd",
        "--listen",
        "127.0.0.1:0",
        "--server",
        &server.addr(),
        "--archive-after",
        "2s",
        "--store",
        &store,
        "--reinject-lead",
        "3s",
        "--reinject-every",
        "100ms",
    ]));
    let mut client = Client::connect(proxy.addr(), Duration::from_secs(20)).unwrap();
    client.use_tube("mail").unwrap();
    let put_at = Instant::now();
    let body = b"remind \r\n me \0 later".to_vec();
    let far = client.put(9, 15, 45, &body).unwrap();
    let near = client.put(3, 1, 30, b"soon").unwrap();

    // The far job leaves beanstalkd for the store; the near one stays.
    let mut direct = server.client();
    assert!(
        eventually(LIVENESS, || direct.peek(far).unwrap().is_none()),
        "the far job never left beanstalkd: {}",
        proxy.stderr()
    );
    assert_eq!(status(&store), (0, 1));
    // Re-injection starts 3 s before the due time: archived later than that, the job would be
    // put back as soon as it arrived, and the wait below would test nothing.
    assert!(
        put_at.elapsed() < Duration::from_secs(12),
        "archived too late to test the wait"
    );
    assert_eq!(direct.peek(near).unwrap(), Some(b"soon".to_vec()));

    // It comes back and is ready no earlier than its delay, the same job under a new id.
    let mut worker = server.client();
    worker.watch("mail").unwrap();
    let mut got = None;
    while got.is_none() && put_at.elapsed() < Duration::from_secs(25) {
        if let Some((id, b)) = worker.reserve(1).unwrap() {
            if id == near {
                worker.delete(id).unwrap();
            } else {
                got = Some((id, b));
            }
        }
    }
    let (id, got_body) = got.expect("the far job came back within 25 s");
    let ready_after = put_at.elapsed();
    assert!(
        ready_after >= Duration::from_secs(14),
        "ready after {ready_after:?}, its delay was 15 s"
    );
    assert_ne!(
        id, far,
        "beanstalkd has no command to put a job back under its old id"
    );
    assert_eq!(got_body, body);
    let stats = worker.stats_job(id).unwrap().expect("reserved");
    assert_eq!((stats.tube.as_str(), stats.pri, stats.ttr), ("mail", 9, 45));
    assert_eq!(status(&store), (0, 0));
}

/// `fanout beanstalkd` archiving to `store` (a `sqlite:` URL) for `server`, with `extra` flags.
fn archiver(server: &Beanstalkd, store: &str, extra: &[&str]) -> Fanout {
    let mut a = args([
        "beanstalkd",
        "--listen",
        "127.0.0.1:0",
        "--server",
        &server.addr(),
        "--store",
        store,
    ]);
    a.extend(args(extra));
    Fanout::start(&a)
}

#[test]
fn a_locked_store_stalls_no_client_and_archiving_resumes_when_it_frees() {
    let server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.db");
    let store = format!("sqlite:{}", path.display());
    let proxy = archiver(&server, &store, &["--archive-after", "1h"]);
    // Another process holds the only write lock SQLite has.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut client = Client::connect(proxy.addr(), Duration::from_secs(20)).unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        ids.push(
            client
                .put(1, 7200, 60, format!("job {i}").as_bytes())
                .unwrap(),
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "put {i} waited {:?} on a locked store",
            started.elapsed()
        );
    }
    // Nothing can be archived: every job is still in beanstalkd.
    std::thread::sleep(Duration::from_millis(500));
    let mut direct = server.client();
    for &id in &ids {
        assert!(
            direct.peek(id).unwrap().is_some(),
            "job {id} left beanstalkd for a locked store"
        );
    }
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    assert!(
        eventually(Duration::from_secs(30), || ids
            .iter()
            .all(|&id| direct.peek(id).unwrap().is_none())),
        "archiving did not resume once the store was free: {}",
        proxy.stderr()
    );
    assert_eq!(status(&store), (0, 20));
}

/// Jobs, and when each is due, by body.
struct Ledger {
    due: std::collections::BTreeMap<Vec<u8>, Instant>,
}

#[test]
fn kill_9_at_random_points_loses_no_job_and_delivers_none_early() {
    const JOBS: usize = 10_000;
    const BATCH: usize = 200;
    let server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("archive.db").display());
    let flags = [
        "--archive-after",
        "1s",
        "--reinject-lead",
        "1s",
        "--reinject-every",
        "50ms",
        "--archive-batch",
        "200",
        "--claim",
        "2s",
    ];
    let mut proxy = archiver(&server, &store, &flags);

    // Every job through the proxy, delays 2-8 s: all of them far enough to archive.
    let mut ledger = Ledger {
        due: Default::default(),
    };
    let mut client = Client::connect(proxy.addr(), Duration::from_secs(20)).unwrap();
    let p0 = Instant::now();
    for i in 0..JOBS {
        let delay = 2 + (i % 7) as u32;
        let body = format!("job {i}").into_bytes();
        client.put(1, delay, 60, &body).unwrap();
        ledger
            .due
            .insert(body, Instant::now() + Duration::from_secs(u64::from(delay)));
    }
    drop(client);
    let puts_took = p0.elapsed();
    let t0 = Instant::now();

    // A worker straight on beanstalkd takes every job as it becomes ready.
    let addr = server.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut w = Client::connect(addr.as_str(), Duration::from_secs(20)).unwrap();
            let mut got: Vec<(Vec<u8>, Instant)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((id, body)) = w.reserve(1).unwrap() {
                    got.push((body, Instant::now()));
                    w.delete(id).unwrap();
                }
            }
            got
        })
    };

    // kill -9 the proxy every 100-700 ms for 10 s, restarting it on the same store each time.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    let chaos = Instant::now();
    while chaos.elapsed() < Duration::from_secs(10) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 600));
        drop(proxy); // SIGKILL
        kills += 1;
        proxy = archiver(&server, &store, &flags);
    }
    // The last one runs undisturbed until every job came back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&store) != (0, 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_back = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = worker.join().expect("the worker");

    let mut seen: std::collections::BTreeMap<&[u8], usize> = Default::default();
    for (body, at) in &got {
        *seen.entry(body).or_default() += 1;
        let due = ledger.due[body];
        assert!(
            *at + Duration::from_secs(1) >= due,
            "{} delivered {:?} before it was due",
            String::from_utf8_lossy(body),
            due - *at
        );
    }
    let lost: Vec<_> = ledger
        .due
        .keys()
        .filter(|b| !seen.contains_key(b.as_slice()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {JOBS} jobs never delivered after {kills} kills (first: {:?}); status {:?}; proxy: {}",
        lost.len(),
        String::from_utf8_lossy(lost[0]),
        status(&store),
        proxy.stderr()
    );
    // Duplicates only from the re-injection window: at most one batch per kill.
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "{JOBS} jobs put in {puts_took:?}, {kills} kills, all back {all_back:?} after the puts, \
         {duplicates} delivered twice"
    );
    assert!(
        duplicates <= kills * BATCH,
        "{duplicates} duplicates after {kills} kills"
    );
}

/// The transcript of `scripts/greenstalk_session.py` against `addr`.
fn greenstalk_transcript(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/e2e/scripts/greenstalk_session.py"
    );
    let out = std::process::Command::new("python3")
        .args([script, host, port])
        .output()
        .expect("python3 on PATH");
    assert!(
        out.status.success(),
        "the greenstalk session failed (pip install greenstalk): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a UTF-8 transcript")
}

#[test]
fn every_command_through_greenstalk_answers_as_beanstalkd_does_without_the_proxy() {
    let behind = Beanstalkd::start(&[]);
    let alone = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("archive.db").display());
    let proxy = archiver(&behind, &store, &["--archive-after", "1000h"]);
    let through = greenstalk_transcript(&proxy.addr().to_string());
    let direct = greenstalk_transcript(&alone.addr());
    assert!(direct.lines().count() > 30, "{direct}");
    assert_eq!(through, direct);
}

#[test]
fn two_proxies_sharing_a_store_put_each_job_back_exactly_once() {
    const JOBS: usize = 1_000;
    let server = Beanstalkd::start(&[]);
    let stores = crate::beanstalkd_store::Stores::new("shared");
    let flags = [
        "--archive-after",
        "1s",
        "--reinject-lead",
        "1s",
        "--reinject-every",
        "20ms",
        "--archive-batch",
        "50",
    ];
    for (n, url) in stores.urls.iter().enumerate() {
        let proxies = [
            archiver(&server, url, &flags),
            archiver(&server, url, &flags),
        ];
        let mut clients: Vec<Client> = proxies
            .iter()
            .map(|p| Client::connect(p.addr(), Duration::from_secs(20)).unwrap())
            .collect();
        let tube = format!("shared{n}");
        for c in &mut clients {
            c.use_tube(&tube).unwrap();
        }
        for i in 0..JOBS {
            let body = format!("{tube} job {i}");
            clients[i % 2]
                .put(1, 2 + (i % 3) as u32, 60, body.as_bytes())
                .unwrap();
        }
        let mut worker = server.client();
        worker.watch(&tube).unwrap();
        worker.ignore("default").unwrap();
        let mut seen: std::collections::BTreeMap<Vec<u8>, usize> = Default::default();
        let deadline = Instant::now() + Duration::from_secs(40);
        while seen.len() < JOBS && Instant::now() < deadline {
            if let Some((id, body)) = worker.reserve(1).unwrap() {
                *seen.entry(body).or_default() += 1;
                worker.delete(id).unwrap();
            }
        }
        // Anything put back twice would be ready by now.
        while let Some((id, body)) = worker.reserve(1).unwrap() {
            *seen.entry(body).or_default() += 1;
            worker.delete(id).unwrap();
        }
        assert_eq!(
            seen.len(),
            JOBS,
            "{url}: jobs lost; {}",
            proxies[0].stderr()
        );
        let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        assert!(
            twice.is_empty(),
            "{url}: {} jobs delivered twice",
            twice.len()
        );
        assert_eq!(status(url), (0, 0), "{url}");
    }
}

#[test]
fn archived_jobs_outlive_a_beanstalkd_restart_and_go_to_the_new_server() {
    let mut server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("archive.db").display());
    let proxy = archiver(
        &server,
        &store,
        &[
            "--archive-after",
            "1s",
            "--reinject-lead",
            "1s",
            "--reinject-every",
            "50ms",
        ],
    );
    let mut client = Client::connect(proxy.addr(), Duration::from_secs(20)).unwrap();
    for i in 0..50 {
        client
            .put(1, 12, 60, format!("job {i}").as_bytes())
            .unwrap();
    }
    drop(client);
    assert!(
        eventually(Duration::from_secs(10), || status(&store) == (0, 50)),
        "not archived in time: {:?}",
        status(&store)
    );
    // beanstalkd dies without a binlog: the store holds the only copies.
    server.restart();
    let mut worker = server.client();
    let mut got = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 50 && Instant::now() < deadline {
        if let Some((id, body)) = worker.reserve(1).unwrap() {
            got.insert(body);
            worker.delete(id).unwrap();
        }
    }
    assert_eq!(
        got.len(),
        50,
        "jobs lost with the server: {}",
        proxy.stderr()
    );
}

#[test]
fn a_client_pipelining_many_far_future_puts_hears_every_answer_and_all_are_archived_past_the_queue()
{
    use std::io::{Read, Write};
    const PUTS: usize = 2_000;
    let server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("archive.db").display());
    // A queue far smaller than the burst: the rest wait by id and are read back from beanstalkd.
    let proxy = archiver(
        &server,
        &store,
        &["--archive-after", "1h", "--archive-queue", "50"],
    );
    let mut conn = proxy.connect();
    let mut puts = Vec::new();
    for i in 0..PUTS {
        puts.extend_from_slice(format!("put 1 7200 60 8\r\njob{i:05}\r\n").as_bytes());
    }
    conn.write_all(&puts).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + LIVENESS;
    while got.iter().filter(|&&b| b == b'\n').count() < PUTS {
        assert!(
            Instant::now() < deadline,
            "answers stopped after {} bytes",
            got.len()
        );
        match conn.read(&mut buf) {
            Ok(0) => panic!("the proxy closed the session: {}", proxy.stderr()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the answers: {e}"),
        }
    }
    let text = String::from_utf8(got).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .map(|l| l.strip_prefix("INSERTED ").expect(l).parse().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=PUTS as u64).collect::<Vec<_>>(),
        "in order, one each"
    );
    assert!(
        eventually(Duration::from_secs(30), || status(&store)
            == (0, PUTS as u64)),
        "not all archived: {:?}",
        status(&store)
    );
}

#[test]
fn fanout_lists_beanstalkd_and_its_bad_flags_and_stores_get_clear_errors() {
    let run = |a: &[&str]| run_to_exit(&args(a.iter().copied()), LIVENESS);
    let help = run(&["--help"]);
    assert!(help.stdout.contains("beanstalkd"));
    let usage = run(&["beanstalkd", "--listen", "127.0.0.1:0"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(usage.stderr.contains("needs --server ADDR"));
    let bad = run(&["beanstalkd", "status", "--store", "redis://x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stderr.contains("a store is sqlite:PATH"));
    let down = run(&[
        "beanstalkd",
        "status",
        "--store",
        "mysql://root@127.0.0.1:1/test",
    ]);
    assert_eq!(down.status.code(), Some(1));
    assert!(down.stderr.contains("cannot connect"));
}
