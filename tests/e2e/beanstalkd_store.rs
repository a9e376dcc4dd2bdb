//! The archive stores — SQLite, MariaDB (127.0.0.1:3306, root, database `test`) and PostgreSQL
//! (127.0.0.1:5432, trust auth) — held to one contract: rows survive reopening byte for byte,
//! only archived rows due within the lead are claimed (soonest first), a claim keeps others off
//! until it expires; and the building blocks together against a real beanstalkd: a delayed job
//! taken out into the store and put back with its tube, priority, ttr, body and the delay left.

use crate::support::beanstalkd::Beanstalkd;
use fanout_io::beanstalkd::store::{Counts, NewJob, RowState, StoreUrl};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A store URL of each kind, on a table of this test's own (dropped on drop).
pub struct Stores {
    _dir: tempfile::TempDir,
    pub urls: Vec<String>,
    table: String,
}

pub const MYSQL: &str = "mysql://root@127.0.0.1:3306/test";
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl Stores {
    pub fn new(name: &str) -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let table = format!("fanout_{name}_{}", std::process::id());
        let urls = vec![
            format!("sqlite:{}", dir.path().join("archive.db").display()),
            format!("{MYSQL}?table={table}"),
            format!("{POSTGRES}?table={table}"),
        ];
        let stores = Stores {
            _dir: dir,
            urls,
            table,
        };
        stores.drop_tables();
        stores
    }

    fn drop_tables(&self) {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        if let Ok(mut c) = mysql::Conn::new(mysql::Opts::from_url(MYSQL).unwrap()) {
            use mysql::prelude::Queryable;
            let _ = c.query_drop(&sql);
        }
        if let Ok(mut c) = postgres::Client::connect(POSTGRES, postgres::NoTls) {
            let _ = c.batch_execute(&sql);
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        self.drop_tables();
    }
}

fn job(n: u64, due_ms: i64) -> NewJob {
    NewJob {
        tube: format!("t{}", n % 3),
        pri: n as u32,
        ttr: 60,
        due_ms,
        body: format!("body {n}\r\n\0binary \u{e9}").into_bytes(),
        server_id: u64::MAX - n,
        server_instance: "abc".into(),
    }
}

#[test]
fn every_store_keeps_rows_and_claims_them_as_the_contract_says() {
    let stores = Stores::new("contract");
    for url in &stores.urls {
        let parsed: StoreUrl = url.parse().unwrap();
        let mut db = parsed.open().unwrap_or_else(|e| panic!("{url}: {e}"));
        // Rows survive reopening byte for byte, pending at first.
        let ids = db.insert(&[job(1, 5_000), job(2, 1_000)]).unwrap();
        drop(db);
        let mut db = parsed.open().unwrap();
        let pending = db.pending().unwrap();
        assert_eq!(
            pending.iter().map(|r| r.job.clone()).collect::<Vec<_>>(),
            [job(1, 5_000), job(2, 1_000)],
            "{url}"
        );
        assert!(pending.iter().all(|r| r.state == RowState::Pending));
        // Only archived rows due within the lead are claimed, soonest first.
        let more = db.insert(&[job(3, 90_000), job(4, 2_000)]).unwrap();
        db.mark_archived(&ids).unwrap();
        db.mark_archived(&more[..1]).unwrap(); // job 4 stays pending
        let (lead, hold) = (Duration::from_secs(10), Duration::from_secs(30));
        let got = db.claim_due("a", 0, lead, hold, 10).unwrap();
        assert_eq!(
            got.iter().map(|r| r.job.pri).collect::<Vec<_>>(),
            [2, 1],
            "{url}"
        );
        let c = db.counts(0, lead).unwrap();
        assert_eq!(
            (c.pending, c.archived, c.due, c.claimed),
            (1, 3, 2, 2),
            "{url}"
        );
        // A claim keeps others off until it expires; its owner sees its rows again.
        assert!(
            db.claim_due("b", 1_000, lead, hold, 10).unwrap().is_empty(),
            "{url}"
        );
        assert_eq!(db.claim_due("a", 2_000, lead, hold, 10).unwrap().len(), 2);
        assert_eq!(db.claim_due("b", 40_000, lead, hold, 10).unwrap().len(), 2);
        // Discarding takes pending rows only: an archived row is some proxy's only copy.
        db.discard_pending(&more).unwrap();
        let c = db.counts(40_000, lead).unwrap();
        assert_eq!((c.pending, c.archived), (0, 3), "{url}");
        db.remove(&ids).unwrap();
        db.remove(&more).unwrap();
        assert_eq!(db.counts(40_000, lead).unwrap(), Counts::default(), "{url}");
    }
}

#[test]
fn a_delayed_job_goes_to_each_store_and_comes_back_with_its_delay_left() {
    let server = Beanstalkd::start(&[]);
    let stores = Stores::new("roundtrip");
    for url in &stores.urls {
        let mut store = url.parse::<StoreUrl>().unwrap().open().unwrap();
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
        let rows = store
            .insert(&[NewJob {
                tube: stats.tube.clone(),
                pri: stats.pri,
                ttr: stats.ttr,
                due_ms: now_ms() + stats.time_left as i64 * 1000,
                body: archiver.peek(id).unwrap().expect("a body"),
                server_id: id,
                server_instance: "x".into(),
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
        assert_eq!(claimed.len(), 1, "{url}");
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
        assert_eq!(injector.peek(new_id).unwrap(), Some(body), "{url}");
        assert_eq!(store.counts(now_ms(), lead).unwrap().archived, 0);
        injector.delete(new_id).unwrap();
    }
}
