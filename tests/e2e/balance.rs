//! `fanout balance`: each client goes to one upstream chosen by the strategy; an upstream that
//! refuses connects is out of rotation until `--retry-after`, and the client whose connect failed
//! is served by the next one. Every backend here answers its own name, then echoes the request,
//! so each session says which upstream served it and that its bytes arrived intact.

use crate::support::backend::{self, Backend, FullBacklog, Stop};
use crate::support::client;
use crate::support::pattern;
use crate::support::proxy::{args, balance_args, report_path, run_to_exit, Fanout};
use crate::support::{eventually, report, LIVENESS};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A backend that sends `NAME:` at once, then echoes every byte until the client's EOF.
fn named(name: &'static str) -> impl Fn(TcpStream, &Stop) + Send + Sync + 'static {
    move |mut s, stop| {
        if s.write_all(format!("{name}:").as_bytes()).is_ok() {
            backend::echo(s, stop);
        }
    }
}

/// `b0`, `b1`, ... each [`named`], and their addresses as `--to` arguments.
fn named_backends(names: &[&'static str]) -> (Vec<Backend>, Vec<String>) {
    let backends: Vec<Backend> = names.iter().map(|n| Backend::spawn(named(n))).collect();
    let to = backends.iter().map(Backend::arg).collect();
    (backends, to)
}

/// One session: sends `request`, half-closes, reads the answer to EOF. Returns the name of the
/// backend that served it, after checking it echoed `request` unchanged.
fn served_by(proxy: SocketAddr, request: &[u8]) -> String {
    let reply = client::request(proxy, request);
    split_reply(&reply, request)
}

/// As [`served_by`], but `None` when the proxy closed the client without an answer.
fn try_served_by(proxy: SocketAddr, request: &[u8]) -> Option<String> {
    let mut s = client::connect(proxy);
    // The proxy may close a client it cannot serve before or while the request is written.
    if s.write_all(request).is_err() || s.shutdown(Shutdown::Write).is_err() {
        return None;
    }
    let mut reply = Vec::new();
    match s.read_to_end(&mut reply) {
        Ok(_) if !reply.is_empty() => Some(split_reply(&reply, request)),
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("no answer and no close within {LIVENESS:?}")
        }
        Err(_) => None,
    }
}

fn split_reply(reply: &[u8], request: &[u8]) -> String {
    let colon = reply
        .iter()
        .position(|&b| b == b':')
        .unwrap_or_else(|| panic!("no NAME: in the reply {:?}", String::from_utf8_lossy(reply)));
    let name = String::from_utf8_lossy(&reply[..colon]).into_owned();
    assert!(
        &reply[colon + 1..] == request,
        "{name} echoed {} bytes, not the {} of the request unchanged",
        reply.len() - colon - 1,
        request.len()
    );
    name
}

/// A session held open: connected, its backend's name read. Dropping it ends the session.
fn hold(proxy: SocketAddr) -> (TcpStream, String) {
    let mut s = client::connect(proxy);
    let name = client::read_exactly(&mut s, 3);
    (
        s,
        String::from_utf8(name)
            .unwrap()
            .trim_end_matches(':')
            .into(),
    )
}

/// Ports on which nothing listens (connects are refused), all distinct.
fn closed_ports(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// A backend [`named`] `name` started on `addr`, where a refused upstream listened before.
fn revive(addr: SocketAddr, name: &'static str) -> Backend {
    let l = TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("cannot listen on {addr} again (taken meanwhile?): {e}"));
    Backend::on(l, named(name))
}

/// Waits until fanout's stderr holds `text` (logs arrive through a pipe reader thread).
fn logged(proxy: &Fanout, text: &str) {
    assert!(
        eventually(LIVENESS, || proxy.stderr().contains(text)),
        "no log line with {text:?} on stderr:\n{}",
        proxy.stderr()
    );
}

#[test]
fn round_robin_spreads_sessions_in_turn_over_every_backend() {
    let (_backends, to) = named_backends(&["b0", "b1", "b2"]);
    let proxy = Fanout::balance(&to, &[]);
    let order: Vec<String> = (0..4).map(|_| served_by(proxy.addr(), b"hi")).collect();
    assert_eq!(order, ["b0", "b1", "b2", "b0"]);
}

#[test]
fn least_conn_sends_a_new_session_to_the_backend_with_the_fewest_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let (_backends, to) = named_backends(&["b0", "b1", "b2"]);
    let proxy = Fanout::balance(&to, &["--strategy", "least-conn", "--report", &path]);
    let ended = |n| {
        report::wait_for(&path, n);
    };

    // Open sessions 1, 0, 0: short sessions all go to b1 (the first of the least loaded), where
    // round-robin would have gone on to b2 and b0.
    let (_held0, name) = hold(proxy.addr());
    assert_eq!(name, "b0");
    for n in 1..=3 {
        assert_eq!(served_by(proxy.addr(), b"short"), "b1", "short session {n}");
        ended(n); // its end is counted before the next session starts
    }
    // Open sessions 1, 1, 0: the next goes to b2.
    let (_held1, name) = hold(proxy.addr());
    assert_eq!(name, "b1");
    assert_eq!(served_by(proxy.addr(), b"short"), "b2");
    ended(4);
    // b0's session ends: 0, 1, 0, and b0 is the first of the least loaded again.
    drop(_held0);
    ended(5);
    assert_eq!(served_by(proxy.addr(), b"short"), "b0");
}

#[test]
fn random_with_a_fixed_seed_reaches_every_backend_and_repeats_its_choices() {
    let (_backends, to) = named_backends(&["b0", "b1", "b2"]);
    let run = |seed: &str| -> Vec<String> {
        let proxy = Fanout::balance(&to, &["--strategy", "random", "--seed", seed]);
        (0..24).map(|_| served_by(proxy.addr(), b"r")).collect()
    };
    let first = run("42");
    for name in ["b0", "b1", "b2"] {
        assert!(
            first.iter().any(|n| n == name),
            "{name} never chosen: {first:?}"
        );
    }
    assert_eq!(run("42"), first, "the same seed chose another sequence");
    assert_ne!(
        run("43"),
        first,
        "another seed chose the very same 24 upstreams"
    );
}

#[test]
fn a_refusing_backend_is_taken_out_its_client_served_by_the_next_and_retried_after_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let dead = closed_ports(1)[0];
    let (_backends, mut to) = named_backends(&["b1", "b2"]);
    to.insert(0, dead.to_string());
    let retry = Duration::from_secs(3);
    let proxy = Fanout::balance(&to, &["--retry-after", "3s", "--report", &path]);

    // Session 1 goes to the dead upstream first; its 64 KiB reach b1 whole and in order.
    let mut request = vec![0u8; 64 * 1024];
    pattern::fill(0, &mut request);
    let taken_out_after = Instant::now();
    assert_eq!(served_by(proxy.addr(), &request), "b1");
    let taken_out_by = Instant::now();

    // Later sessions skip it: round-robin goes on with b2, then (dead skipped) b1.
    assert_eq!(served_by(proxy.addr(), b"two"), "b2");
    assert_eq!(served_by(proxy.addr(), b"three"), "b1");
    assert!(
        taken_out_after.elapsed() < retry,
        "sessions 1 to 3 took longer than --retry-after: the test cannot tell skipping from \
         retrying"
    );
    logged(&proxy, &format!("upstream 0 ({dead}) failed to connect"));
    logged(&proxy, "out of rotation for 3s");
    let sessions = report::wait_for(&path, 3);
    let tried = |s: &serde_json::Value| -> Vec<(String, String)> {
        s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
                (text(&b["address"]), text(&b["outcome"]))
            })
            .collect()
    };
    assert_eq!(
        tried(&sessions[0]),
        [
            (dead.to_string(), "refused".to_string()),
            (to[1].clone(), "ok".to_string())
        ]
    );
    assert_eq!(tried(&sessions[1]), [(to[2].clone(), "ok".to_string())]);
    assert_eq!(tried(&sessions[2]), [(to[1].clone(), "ok".to_string())]);

    // It comes back; once --retry-after passed it is chosen in its turn again, and serves.
    let _b0 = revive(dead, "b0");
    std::thread::sleep((taken_out_by + retry + Duration::from_millis(200)) - Instant::now());
    let next: Vec<String> = (0..3).map(|_| served_by(proxy.addr(), b"back")).collect();
    assert!(next.iter().any(|n| n == "b0"), "b0 not retried: {next:?}");
    logged(&proxy, &format!("retrying upstream 0 ({dead})"));
}

#[test]
fn a_client_that_half_closed_before_its_upstream_timed_out_is_served_whole_by_the_next() {
    // SYNs to a full backlog are dropped: the connect hangs until --connect-timeout, long after
    // the client's request and FIN arrived.
    let hanging = FullBacklog::new();
    let (_backends, mut to) = named_backends(&["b1"]);
    to.insert(0, hanging.addr().to_string());
    let proxy = Fanout::balance(&to, &["--connect-timeout", "300ms"]);
    let mut request = vec![0u8; 10_000];
    pattern::fill(0, &mut request);
    assert_eq!(served_by(proxy.addr(), &request), "b1");
    logged(&proxy, "failed to connect (TimedOut)");
}

#[test]
fn with_every_backend_down_the_client_is_closed_and_serving_resumes_once_one_is_back() {
    let dead = closed_ports(2);
    let to: Vec<String> = dead.iter().map(ToString::to_string).collect();
    let proxy = Fanout::balance(&to, &["--retry-after", "500ms"]);

    for attempt in 0..2 {
        let mut c = proxy.connect();
        let _ = c.write_all(b"anyone?");
        let (_, bytes) = client::expect_closed(&mut c, LIVENESS);
        assert_eq!(bytes, 0, "attempt {attempt}: bytes from nowhere");
    }
    logged(&proxy, "no upstream left to try");

    let _b1 = revive(dead[1], "b1");
    assert!(
        eventually(LIVENESS, || try_served_by(proxy.addr(), b"again")
            .is_some_and(|n| n == "b1")),
        "not served by the revived upstream within {LIVENESS:?}; stderr:\n{}",
        proxy.stderr()
    );
    // Its peer is still down and out of rotation most of the time: b1 goes on serving.
    for _ in 0..3 {
        assert_eq!(
            try_served_by(proxy.addr(), b"more").as_deref(),
            Some("b1"),
            "stderr:\n{}",
            proxy.stderr()
        );
    }
}

#[test]
fn the_report_names_the_upstream_each_session_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let (_backends, to) = named_backends(&["b0", "b1"]);
    let proxy = Fanout::balance(&to, &["--report", &path]);
    let mut served = Vec::new();
    for _ in 0..4 {
        let mut c = proxy.connect();
        let me = c.local_addr().unwrap().to_string();
        c.write_all(b"which?").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let name = split_reply(&client::read_to_eof(&mut c), b"which?");
        served.push((me, name));
    }
    let sessions = report::wait_for(&path, served.len());
    for (client, name) in &served {
        let s = report::session_of(&sessions, client);
        let backends = s["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 1, "{s:#}");
        let address = if name == "b0" { &to[0] } else { &to[1] };
        assert_eq!(backends[0]["address"], address.as_str(), "{s:#}");
        assert_eq!(backends[0]["outcome"], "ok", "{s:#}");
    }
}

#[test]
fn an_unknown_strategy_is_refused_naming_the_valid_ones_with_status_2() {
    let out = run_to_exit(
        &balance_args(
            &["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            &["--strategy", "fastest"],
        ),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    for valid in ["round-robin", "least-conn", "random"] {
        assert!(out.stderr.contains(valid), "{}", out.stderr);
    }
}

#[test]
fn a_balanced_capture_with_the_random_strategy_replays_into_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("balance.fcap");
    let file = file.to_str().unwrap();
    let dead = closed_ports(1)[0];
    let (_backends, mut to) = named_backends(&["b1", "b2"]);
    to.insert(0, dead.to_string());
    let mut proxy = Fanout::balance(
        &to,
        &["--strategy", "random", "--seed", "123", "--capture", file],
    );
    for n in 0..8u8 {
        let request = vec![b'a' + n; 100 * usize::from(n + 1)];
        served_by(proxy.addr(), &request);
    }
    logged(&proxy, "failed to connect"); // the dead upstream's failover is in the capture
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());

    let inspect = run_to_exit(&args(["capture", "inspect", file]), LIVENESS);
    assert!(inspect.status.success(), "{}", inspect.stderr);
    assert!(
        inspect
            .stdout
            .contains("mode balance --strategy random --seed 123 --retry-after 5s,"),
        "{}",
        inspect.stdout
    );
    let replay = run_to_exit(&args(["replay", "--engine", file]), LIVENESS);
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay.stdout.starts_with("reproduced "),
        "{}",
        replay.stdout
    );
}
