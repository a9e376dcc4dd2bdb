//! In-process loopback checks of the driver's basic behaviours. The end-to-end suite (tests/e2e)
//! runs the real binary against real servers; these stay small and fast.

use fanout_io::{cli, Proxy, Stopper};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A backend that echoes each connection until EOF, then closes it. Serves `conns` connections.
fn echo_backend(conns: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = l.accept().unwrap();
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Running {
    addr: SocketAddr,
    stopper: Stopper,
    thread: JoinHandle<Result<(), fanout_io::Error>>,
}

fn start(args: &[&str]) -> Running {
    let settings = cli::parse(std::iter::once("fanout").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e:?}"));
    let proxy = Proxy::bind(&settings).unwrap();
    let addr = proxy.local_addr();
    let stopper = proxy.stopper();
    let thread = thread::spawn(move || proxy.run());
    Running {
        addr,
        stopper,
        thread,
    }
}

impl Running {
    fn stop(self) {
        self.stopper.stop();
        self.thread.join().unwrap().unwrap();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn relay_carries_a_megabyte_both_ways_and_passes_the_fin_on() {
    let backend = echo_backend(1);
    let p = start(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &backend.to_string(),
    ]);
    let mut c = connect(p.addr);
    let sent: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = c.try_clone().unwrap();
    let data = sent.clone();
    let w = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    w.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the echo came back different");
    p.stop();
}

#[test]
fn refused_primary_closes_the_client() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = start(&["relay", "--listen", "0", "--to", &dead.to_string()]);
    let mut c = connect(p.addr);
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the client to be closed, got {other:?}"),
    }
    p.stop();
}

#[test]
fn duplex_reports_each_session_with_every_backend() {
    let primary = echo_backend(1);
    let secondary = echo_backend(1);
    let report = std::env::temp_dir().join(format!("fanout-loopback-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let p = start(&[
        "duplex",
        "--listen",
        "0",
        "--primary",
        &primary.to_string(),
        "--secondary",
        &secondary.to_string(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let mut c = connect(p.addr);
    c.write_all(b"ping").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping");
    drop(c);
    p.stop(); // waits for the session to finish, so its report is written
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_file(&report).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let b = &v["backends"];
    assert_eq!(b[0]["role"], "primary");
    assert_eq!(b[0]["address"], primary.to_string());
    assert_eq!(b[0]["outcome"], "ok");
    assert_eq!(b[0]["bytes_received"], 4);
    assert_eq!(b[1]["role"], "secondary");
    assert_eq!(b[1]["outcome"], "ok");
    assert_eq!(b[1]["matches_primary"], true);
    assert_eq!(b[0]["digest"], b[1]["digest"]);
}

#[test]
fn after_a_stop_new_connections_are_refused() {
    let backend = echo_backend(0);
    let p = start(&["relay", "--listen", "0", "--to", &backend.to_string()]);
    let addr = p.addr;
    p.stop();
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn several_loops_share_one_port() {
    let backend = echo_backend(8);
    let p = start(&[
        "relay",
        "--listen",
        "0",
        "--to",
        &backend.to_string(),
        "--threads",
        "2",
    ]);
    for i in 0..8u8 {
        let mut c = connect(p.addr);
        c.write_all(&[i; 3]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, [i; 3]);
    }
    p.stop();
}
