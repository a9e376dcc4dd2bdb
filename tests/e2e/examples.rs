//! em-proxy's examples, ported to interceptors (`io/examples/`), each run as a real program over
//! real sockets with real clients (Python's smtplib, curl). Where em-proxy's own
//! `spec/proxy_spec.rb` pins a behaviour, the test says which.

use crate::support::backend::{answer, echo, finish, read_request, Backend};
use crate::support::client;
use crate::support::example;
use crate::support::proxy::{args, Fanout};
use crate::support::smtp::Sink;
use crate::support::ReadRetrying;
use crate::support::{eventually, LIVENESS};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Example `name` with `a`, started; its `listening on` line read.
fn start(name: &str, a: &[String]) -> Fanout {
    let mut cmd = Command::new(example::path(name));
    cmd.args(["--listen", "127.0.0.1:0"]).args(a);
    Fanout::spawn(cmd, &format!("{name} {}", a.join(" ")))
}

/// A backend that answers every connection with `parts`, written one by one with a pause
/// between them (so they arrive as separate reads), then closes.
fn answers_in_parts(parts: &'static [&'static [u8]]) -> Backend {
    Backend::spawn(move |mut s: TcpStream, _| {
        let _ = read_request(&mut s);
        for p in parts {
            let _ = s.write_all(p);
            let _ = s.flush();
            std::thread::sleep(Duration::from_millis(30));
        }
        finish(s);
    })
}

/// A backend recording the bytes of every request head it reads, answering `reply`.
fn recording(reply: &'static [u8]) -> (Backend, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    let b = Backend::spawn(move |mut s: TcpStream, _| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read_retrying(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        g.lock().unwrap().push(head);
        let _ = s.write_all(reply);
        finish(s);
    });
    (b, got)
}

// ---- port_forward: em-proxy's hooks, logged ----------------------------------------------------

// proxy_spec: "should recieve data", "should call the on_connect callback", "should transparently
// redirect TCP traffic", "should invoke on_finish callback when connection is terminated".
#[test]
fn port_forward_logs_every_hook_and_relays_unchanged() {
    let b = Backend::spawn(answer(b"HTTP/1.0 200 OK\r\n\r\nhi".to_vec()));
    let mut proxy = start("port_forward", &args(["--to", &b.arg()]));
    let got = client::request(proxy.addr(), b"GET /test HTTP/1.0\r\n\r\n");
    assert_eq!(got, b"HTTP/1.0 200 OK\r\n\r\nhi");
    assert!(eventually(LIVENESS, || proxy
        .stderr()
        .contains("session over")));
    let log = proxy.stderr();
    for want in [
        "on_connect 127.0.0.1:",
        "on_connect backend 0",
        "on_data 22 bytes \"GET /test HTTP/1.0\\r\\n\\r\\n\"",
        "on_response backend 0 21 bytes \"HTTP/1.0 200 OK",
        "on_finish backend 0 Eof",
    ] {
        assert!(log.contains(want), "no {want:?} in:\n{log}");
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success());
}

// proxy_spec: "should connect to a unix socket".
#[test]
fn port_forward_reaches_a_unix_socket_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let _ = s.write_all(&buf);
        }
    });
    let to = format!("unix:{}", path.display());
    let proxy = start("port_forward", &args(["--to", &to, "--quiet"]));
    assert_eq!(client::request(proxy.addr(), b"over unix"), b"over unix");
}

// ---- line_interceptor --------------------------------------------------------------------------

// proxy_spec: "should intercept & alter response"; em-proxy's line_interceptor.rb.
#[test]
fn line_interceptor_rewrites_a_word_even_when_a_read_splits_it() {
    let b = answers_in_parts(&[
        b"hello world: 0\nsay hel",
        b"lo again\nhello",
        b" at the end",
    ]);
    let proxy = start("line_interceptor", &args(["--to", &b.arg()]));
    let got = client::request(proxy.addr(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "good bye world: 0\nsay good bye again\ngood bye at the end"
    );
}

#[test]
fn line_interceptor_passes_an_overlong_line_through_unchanged() {
    let long = vec![b'x'; 5000];
    let mut reply = b"hello\n".to_vec();
    reply.extend_from_slice(&long);
    let b = Backend::spawn(answer(reply));
    let proxy = start(
        "line_interceptor",
        &args(["--to", &b.arg(), "--max-frame", "1KiB"]),
    );
    let got = client::request(proxy.addr(), b"x");
    let mut want = b"good bye\n".to_vec();
    want.extend_from_slice(&long);
    assert_eq!(got, want, "nothing lost past the line limit");
}

// ---- selective_forward (duplex with a rewritten request header) ---------------------------------

#[test]
fn selective_forward_rewrites_the_user_agent_for_both_and_only_prod_is_heard() {
    let (prod, prod_got) = recording(b"HTTP/1.0 200 OK\r\n\r\nprod");
    let (test, test_got) = recording(b"HTTP/1.0 200 OK\r\n\r\ntest");
    let proxy = start(
        "selective_forward",
        &args(["--to", &prod.arg(), "--to", &test.arg()]),
    );
    // The head arrives in pieces that split the header name.
    let mut c = proxy.connect();
    for piece in [
        &b"GET / HTTP/1.0\r\nUser-Ag"[..],
        b"ent: curl/8\r\nX: 1\r",
        b"\n\r\n",
    ] {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client::read_to_eof(&mut c), b"HTTP/1.0 200 OK\r\n\r\nprod");
    assert!(eventually(LIVENESS, || test_got.lock().unwrap().len() == 1));
    for got in [&prod_got, &test_got] {
        let head = String::from_utf8(got.lock().unwrap()[0].clone()).unwrap();
        assert_eq!(
            head,
            "GET / HTTP/1.0\r\nUser-Agent: em-proxy/0.1\r\nX: 1\r\n\r\n"
        );
    }
    assert!(eventually(LIVENESS, || proxy
        .stderr()
        .contains("on_finish prod")));
    assert!(
        proxy.stderr().contains("test matches prod: false"),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn selective_forward_only_primary_sends_the_test_server_nothing() {
    let (prod, _) = recording(b"HTTP/1.0 200 OK\r\n\r\nprod");
    let test_bytes = Arc::new(Mutex::new(0usize));
    let t = Arc::clone(&test_bytes);
    let test = Backend::spawn(move |mut s: TcpStream, _| {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        *t.lock().unwrap() += buf.len();
    });
    let proxy = start(
        "selective_forward",
        &args(["--to", &prod.arg(), "--to", &test.arg(), "--only-primary"]),
    );
    let got = client::request(proxy.addr(), b"GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n");
    assert_eq!(got, b"HTTP/1.0 200 OK\r\n\r\nprod");
    assert!(eventually(LIVENESS, || test.accepted() == 1));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(*test_bytes.lock().unwrap(), 0);
}

// ---- SMTP: whitelist and spam filter, with Python's smtplib -------------------------------------

/// Runs a Python smtplib script against `port`; returns (exit ok, stdout+stderr).
fn smtplib(port: u16, body: &str) -> (bool, String) {
    let script =
        format!("import smtplib, sys\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\n{body}\n");
    let out = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// em-proxy's smtp_whitelist.rb.
#[test]
fn smtp_whitelist_refuses_a_recipient_itself_and_delivers_the_allowed() {
    let sink = Sink::spawn();
    let proxy = start(
        "smtp_whitelist",
        &args(["--to", &sink.backend.arg(), "--allow", "ilya@igvita.com"]),
    );
    let port = proxy.addr().port();
    let (ok, out) = smtplib(
        port,
        "print(s.sendmail('a@b.c', ['ilya@igvita.com'], 'Subject: hi\\r\\n\\r\\nhello'))\n\
         try:\n    s.sendmail('a@b.c', ['missing_user@igvita.com'], 'x')\n    print('accepted?!')\n\
         except smtplib.SMTPRecipientsRefused as e:\n    print('refused', e.recipients)\n\
         print(s.sendmail('a@b.c', ['ilya@igvita.com', 'nobody@x.y'], 'two'))\ns.quit()",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("{}\n"),
        "the first message went through: {out}"
    );
    assert!(
        out.contains("refused {'missing_user@igvita.com': (550, b'No such user here')}"),
        "{out}"
    );
    assert!(
        out.contains("{'nobody@x.y': (550, b'No such user here')}"),
        "one refused, one delivered: {out}"
    );
    let commands = sink.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("missing_user") || c.contains("nobody")),
        "a refused RCPT reached the server: {commands:?}"
    );
    assert_eq!(sink.messages().len(), 2, "{:?}", sink.messages());
}

#[test]
fn smtp_whitelist_keeps_reply_order_for_a_pipelining_client() {
    let sink = Sink::spawn();
    let proxy = start(
        "smtp_whitelist",
        &args(["--to", &sink.backend.arg(), "--allow", "@ok.test"]),
    );
    let mut c = proxy.connect();
    let mut greeting = [0u8; 256];
    let n = c.read_retrying(&mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"220"));
    // One write, four commands: the proxy's own 550 must come third, after two server replies.
    c.write_all(
        b"HELO me\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@bad.test>\r\nRCPT TO:<y@ok.test>\r\nQUIT\r\n",
    )
    .unwrap();
    let got = String::from_utf8(client::read_to_eof(&mut c)).unwrap();
    assert_eq!(
        got,
        "250 OK\r\n250 OK\r\n550 No such user here\r\n250 OK\r\n221 bye\r\n"
    );
}

fn spam_filter(sink: &Sink, extra: &[&str]) -> Fanout {
    let mut a = args(["--to", &sink.backend.arg(), "--spam-word", "viagra"]);
    a.extend(args(extra));
    start("smtp_spam_filter", &a)
}

// em-proxy's smtp_spam_filter.rb, with the verdict as an effect on the worker pool.
#[test]
fn smtp_spam_filter_delivers_ham_and_refuses_spam_before_the_server_sees_it() {
    let sink = Sink::spawn();
    let proxy = spam_filter(&sink, &[]);
    let (ok, out) = smtplib(
        proxy.addr().port(),
        "print('ham', s.sendmail('a@b.c', ['x@y.z'], 'Subject: hi\\r\\n\\r\\nhello there'))\n\
         try:\n    s.sendmail('a@b.c', ['x@y.z'], 'Subject: deal\\r\\n\\r\\ncheap VIAGRA now')\n\
         except smtplib.SMTPDataError as e:\n    print('spam', e.smtp_code, e.smtp_error)\n\
         print('after', s.noop())\ns.quit()",
    );
    assert!(ok, "{out}");
    assert!(out.contains("ham {}"), "{out}");
    assert!(
        out.contains("spam 550 b'5.7.1 Message rejected as spam'"),
        "{out}"
    );
    assert!(out.contains("after (250"), "the session goes on: {out}");
    let messages = sink.messages();
    assert_eq!(
        messages.len(),
        1,
        "only the ham reached the server: {messages:?}"
    );
    assert!(messages[0].contains("hello there"));
    let datas = sink.commands().iter().filter(|c| *c == "DATA").count();
    assert_eq!(datas, 1, "the server never entered DATA for the spam");
}

#[test]
fn smtp_spam_filter_answers_a_temporary_failure_when_the_verdict_is_late() {
    let sink = Sink::spawn();
    let proxy = spam_filter(
        &sink,
        &["--verdict-delay", "2s", "--effect-timeout", "300ms"],
    );
    let (ok, out) = smtplib(
        proxy.addr().port(),
        "try:\n    s.sendmail('a@b.c', ['x@y.z'], 'hello')\nexcept smtplib.SMTPDataError as e:\n    print('late', e.smtp_code)\ns.quit()",
    );
    assert!(ok, "{out}");
    assert!(out.contains("late 451"), "{out}");
    assert!(sink.messages().is_empty(), "nothing let through unchecked");
}

// ---- http_router --------------------------------------------------------------------------------

fn curl(addr: std::net::SocketAddr, host: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "%{http_code}", "-o", "-", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{addr}/path"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text[text.len().saturating_sub(3)..].to_string();
    (text[..text.len().saturating_sub(3)].to_string(), code)
}

#[test]
fn http_router_routes_by_host_and_answers_unknown_hosts_502_itself() {
    // curl keeps its write side open: the backends answer once the head is in.
    let (a, a_heads) =
        recording(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nA!");
    let (b, _) = recording(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nB!");
    let proxy = start(
        "http_router",
        &args([
            "--to",
            &a.arg(),
            "--to",
            &b.arg(),
            "--route",
            "a.example=0",
            "--route",
            "B.Example=1",
        ]),
    );
    assert_eq!(curl(proxy.addr(), "a.example"), ("A!".into(), "200".into()));
    assert_eq!(
        curl(proxy.addr(), "b.example:8080"),
        ("B!".into(), "200".into())
    );
    assert_eq!(
        curl(proxy.addr(), "evil.example"),
        ("unknown host\n".into(), "502".into())
    );
    assert_eq!(
        (a.accepted(), b.accepted()),
        (1, 1),
        "no backend saw the unknown host"
    );
    let head = String::from_utf8(a_heads.lock().unwrap()[0].clone()).unwrap();
    assert!(
        head.starts_with("GET /path HTTP/1.1\r\n"),
        "forwarded unchanged: {head}"
    );
}

#[test]
fn http_router_refuses_an_overlong_head_with_431() {
    let a = Backend::spawn(echo);
    let proxy = start(
        "http_router",
        &args(["--to", &a.arg(), "--route", "a=0", "--max-frame", "1KiB"]),
    );
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    req.extend(vec![b'y'; 4000]);
    let got = String::from_utf8_lossy(&client::request(proxy.addr(), &req)).into_owned();
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    assert_eq!(a.accepted(), 0);
}

// Effect results are engine inputs: a capture of the spam filter replays into its own engine
// without the executor, reproducing every output.
#[test]
fn a_spam_filter_capture_replays_without_the_executor() {
    let sink = Sink::spawn();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smtp.fcap");
    let file = file.to_str().unwrap();
    let mut proxy = spam_filter(&sink, &["--capture", file]);
    let (ok, out) = smtplib(
        proxy.addr().port(),
        "s.sendmail('a@b.c', ['x@y.z'], 'fine')\n\
         try:\n    s.sendmail('a@b.c', ['x@y.z'], 'viagra')\nexcept smtplib.SMTPDataError:\n    pass\ns.quit()",
    );
    assert!(ok, "{out}");
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(LIVENESS).success(), "{}", proxy.stderr());
    let inspect = crate::support::proxy::run_to_exit(&args(["capture", "inspect", file]), LIVENESS);
    assert!(inspect.status.success(), "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("effect-done"),
        "the capture holds the effect results:\n{}",
        inspect.stdout
    );
    // A different word list would judge differently; the replay must not consult it.
    let out = Command::new(example::path("smtp_spam_filter"))
        .args(["replay", "--engine", file, "--spam-word", "fine"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reproduced "));
}

#[test]
fn http_router_passes_bodies_and_pipelined_requests_through_byte_for_byte() {
    let a = Backend::spawn(echo);
    let proxy = start("http_router", &args(["--to", &a.arg(), "--route", "a=0"]));
    let mut c = proxy.connect();
    let pieces: [&[u8]; 4] = [
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhel",
        b"lo world",
        b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n",
        b"raw tail",
    ];
    for p in pieces {
        c.write_all(p).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(client::read_to_eof(&mut c), pieces.concat());
}
