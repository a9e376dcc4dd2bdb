//! The archiver's building blocks against a real beanstalkd and a real SQLite file: a delayed
//! job taken out of beanstalkd into the store (committed, then deleted from the server) and put
//! back when due with its tube, priority, ttr, body and the delay that remains.

use crate::support::beanstalkd::Beanstalkd;
use fanout_io::beanstalkd::store::{NewJob, RowState, StoreUrl};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_delayed_job_goes_to_sqlite_and_comes_back_with_its_delay_left() {
    let server = Beanstalkd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url: StoreUrl = format!("sqlite:{}", dir.path().join("archive.db").display())
        .parse()
        .unwrap();
    let mut store = url.open().unwrap();
    let mut producer = server.client();
    producer.use_tube("mail").unwrap();
    let body = b"send \r\n reminder \0 binary".to_vec();
    let id = producer.put(7, 3 * 3600, 120, &body).unwrap();

    // Archive: read what the server knows, commit, then delete from the server.
    let mut archiver = server.client();
    let stats = archiver.stats_job(id).unwrap().expect("the job exists");
    assert_eq!(
        (stats.tube.as_str(), stats.state.as_str()),
        ("mail", "delayed")
    );
    let instance = archiver
        .stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .expect("stats has the server's id");
    let due_ms = now_ms() + stats.time_left as i64 * 1000;
    let rows = store
        .insert(&[NewJob {
            tube: stats.tube.clone(),
            pri: stats.pri,
            ttr: stats.ttr,
            due_ms,
            body: archiver.peek(id).unwrap().expect("a body"),
            server_id: id,
            server_instance: instance,
        }])
        .unwrap();
    assert!(archiver.delete(id).unwrap());
    store.mark_archived(&rows).unwrap();
    assert_eq!(
        archiver.peek(id).unwrap(),
        None,
        "out of beanstalkd's memory"
    );

    // Re-inject, as if it were due within the lead: the remaining delay, the same job.
    let lead = Duration::from_secs(4 * 3600);
    let claimed = store
        .claim_due("test", now_ms(), lead, Duration::from_secs(60), 10)
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].state, RowState::Archived);
    let job = &claimed[0].job;
    let mut injector = server.client();
    injector.use_tube(&job.tube).unwrap();
    let left = ((job.due_ms - now_ms()).max(0) / 1000) as u32;
    let new_id = injector.put(job.pri, left, job.ttr, &job.body).unwrap();
    store.remove(&[claimed[0].row]).unwrap();

    let back = injector.stats_job(new_id).unwrap().expect("re-injected");
    assert_eq!(back.tube, "mail");
    assert_eq!(
        (back.pri, back.ttr, back.state.as_str()),
        (7, 120, "delayed")
    );
    assert!(
        (3 * 3600 - 5..=3 * 3600).contains(&back.time_left),
        "{back:?}"
    );
    assert_eq!(injector.peek(new_id).unwrap(), Some(body));
    assert_eq!(store.counts(now_ms(), lead).unwrap().archived, 0);
}
