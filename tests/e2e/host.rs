//! Programs on `fanout_io::host`, through the smallest of them, `io/examples/port_forward.rs`:
//! it relays like `fanout relay`, drains on SIGTERM, records captures under its own name that its
//! own `replay --engine` reproduces, and exits 2 on a usage error. See `support::example` for how
//! the example binary is found and kept current.

use crate::support::backend::{echo, Backend};
use crate::support::client;
use crate::support::example;
use crate::support::proxy::{args, run_to_exit, Fanout};
use crate::support::LIVENESS;
use std::process::{Command, Stdio};

/// `port_forward ARGS...`, started, its `listening on` line read.
fn port_forward(a: &[String]) -> Fanout {
    let mut cmd = Command::new(example::path("port_forward"));
    cmd.args(a);
    Fanout::spawn(cmd, &format!("port_forward {}", a.join(" ")))
}

/// `port_forward ARGS...` run to its exit: (status code, stdout, stderr).
fn port_forward_to_exit(a: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(example::path("port_forward"))
        .args(a)
        .stdin(Stdio::null())
        .output()
        .expect("run port_forward");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn port_forward_relays_bytes_to_its_upstream_and_drains_on_sigterm() {
    let b = Backend::spawn(echo);
    let mut proxy = port_forward(&args(["--listen", "127.0.0.1:0", "--to", &b.arg()]));
    let mut c = proxy.connect();
    client::echoes(&mut c, b'p');
    drop(c);
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    assert!(
        client::request(proxy.addr(), &big) == big,
        "256 KiB through port_forward came back different"
    );
    assert_eq!(b.accepted(), 2);
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
}

#[test]
fn port_forward_captures_under_its_name_and_replays_into_its_own_engine() {
    let b = Backend::spawn(echo);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pf.fcap");
    let file = file.to_str().unwrap();
    let mut proxy = port_forward(&args([
        "--listen",
        "127.0.0.1:0",
        "--to",
        &b.arg(),
        "--capture",
        file,
    ]));
    for n in 0..3u8 {
        let req = vec![b'a' + n; 1000 * usize::from(n + 1)];
        assert_eq!(client::request(proxy.addr(), &req), req);
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());

    let inspect = run_to_exit(&args(["capture", "inspect", file]), LIVENESS);
    assert!(inspect.status.success(), "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("mode port_forward,"),
        "the capture's mode is not the program's name:\n{}",
        inspect.stdout
    );
    let (code, out, err) = port_forward_to_exit(&["replay", "--engine", file]);
    assert_eq!(code, Some(0), "replay --engine failed:\n{out}{err}");
    assert!(out.starts_with("reproduced "), "{out}");
}

#[test]
fn port_forward_usage_errors_exit_2_and_a_bad_capture_exits_1() {
    for (a, says) in [
        (&["--listen", "127.0.0.1:0"][..], "--to"),
        (&["--to", "127.0.0.1:1"], "--listen"),
        (
            &["--listen", "0", "--to", "1", "--bind-source", "nonsense"],
            "--bind-source",
        ),
        (&["--listen", "0", "--to", "1", "--bogus"], "--bogus"),
        (&["replay", "x.fcap"], "--engine"),
    ] {
        let (code, _, err) = port_forward_to_exit(a);
        assert_eq!(code, Some(2), "{a:?}: {err}");
        assert!(err.contains(says), "{a:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.fcap");
    std::fs::write(&bad, b"not a capture").unwrap();
    let (code, _, err) = port_forward_to_exit(&["replay", "--engine", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("port_forward: error: "), "{err}");
}

/// A program on `fanout_io::host` takes signals as `fanout` does: SIGHUP cuts no session, SIGTERM
/// drains, a second SIGTERM ends the drain at once with status 143.
#[test]
fn port_forward_takes_sighup_and_a_second_sigterm_as_fanout_does() {
    let b = Backend::spawn(echo);
    let mut proxy = port_forward(&args(["--listen", "127.0.0.1:0", "--to", &b.arg()]));
    let mut c = proxy.connect();
    client::echoes(&mut c, b'1');
    proxy.signal(libc::SIGHUP);
    client::echoes(&mut c, b'2');
    assert_eq!(client::request(proxy.addr(), b"after hup"), b"after hup");
    assert!(proxy.try_exit().is_none(), "SIGHUP ended the program");

    proxy.signal(libc::SIGTERM);
    assert!(
        crate::support::eventually(LIVENESS, || std::net::TcpStream::connect(proxy.addr())
            .is_err()),
        "the first SIGTERM did not start a drain"
    );
    client::echoes(&mut c, b'3');
    proxy.signal(libc::SIGTERM);
    client::expect_closed(&mut c, LIVENESS);
    let status = proxy.wait_exit(LIVENESS);
    assert_eq!(status.code(), Some(143), "{}", proxy.stderr());
}
