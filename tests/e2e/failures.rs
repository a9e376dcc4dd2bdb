//! Failures and limits: a dead or dying primary closes the client at once; connect and idle
//! timeouts cut what hangs; the connection limit holds clients back instead of refusing them; a
//! process out of file descriptors backs off instead of spinning.

use crate::support::backend::{self, Backend, FullBacklog, Gate, BACKEND_TIMEOUT};
use crate::support::client;
use crate::support::pattern::{self, Verifier, GIB, MIB};
use crate::support::proxy::{self, report_path, Fanout};
use crate::support::{eventually, report, LIVENESS};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far below every default timeout (5 s connect, 300 s idle): a close within it is the proxy
/// acting on the failure, not a default timer.
const PROMPTLY: Duration = Duration::from_secs(4);

#[test]
fn refused_primary_closes_client_promptly() {
    let proxy = Fanout::relay(backend::closed_port(), &[]);
    let mut c = proxy.connect();
    let _ = c.write_all(b"hello?");
    client::expect_closed(&mut c, PROMPTLY);
}

#[test]
fn duplex_refused_primary_closes_client_promptly_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let dead = backend::closed_port();
    let secondary = Backend::spawn(backend::echo);
    let proxy = Fanout::duplex(dead, &[secondary.arg()], &["--report", path.as_str()]);
    let mut c = proxy.connect();
    let _ = c.write_all(b"hello?");
    client::expect_closed(&mut c, PROMPTLY);
    drop(c);
    let sessions = report::wait_for(&path, 1);
    let p = report::backend(&sessions[0], &dead.to_string());
    assert_eq!(p["outcome"], "refused", "{p:#}");
}

#[test]
fn primary_reset_mid_response_closes_client_promptly() {
    let gate = Gate::default();
    let b = {
        let gate = gate.clone();
        Backend::spawn(move |mut s, _| {
            let mut first = vec![0u8; 1000];
            pattern::fill(0, &mut first);
            if s.write_all(&first).is_ok() && gate.wait(BACKEND_TIMEOUT) {
                backend::reset(s);
            }
        })
    };
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    Verifier::new().read_exactly(&mut c, 1000);
    gate.open();
    let (_, extra) = client::expect_closed(&mut c, PROMPTLY);
    assert_eq!(extra, 0, "bytes after the primary's reset");
}

#[test]
fn duplex_primary_reset_mid_response_closes_client_and_is_reported_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let gate = Gate::default();
    let primary = {
        let gate = gate.clone();
        Backend::spawn(move |mut s, _| {
            let mut first = vec![0u8; 1000];
            pattern::fill(0, &mut first);
            if s.write_all(&first).is_ok() && gate.wait(BACKEND_TIMEOUT) {
                backend::reset(s);
            }
        })
    };
    let secondary = Backend::spawn(backend::echo);
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str()],
    );
    let mut c = proxy.connect();
    Verifier::new().read_exactly(&mut c, 1000);
    gate.open();
    client::expect_closed(&mut c, PROMPTLY);
    drop(c);
    let sessions = report::wait_for(&path, 1);
    let p = report::backend(&sessions[0], &primary.arg());
    assert_eq!(p["outcome"], "reset", "{p:#}");
    assert_eq!(p["bytes_received"], 1000, "{p:#}");
}

#[test]
fn missing_unix_socket_backend_closes_client_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-listens-here.sock");
    let proxy = Fanout::relay(format!("unix:{}", path.display()), &[]);
    let mut c = proxy.connect();
    let _ = c.write_all(b"hello?");
    client::expect_closed(&mut c, PROMPTLY);
}

#[test]
fn connect_timeout_to_full_backlog_closes_client() {
    let hole = FullBacklog::new();
    let proxy = Fanout::relay(hole.addr(), &["--connect-timeout", "300ms"]);
    let mut c = proxy.connect();
    let _ = c.write_all(b"anyone?");
    client::expect_closed(&mut c, PROMPTLY);
}

#[test]
fn secondary_connect_timeout_is_reported_and_client_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let hole = FullBacklog::new();
    let primary = Backend::spawn(backend::answer(b"pong".to_vec()));
    let proxy = Fanout::duplex(
        primary.addr(),
        &[hole.addr().to_string()],
        &["--report", path.as_str(), "--connect-timeout", "300ms"],
    );
    assert_eq!(client::request(proxy.addr(), b"ping"), b"pong");
    let sessions = report::wait_for(&path, 1);
    let s = report::backend(&sessions[0], &hole.addr().to_string());
    assert_eq!(s["outcome"], "connect-timeout", "{s:#}");
    assert_eq!(s["connect_ms"], serde_json::Value::Null, "{s:#}");
}

#[test]
fn idle_timeout_closes_idle_session() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--idle-timeout", "500ms"]);
    let mut c = proxy.connect();
    client::echoes(&mut c, b'x');
    client::expect_closed(&mut c, PROMPTLY);
}

#[test]
fn idle_timeout_spares_a_session_whose_bytes_keep_moving() {
    // Older than its idle timeout, but never idle for long: it must live on, then be closed once
    // it does go quiet.
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--idle-timeout", "1500ms"]);
    let mut c = proxy.connect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        client::echoes(&mut c, b'.');
        std::thread::sleep(Duration::from_millis(100));
    }
    client::expect_closed(&mut c, PROMPTLY);
}

#[test]
fn max_connections_holds_third_client_until_one_leaves() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--max-connections", "2"]);
    let mut first = proxy.connect();
    client::echoes(&mut first, b'1');
    let mut second = proxy.connect();
    client::echoes(&mut second, b'2');

    let mut third = proxy.connect();
    third.write_all(b"3").unwrap();
    assert!(
        client::stays_silent(&mut third, Duration::from_millis(700)),
        "a third client was served (or closed) with --max-connections 2"
    );

    drop(first);
    let echoed = client::read_exactly(&mut third, 1);
    assert_eq!(echoed, b"3");
    client::echoes(&mut second, b'b');
    client::echoes(&mut third, b'c');
}

#[test]
fn accept_errors_back_off_instead_of_spinning() {
    let b = Backend::spawn(backend::echo);
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=32:32")
        .arg(proxy::bin())
        .args(["relay", "--listen", "127.0.0.1:0", "--to"])
        .arg(b.arg());
    let mut proxy = Fanout::spawn(cmd, "prlimit --nofile=32:32 fanout relay");
    let idle_fds = proxy.open_fds();

    // More clients than the proxy has descriptors for: the rest wait in the accept queue while
    // every accept fails with EMFILE.
    let clients: Vec<TcpStream> = (0..48).map(|_| proxy.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let fds = proxy.open_fds();
    assert!(
        fds >= 24,
        "fanout holds only {fds} descriptors: the limit was never reached"
    );
    let (cpu, runnable, wall) = (proxy.cpu_time(), proxy.runnable_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let wall = wall.elapsed();
    let cpu = proxy.cpu_time() - cpu;
    let runnable = proxy.runnable_time() - runnable;
    // A loop that retries accept at once is runnable all the time, and on an idle machine uses a
    // whole core; one that backs off sleeps most of the time.
    assert!(
        cpu < wall * 3 / 10 && runnable < wall * 3 / 10,
        "out of descriptors, fanout used {cpu:?} of CPU and was runnable for {runnable:?} in {wall:?}"
    );

    drop(clients);
    // Once the clients are gone, descriptors free up and new sessions are served again. The
    // proxy first accepts and ends every closed client still in its accept queue, and while that
    // churn lasts a new client may find no descriptor for its backend; so wait until the proxy
    // has held no more than its idle descriptors for longer than its longest accept back-off.
    let deadline = Instant::now() + LIVENESS * 4;
    let mut idle_since: Option<Instant> = None;
    while idle_since.is_none_or(|t| t.elapsed() < Duration::from_millis(1500)) {
        assert!(
            Instant::now() < deadline,
            "fanout still holds {} descriptors (idle: {idle_fds}) long after its clients left",
            proxy.open_fds()
        );
        if proxy.open_fds() <= idle_fds {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = proxy.connect();
    c.set_read_timeout(Some(LIVENESS * 2)).unwrap();
    client::echoes(&mut c, b'!');
    assert!(proxy.try_exit().is_none(), "fanout exited");
}

#[test]
fn bytes_sent_while_backend_connect_is_pending_are_delivered() {
    // The backend's accept queue is full, so the proxy's SYN is dropped and its connect waits for
    // a retransmission; meanwhile the client uploads. Nothing may be lost or reordered.
    let len = 2 * MIB;
    let hole = FullBacklog::new();
    let addr = hole.addr();
    let proxy = Fanout::relay(addr, &["--connect-timeout", "30s"]);
    let mut c = proxy.connect();
    let mut up = c.try_clone().unwrap();
    up.set_write_timeout(Some(BACKEND_TIMEOUT)).unwrap();
    let writer = std::thread::spawn(move || {
        pattern::write(&mut up, len, |_| {}).expect("upload through the proxy");
        up.shutdown(Shutdown::Write).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let _backend = hole.start_accepting(backend::count_upload);
    c.set_read_timeout(Some(BACKEND_TIMEOUT)).unwrap();
    let answer = client::read_to_eof(&mut c);
    writer.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        backend::count_line(len, pattern::digest(len))
    );
}

/// A backend that streams `len` bytes and records whether (and when) its writes failed because
/// the proxy closed its side.
fn stream_noting_cut(len: u64, cut: Arc<Mutex<Option<Instant>>>) -> Backend {
    Backend::spawn(move |mut s, _| {
        if pattern::write(&mut s, len, |_| {}).is_err() {
            *cut.lock().unwrap() = Some(Instant::now());
        }
    })
}

#[test]
fn client_reset_mid_response_closes_backend_promptly() {
    let cut = Arc::new(Mutex::new(None));
    let b = stream_noting_cut(GIB, Arc::clone(&cut));
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    Verifier::new().read_exactly(&mut c, MIB);
    backend::reset(c);
    assert!(
        eventually(PROMPTLY, || cut.lock().unwrap().is_some()),
        "the backend is still being read after its client reset"
    );
    // The proxy is unharmed: the next client is served.
    Verifier::new().read_exactly(&mut proxy.connect(), MIB);
}

#[test]
fn duplex_client_reset_mid_response_closes_primary_and_reports_client_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let cut = Arc::new(Mutex::new(None));
    let primary = stream_noting_cut(GIB, Arc::clone(&cut));
    let secondary = Backend::spawn(backend::echo);
    let proxy = Fanout::duplex(
        primary.addr(),
        &[secondary.arg()],
        &["--report", path.as_str()],
    );
    let mut c = proxy.connect();
    Verifier::new().read_exactly(&mut c, MIB);
    backend::reset(c);
    assert!(
        eventually(PROMPTLY, || cut.lock().unwrap().is_some()),
        "the primary is still being read after its client reset"
    );
    let sessions = report::wait_for(&path, 1);
    let p = report::backend(&sessions[0], &primary.arg());
    assert_eq!(p["outcome"], "client-gone", "{p:#}");
}

/// `fanout duplex` to `primary` and `secondary` reporting to `report`, with a descriptor limit
/// that leaves room for four whole sessions (three descriptors each: client, primary,
/// secondary) and then `spare` more: the fifth session's backend connects meet EMFILE.
fn duplex_short_of_descriptors(
    primary: &Backend,
    secondary: &Backend,
    report: &str,
    spare: usize,
) -> Fanout {
    let args = proxy::args([
        "duplex",
        "--listen",
        "127.0.0.1:0",
        "--primary",
        &primary.arg(),
        "--secondary",
        &secondary.arg(),
        "--report",
        report,
    ]);
    // The limit bounds descriptor numbers, and fanout may have inherited some far above the
    // ones it opens (cargo's jobserver pipe): count the free numbers below the limit.
    let idle = Fanout::start(&args);
    let used: Vec<usize> = std::fs::read_dir(format!("/proc/{}/fd", idle.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    let idle_fds = used.len();
    drop(idle);
    let mut limit = 0;
    let mut free = 0;
    while free < 4 * 3 + spare {
        if !used.contains(&limit) {
            free += 1;
        }
        limit += 1;
    }
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={limit}:{limit}"))
        .arg(proxy::bin())
        .args(&args);
    let proxy = Fanout::spawn(cmd, &format!("prlimit --nofile={limit} fanout duplex"));
    assert_eq!(
        proxy.open_fds(),
        idle_fds,
        "fanout holds another number of descriptors under prlimit"
    );
    proxy
}

/// The report's backend outcomes once one is `want` (or whatever is there after a while).
fn outcomes_once(path: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let outcomes: Vec<String> = report::read(path)
            .iter()
            .flat_map(|s| s["backends"].as_array().unwrap().clone())
            .map(|b| b["outcome"].as_str().unwrap().to_string())
            .collect();
        if outcomes.iter().any(|o| o == want) || Instant::now() >= deadline {
            return outcomes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_secondary_that_cannot_get_a_descriptor_is_reported_no_descriptors_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::echo);
    let secondary = Backend::spawn(backend::echo);
    // Room for the fifth client and its primary, not its secondary.
    let proxy = duplex_short_of_descriptors(&primary, &secondary, &path, 2);
    let mut clients: Vec<TcpStream> = (0..5u8)
        .map(|i| {
            let mut c = proxy.connect();
            client::echoes(&mut c, i);
            c
        })
        .collect();
    assert!(
        eventually(LIVENESS, || proxy
            .stderr()
            .contains("cannot open a backend socket")),
        "the shortage at connect was not logged: {}",
        proxy.stderr()
    );
    assert!(
        proxy.stderr().contains("pausing accepts"),
        "{}",
        proxy.stderr()
    );
    // The fifth session goes on without its secondary.
    client::echoes(&mut clients[4], b'5');
    drop(clients);
    let outcomes = outcomes_once(&path, "no-descriptors");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "no-descriptors").count(),
        1,
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o == "refused"), "{outcomes:?}");
}

#[test]
fn a_primary_that_cannot_get_a_descriptor_closes_its_client_and_is_reported_no_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let primary = Backend::spawn(backend::echo);
    let secondary = Backend::spawn(backend::echo);
    // Room for the fifth client, not its primary.
    let proxy = duplex_short_of_descriptors(&primary, &secondary, &path, 1);
    let _served: Vec<TcpStream> = (0..4u8)
        .map(|i| {
            let mut c = proxy.connect();
            client::echoes(&mut c, i);
            c
        })
        .collect();
    let mut fifth = proxy.connect();
    let _ = fifth.write_all(b"?");
    client::expect_closed(&mut fifth, PROMPTLY);
    let outcomes = outcomes_once(&path, "no-descriptors");
    assert!(
        outcomes.iter().any(|o| o == "no-descriptors"),
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o == "refused"), "{outcomes:?}");
}

#[test]
fn reaching_max_connections_is_logged_once_not_per_client() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--max-connections", "1"]);
    let said = |p: &Fanout| p.stderr().matches("max connections reached").count();
    for i in 0..5u8 {
        let mut c = proxy.connect();
        client::echoes(&mut c, i);
        assert!(
            eventually(LIVENESS, || said(&proxy) == 1),
            "after {} clients at the limit: {}",
            i + 1,
            proxy.stderr()
        );
    }
}
