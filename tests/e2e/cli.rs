//! The command line: the em-proxy form, every kind of backend address, how bad input and a
//! busy port end the process, and `--max-connections` as the whole process's limit.

use crate::support::backend::{self, Backend, Stop};
use crate::support::proxy::{args, run_to_exit, Fanout};
use crate::support::ReadRetrying;
use crate::support::{client, eventually, LIVENESS};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend that records every request (read to EOF) and answers `response`.
fn recording(response: &'static [u8]) -> (Backend, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let b = Backend::spawn(move |mut s: TcpStream, _: &Stop| {
        let req = backend::read_request(&mut s);
        log.lock().unwrap().push(req);
        if s.write_all(response).is_ok() {
            backend::finish(s);
        }
    });
    (b, seen)
}

#[test]
fn em_proxy_form_listens_on_loopback_and_fans_out_to_every_secondary() {
    let (primary, p_seen) = recording(b"from primary");
    let (s1, s1_seen) = recording(b"from s1");
    let (s2, s2_seen) = recording(b"from s2");
    let proxy = Fanout::start(&args([
        "-l".to_string(),
        "0".to_string(),
        "-r".to_string(),
        primary.arg(),
        "-d".to_string(),
        format!("{},{}", s1.arg(), s2.arg()),
        "-v".to_string(),
    ]));
    assert_eq!(
        proxy.addr().ip().to_string(),
        "127.0.0.1",
        "a bare port must listen on loopback only"
    );
    assert_ne!(proxy.addr().port(), 0);

    let mut c = proxy.connect();
    let me = c.local_addr().unwrap().to_string();
    c.write_all(b"hello all").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client::read_to_eof(&mut c), b"from primary");
    drop(c);

    for (name, seen) in [("primary", &p_seen), ("s1", &s1_seen), ("s2", &s2_seen)] {
        assert!(
            eventually(LIVENESS, || seen.lock().unwrap().len() == 1),
            "{name} did not get the request"
        );
        assert_eq!(seen.lock().unwrap()[0], b"hello all", "{name}");
    }
    assert!(
        eventually(LIVENESS, || proxy.stderr().lines().any(|l| l
            .contains("session")
            && l.contains(&format!("{me} primary")))),
        "-v printed no summary line for session of {me}; stderr:\n{}",
        proxy.stderr()
    );
}

#[test]
fn em_proxy_form_with_listen_address_and_no_secondaries_relays() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::start(&args(["-l", "127.0.0.1:0", "-r", &b.arg()]));
    assert_eq!(client::request(proxy.addr(), b"em-proxy"), b"em-proxy");
}

#[test]
fn bare_listen_port_listens_on_loopback() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::start(&args(["relay", "--listen", "0", "--to", &b.arg()]));
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
    let mut c = proxy.connect();
    client::echoes(&mut c, b'l');
}

/// Echo on a Unix socket, stopped on drop.
struct UnixEcho {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stop: Stop,
}

impl UnixEcho {
    fn spawn() -> UnixEcho {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backend.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stop = Stop::default();
        let watch = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if watch.stopped() {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(LIVENESS)).unwrap();
                conn.set_write_timeout(Some(LIVENESS)).unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = conn.read_retrying(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                });
            }
        });
        UnixEcho {
            path,
            _dir: dir,
            stop,
        }
    }
}

impl Drop for UnixEcho {
    fn drop(&mut self) {
        self.stop.stop();
        let _ = UnixStream::connect(&self.path);
    }
}

#[test]
fn unix_socket_backend_works() {
    let echo = UnixEcho::spawn();
    let proxy = Fanout::relay(format!("unix:{}", echo.path.display()), &[]);
    let mut c = proxy.connect();
    client::echoes(&mut c, b'u');
    assert_eq!(client::request(proxy.addr(), b"over unix"), b"over unix");
}

#[test]
fn unix_socket_secondary_is_reported_by_its_address() {
    let echo = UnixEcho::spawn();
    let unix = format!("unix:{}", echo.path.display());
    let primary = Backend::spawn(backend::echo);
    let dir = tempfile::tempdir().unwrap();
    let path = crate::support::proxy::report_path(dir.path());
    let proxy = Fanout::duplex(
        primary.addr(),
        std::slice::from_ref(&unix),
        &["--report", path.as_str()],
    );
    assert_eq!(client::request(proxy.addr(), b"both ways"), b"both ways");
    let sessions = crate::support::report::wait_for(&path, 1);
    let s = crate::support::report::backend(&sessions[0], &unix);
    assert_eq!(s["outcome"], "ok", "{s:#}");
    assert_eq!(s["matches_primary"], true, "{s:#}");
}

#[test]
fn ipv6_loopback_backend_works() {
    let listener = TcpListener::bind("[::1]:0").expect("bind [::1]:0");
    let port = listener.local_addr().unwrap().port();
    let b = Backend::on(listener, backend::echo);
    let proxy = Fanout::relay(format!("[::1]:{port}"), &[]);
    assert_eq!(client::request(proxy.addr(), b"over v6"), b"over v6");
    assert_eq!(b.accepted(), 1);
}

#[test]
fn bind_source_makes_backend_connects_come_from_that_address() {
    // The backend answers with the address the connection came from.
    let b = Backend::spawn(|mut s: TcpStream, _: &Stop| {
        let peer = s.peer_addr().unwrap().ip().to_string();
        backend::read_request(&mut s);
        if s.write_all(peer.as_bytes()).is_ok() {
            backend::finish(s);
        }
    });
    let proxy = Fanout::relay(b.addr(), &["--bind-source", "127.0.0.2"]);
    assert_eq!(client::request(proxy.addr(), b"who am i?"), b"127.0.0.2");
    let plain = Fanout::relay(b.addr(), &[]);
    assert_eq!(client::request(plain.addr(), b"and now?"), b"127.0.0.1");
}

/// Echo backends on both 127.0.0.1:P and [::1]:P, so `localhost:P` works whichever address the
/// name resolves to first.
fn dual_stack_echo() -> (u16, Backend, Backend) {
    for _ in 0..50 {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Ok(v6) = TcpListener::bind(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port))) {
            return (
                port,
                Backend::on(v4, backend::echo),
                Backend::on(v6, backend::echo),
            );
        }
    }
    panic!("no port free on both 127.0.0.1 and [::1]");
}

#[test]
fn localhost_name_backend_works() {
    let (port, v4, v6) = dual_stack_echo();
    let proxy = Fanout::relay(format!("localhost:{port}"), &[]);
    assert_eq!(client::request(proxy.addr(), b"by name"), b"by name");
    assert_eq!(v4.accepted() + v6.accepted(), 1);
}

#[test]
fn unknown_flag_exits_2_with_message() {
    let out = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--no-such-flag",
        ]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--no-such-flag"), "{out:?}");
    assert!(!out.stdout.contains("listening on"), "{out:?}");
}

#[test]
fn malformed_duration_exits_2_with_message() {
    let out = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--idle-timeout",
            "soonish",
        ]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("soonish"), "{out:?}");
}

#[test]
fn low_water_above_high_water_exits_2_with_message() {
    let out = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--high-water",
            "64KiB",
            "--low-water",
            "1MiB",
        ]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.to_lowercase().contains("water"), "{out:?}");
}

#[test]
fn em_proxy_form_without_remote_exits_2_with_message() {
    let out = run_to_exit(&args(["-l", "0"]), LIVENESS);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("-r"), "{out:?}");
}

#[test]
fn config_file_with_unknown_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fanout.toml");
    std::fs::write(&cfg, "idle-timeout = \"1s\"\nidle-timeuot = \"2s\"\n").unwrap();
    let out = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--config",
            cfg.to_str().unwrap(),
        ]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("idle-timeuot"), "{out:?}");
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("absent.toml");
    let cfg = cfg.to_str().unwrap();
    let out = run_to_exit(
        &args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--config",
            cfg,
        ]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains(cfg), "{out:?}");
}

#[test]
fn unix_listen_address_exits_2_with_message() {
    // unix:/path is for backends only.
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("listen.sock").display());
    let out = run_to_exit(
        &args(["relay", "--listen", &sock, "--to", "127.0.0.1:9"]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("unix:"), "{out:?}");
}

#[test]
fn address_in_use_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_exit(
        &args(["relay", "--listen", &addr, "--to", "127.0.0.1:9"]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&addr), "{out:?}");
}

#[test]
fn config_file_sets_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fanout.toml");
    std::fs::write(&cfg, "idle-timeout = \"500ms\"\n").unwrap();
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--config", cfg.to_str().unwrap()]);
    let mut c = proxy.connect();
    client::echoes(&mut c, b'c');
    client::expect_closed(&mut c, Duration::from_secs(4));
}

#[test]
fn flags_win_over_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fanout.toml");
    std::fs::write(&cfg, "idle-timeout = \"300ms\"\n").unwrap();
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(
        b.addr(),
        &["--config", cfg.to_str().unwrap(), "--idle-timeout", "60s"],
    );
    let mut c = proxy.connect();
    client::echoes(&mut c, b'f');
    assert!(
        client::stays_silent(&mut c, Duration::from_millis(1500)),
        "the config file's 300ms idle timeout beat the --idle-timeout 60s flag"
    );
    client::echoes(&mut c, b'g');
}

#[test]
fn ipv6_listen_address_works() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::start(&args(["relay", "--listen", "[::1]:0", "--to", &b.arg()]));
    assert_eq!(proxy.addr().ip().to_string(), "::1");
    assert_eq!(client::request(proxy.addr(), b"from v6"), b"from v6");
}

#[test]
fn localhost_listen_address_works() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::start(&args([
        "relay",
        "--listen",
        "localhost:0",
        "--to",
        &b.arg(),
    ]));
    assert!(proxy.addr().ip().is_loopback(), "{}", proxy.addr());
    assert_eq!(client::request(proxy.addr(), b"by name"), b"by name");
}

#[test]
fn em_proxy_long_flags_work_as_in_its_bin() {
    let (primary, p_seen) = recording(b"from primary");
    let (s1, s1_seen) = recording(b"from s1");
    let (s2, s2_seen) = recording(b"from s2");
    let proxy = Fanout::start(&args([
        "--listen".to_string(),
        "0".to_string(),
        "--relay".to_string(),
        primary.arg(),
        "--duplex".to_string(),
        format!("{},{}", s1.arg(), s2.arg()),
        "--verbose".to_string(),
    ]));
    assert_eq!(
        client::request(proxy.addr(), b"long flags"),
        b"from primary"
    );
    for (name, seen) in [("primary", &p_seen), ("s1", &s1_seen), ("s2", &s2_seen)] {
        assert!(
            eventually(LIVENESS, || seen.lock().unwrap().len() == 1),
            "{name} did not get the request"
        );
    }
    assert!(
        eventually(LIVENESS, || proxy.stderr().contains(" primary ok ")),
        "--verbose printed no summary line; stderr:\n{}",
        proxy.stderr()
    );
}

#[test]
fn em_proxy_socket_flag_relays_to_a_unix_socket() {
    let echo = UnixEcho::spawn();
    let path = echo.path.to_str().unwrap();
    for flag in ["-s", "--socket"] {
        let proxy = Fanout::start(&args(["-l", "0", flag, path]));
        assert_eq!(client::request(proxy.addr(), b"via socket"), b"via socket");
    }
    let out = run_to_exit(
        &args(["-l", "0", "-r", "127.0.0.1:9", "-s", path]),
        LIVENESS,
    );
    assert_eq!(out.status.code(), Some(2), "-r and -s together: {out:?}");
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_backend_equal_to_the_listen_address_is_refused_at_start_as_a_loop() {
    let port = free_port();
    let here = format!("127.0.0.1:{port}");
    for a in [
        args(["relay", "--listen", &here, "--to", &here]),
        args(["-l", &port.to_string(), "-r", &here]),
        args([
            "duplex",
            "--listen",
            &here,
            "--primary",
            "127.0.0.1:9",
            "--secondary",
            &here,
        ]),
        args([
            "balance",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--to",
            &here,
        ]),
    ] {
        let out = run_to_exit(&a, LIVENESS);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {out:?}");
        assert!(out.stderr.contains("loop"), "{a:?}: {}", out.stderr);
        assert!(!out.stdout.contains("listening on"), "{a:?}: {out:?}");
    }
}

#[test]
fn an_oversized_or_endless_config_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    for file in [Path::new("/dev/zero"), big.as_path()] {
        let out = run_to_exit(
            &args(["relay", "--config", file.to_str().unwrap()]),
            LIVENESS,
        );
        assert_eq!(out.status.code(), Some(2), "{file:?}: {out:?}");
        assert!(
            out.stderr.contains("larger than 1 MiB"),
            "{file:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_negative_duration_names_its_flag() {
    for flag in [
        "--connect-timeout",
        "--idle-timeout",
        "--secondary-deadline",
        "--drain-timeout",
        "--effect-timeout",
    ] {
        for a in [
            args(["relay", "--listen", "0", "--to", "127.0.0.1:9", flag, "-5s"]),
            args([
                "relay".to_string(),
                "--listen".to_string(),
                "0".to_string(),
                "--to".to_string(),
                "127.0.0.1:9".to_string(),
                format!("{flag}=-5s"),
            ]),
        ] {
            let out = run_to_exit(&a, LIVENESS);
            assert_eq!(out.status.code(), Some(2), "{a:?}: {out:?}");
            assert!(out.stderr.contains(flag), "{a:?}: {}", out.stderr);
            assert!(out.stderr.contains("negative"), "{a:?}: {}", out.stderr);
        }
    }
}

/// Connects `n` clients, sends each one byte, and returns the indices of those that got no echo
/// while all of them were connected.
fn unanswered(proxy: &Fanout, n: usize) -> Vec<usize> {
    let mut clients: Vec<TcpStream> = (0..n).map(|_| proxy.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&[i as u8]).unwrap();
    }
    let deadline = Instant::now() + LIVENESS;
    let mut missing = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(50))))
            .unwrap();
        let mut b = [0u8; 1];
        if !matches!(c.read_retrying(&mut b), Ok(1) if b[0] == i as u8) {
            missing.push(i);
        }
    }
    missing
}

#[test]
fn max_connections_is_the_whole_process_limit_across_threads() {
    // The kernel spreads connects over the two loops' listeners unevenly; each of the 100 must
    // be served while the other 99 stay connected.
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--threads", "2", "--max-connections", "100"]);
    let missing = unanswered(&proxy, 100);
    assert!(
        missing.is_empty(),
        "{} of 100 clients were not served with --threads 2 --max-connections 100: {missing:?}",
        missing.len()
    );
}

#[test]
fn max_connections_across_threads_holds_the_next_client_until_one_leaves() {
    let b = Backend::spawn(backend::echo);
    let proxy = Fanout::relay(b.addr(), &["--threads", "2", "--max-connections", "2"]);
    let mut first = proxy.connect();
    client::echoes(&mut first, b'1');
    let mut second = proxy.connect();
    client::echoes(&mut second, b'2');
    let mut third = proxy.connect();
    third.write_all(b"3").unwrap();
    assert!(
        client::stays_silent(&mut third, Duration::from_millis(700)),
        "a third client was served with --max-connections 2 over two loops"
    );
    drop(first);
    assert_eq!(client::read_exactly(&mut third, 1), b"3");
    client::echoes(&mut second, b'b');
}
