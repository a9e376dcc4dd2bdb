//! `fanout beanstalkd` between a real client and a real beanstalkd, archiving to SQLite: a
//! far-future job leaves beanstalkd for the store right after the client hears its `INSERTED`,
//! comes back before it is due, and is reserved no earlier than its delay with its body,
//! priority and ttr; a near job is never touched.

use crate::support::beanstalkd::Beanstalkd;
use crate::support::proxy::{args, Fanout};
use crate::support::{eventually, LIVENESS};
use fanout_io::beanstalkd::client::Client;
use std::time::{Duration, Instant};

/// `fanout beanstalkd status --store STORE`, as `(pending, archived)`.
fn status(store: &str) -> (u64, u64) {
    let out = std::process::Command::new(crate::support::proxy::bin())
        .args(["beanstalkd", "status", "--store", store])
        .output()
        .expect("fanout beanstalkd status runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
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
    let far = client.put(9, 8, 45, &body).unwrap();
    let near = client.put(3, 1, 30, b"soon").unwrap();

    // The far job leaves beanstalkd for the store; the near one stays.
    let mut direct = server.client();
    assert!(
        eventually(LIVENESS, || direct.peek(far).unwrap().is_none()),
        "the far job never left beanstalkd: {}",
        proxy.stderr()
    );
    assert_eq!(status(&store), (0, 1));
    assert!(
        put_at.elapsed() < Duration::from_secs(5),
        "archived too late to test the wait"
    );
    assert_eq!(direct.peek(near).unwrap(), Some(b"soon".to_vec()));

    // It comes back and is ready no earlier than its delay, the same job under a new id.
    let mut worker = server.client();
    worker.watch("mail").unwrap();
    let mut got = None;
    while got.is_none() && put_at.elapsed() < Duration::from_secs(15) {
        if let Some((id, b)) = worker.reserve(1).unwrap() {
            if id == near {
                worker.delete(id).unwrap();
            } else {
                got = Some((id, b));
            }
        }
    }
    let (id, got_body) = got.expect("the far job came back within 15 s");
    let ready_after = put_at.elapsed();
    assert!(
        ready_after >= Duration::from_secs(7),
        "ready after {ready_after:?}, its delay was 8 s"
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
