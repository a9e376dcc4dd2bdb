//! The duplex report sink: one JSON line per finished session (format in CONTRACT.md), and at
//! `-v` one summary line per session on stderr.

use crate::files;
use fanout_engine::{Role, SessionReport};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where reports go. One per event loop; loops share the file through a mutex and each line is
/// written with one `write` call, then flushed (the file is unbuffered).
#[derive(Debug, Clone)]
pub struct ReportSink {
    file: Option<Arc<Mutex<File>>>,
    /// The `--report` path, opened again by [`ReportSink::reopen`].
    path: Option<Arc<Path>>,
    summary: bool,
    /// Upstream names (addresses), indexed by `UpstreamId`.
    names: Arc<[String]>,
    /// The wall-clock time of the engine's epoch (`Instant::ZERO`).
    wall_epoch: SystemTime,
    failed: bool,
}

impl ReportSink {
    /// Opens `path` for appending (created mode 0600 if missing; never through a symlink, see
    /// `files.rs`).
    pub fn open(
        path: Option<&Path>,
        summary: bool,
        names: Arc<[String]>,
        wall_epoch: SystemTime,
    ) -> io::Result<Self> {
        let file = match path {
            Some(p) => Some(Arc::new(Mutex::new(files::append(p)?))),
            None => None,
        };
        Ok(ReportSink {
            file,
            path: path.map(Arc::from),
            summary,
            names,
            wall_epoch,
            failed: false,
        })
    }

    /// Opens the report path again and sends every later line there, in every loop (they share
    /// the file): after logrotate renamed the file, SIGHUP starts a new one. Each line goes whole
    /// to the old file or the new one. On an error the old file stays in use. `Ok(None)` when
    /// there is no report file; otherwise the path reopened.
    pub fn reopen(&self) -> io::Result<Option<&Path>> {
        let (Some(file), Some(path)) = (&self.file, &self.path) else {
            return Ok(None);
        };
        let new = files::append(path)?;
        *file.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(Some(path))
    }

    /// Writes one session's report. A write error is logged once and otherwise ignored: the
    /// proxy keeps serving.
    pub fn emit(&mut self, r: &SessionReport) {
        if let Some(file) = &self.file {
            let mut line = json_line(r, &self.names, self.wall_epoch);
            line.push('\n');
            let result = file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes());
            if let Err(e) = result {
                if !self.failed {
                    tracing::warn!("cannot write the report file: {e}");
                    self.failed = true;
                }
            }
        }
        if self.summary {
            let line = summary_line(r, &self.names);
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    session: u64,
    client: &'a str,
    start: String,
    backends: Vec<BackendLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interceptor_error: Option<&'a str>,
}

#[derive(Serialize)]
struct BackendLine<'a> {
    role: &'static str,
    address: &'a str,
    connect_ms: Option<f64>,
    first_byte_ms: Option<f64>,
    last_byte_ms: Option<f64>,
    bytes_sent: u64,
    bytes_received: u64,
    outcome: &'static str,
    digest: String,
    matches_primary: Option<bool>,
    first_difference: Option<u64>,
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_nanos() / 1000) as f64 / 1000.0
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

/// The JSON object for one session, without the newline.
pub fn json_line(r: &SessionReport, names: &[String], wall_epoch: SystemTime) -> String {
    let start = wall_epoch + Duration::from_nanos(r.started.as_nanos());
    let line = Line {
        session: r.conn.0,
        client: &r.client,
        start: humantime::format_rfc3339_micros(start).to_string(),
        backends: r
            .backends
            .iter()
            .map(|b| BackendLine {
                role: role(b.role),
                address: names
                    .get(usize::from(b.upstream.0))
                    .map_or("?", String::as_str),
                connect_ms: b.connect_time.map(ms),
                first_byte_ms: b.first_byte.map(ms),
                last_byte_ms: b.last_byte.map(ms),
                bytes_sent: b.bytes_sent,
                bytes_received: b.bytes_received,
                outcome: b.outcome.as_str(),
                digest: format!("{:016x}", b.digest),
                matches_primary: b.matches_primary,
                first_difference: b.first_difference,
            })
            .collect(),
        interceptor_error: r.interceptor_error.as_deref(),
    };
    serde_json::to_string(&line).expect("a report always serialises")
}

/// `session 7 127.0.0.1:51234 primary ok 1024B 3.2ms | 127.0.0.1:8081 detached-budget 0B match=false@12`
pub fn summary_line(r: &SessionReport, names: &[String]) -> String {
    use std::fmt::Write as _;
    let mut s = format!("session {} {}", r.conn.0, r.client);
    for b in &r.backends {
        if b.role == Role::Primary {
            let _ = write!(s, " primary {} {}B", b.outcome.as_str(), b.bytes_received);
            match b.last_byte {
                Some(d) => {
                    let _ = write!(s, " {}ms", ms(d));
                }
                None => s.push_str(" -"),
            }
        } else {
            let name = names
                .get(usize::from(b.upstream.0))
                .map_or("?", String::as_str);
            let _ = write!(s, " | {name} {} {}B", b.outcome.as_str(), b.bytes_received);
            if let Some(m) = b.matches_primary {
                let _ = write!(s, " match={m}");
                if let Some(at) = b.first_difference {
                    let _ = write!(s, "@{at}");
                }
            }
        }
    }
    if let Some(why) = &r.interceptor_error {
        let _ = write!(s, " | interceptor-error: {why}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_engine::{BackendId, BackendReport, ConnId, Instant, Outcome, UpstreamId};

    fn report() -> SessionReport {
        SessionReport {
            conn: ConnId(7),
            client: "127.0.0.1:51234".into(),
            started: Instant::from_nanos(1_500_000),
            backends: vec![
                BackendReport {
                    backend: BackendId(0),
                    upstream: UpstreamId(0),
                    role: Role::Primary,
                    connect_time: Some(Duration::from_micros(210)),
                    first_byte: Some(Duration::from_micros(1500)),
                    last_byte: Some(Duration::from_micros(3200)),
                    bytes_sent: 78,
                    bytes_received: 1024,
                    outcome: Outcome::Ok,
                    digest: 0x9f86_d081_884c_7d65,
                    matches_primary: None,
                    first_difference: None,
                },
                BackendReport {
                    backend: BackendId(1),
                    upstream: UpstreamId(1),
                    role: Role::Secondary,
                    connect_time: None,
                    first_byte: None,
                    last_byte: None,
                    bytes_sent: 0,
                    bytes_received: 0,
                    outcome: Outcome::DetachedBudget,
                    digest: 0xab,
                    matches_primary: Some(false),
                    first_difference: Some(12),
                },
            ],
            interceptor_error: None,
        }
    }

    fn names() -> Vec<String> {
        vec!["127.0.0.1:8080".into(), "127.0.0.1:8081".into()]
    }

    #[test]
    fn json_line_has_the_contract_shape() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_718_401);
        let line = json_line(&report(), &names(), epoch);
        assert!(!line.contains('\n'));
        let expected = concat!(
            r#"{"session":7,"client":"127.0.0.1:51234","start":"2026-11-26T18:40:01.001500Z","#,
            r#""backends":[{"role":"primary","address":"127.0.0.1:8080","connect_ms":0.21,"#,
            r#""first_byte_ms":1.5,"last_byte_ms":3.2,"bytes_sent":78,"bytes_received":1024,"#,
            r#""outcome":"ok","digest":"9f86d081884c7d65","matches_primary":null,"#,
            r#""first_difference":null},{"role":"secondary","address":"127.0.0.1:8081","#,
            r#""connect_ms":null,"first_byte_ms":null,"last_byte_ms":null,"bytes_sent":0,"#,
            r#""bytes_received":0,"outcome":"detached-budget","digest":"00000000000000ab","#,
            r#""matches_primary":false,"first_difference":12}]}"#
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn summary_line_reads_like_the_contract_example() {
        assert_eq!(
            summary_line(&report(), &names()),
            "session 7 127.0.0.1:51234 primary ok 1024B 3.2ms | 127.0.0.1:8081 detached-budget 0B match=false@12"
        );
    }

    #[test]
    fn reopen_sends_later_lines_to_a_new_file_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (dir.path().join("r.jsonl"), dir.path().join("r.jsonl.1"));
        let mut sink =
            ReportSink::open(Some(&path), false, names().into(), SystemTime::now()).unwrap();
        let mut other_loop = sink.clone();
        sink.emit(&report());
        std::fs::rename(&path, &rotated).unwrap();
        assert_eq!(sink.reopen().unwrap(), Some(path.as_path()));
        other_loop.emit(&report());
        sink.emit(&report());
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!((lines(&rotated), lines(&path)), (1, 2));
        let none = ReportSink::open(None, false, names().into(), SystemTime::now()).unwrap();
        assert_eq!(none.reopen().unwrap(), None);
    }

    #[test]
    fn the_sink_appends_one_line_per_session() {
        let path =
            std::env::temp_dir().join(format!("fanout-report-test-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut sink =
            ReportSink::open(Some(&path), false, names().into(), SystemTime::now()).unwrap();
        sink.emit(&report());
        sink.emit(&report());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["session"], 7);
            assert_eq!(v["backends"][1]["outcome"], "detached-budget");
        }
    }
}
