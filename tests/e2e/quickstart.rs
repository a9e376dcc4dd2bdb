//! The README's quick start with real programs: two `python3 -m http.server` backends, fanout in
//! duplex mode, and `curl` through it.

use crate::support::proxy::{self, report_path, Fanout};
use crate::support::{report, LIVENESS};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `python3 -m http.server` on 127.0.0.1:0 serving `dir`; killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn spawn(dir: &std::path::Path) -> HttpServer {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 on PATH");
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(LIVENESS)
            .expect("http.server's Serving line");
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpServer { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sleeps until just after the start of the next wall-clock second, so both backends stamp the
/// same `Date:` header on their responses.
fn align_to_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(now.subsec_nanos() as u64);
    std::thread::sleep(Duration::from_secs(1) - into + Duration::from_millis(20));
}

#[test]
fn quick_start_curl_through_duplex_of_two_http_servers_matches() {
    let site = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(site.path().join("index.txt"), &body).unwrap();
    let a = HttpServer::spawn(site.path());
    let b = HttpServer::spawn(site.path());
    let dir = tempfile::tempdir().unwrap();
    let path = report_path(dir.path());
    let proxy = Fanout::duplex(a.addr(), &[b.addr()], &["--report", path.as_str()]);
    let url = format!("http://{}/index.txt", proxy.addr());

    // A response differs from the other only if the two `Date:` headers straddle a second;
    // then the report's first difference lies in that header, and we ask again.
    for attempt in 1..=3 {
        align_to_second();
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", &url])
            .output()
            .expect("curl on PATH");
        assert!(out.status.success(), "curl failed: {out:?}");
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        assert!(raw.starts_with(b"HTTP/1."), "not HTTP: {:?}", &raw[..20]);
        assert!(raw[split + 4..] == body[..], "curl got another body");

        let sessions = report::wait_for(&path, attempt);
        let session = &sessions[attempt - 1];
        let s = report::backend(session, &b.addr());
        if s["matches_primary"] == true {
            assert_eq!(s["outcome"], "ok", "{s:#}");
            assert_eq!(report::backend(session, &a.addr())["outcome"], "ok");
            return;
        }
        let head = String::from_utf8_lossy(&raw[..split]);
        let date = head.find("\r\nDate: ").expect("a Date header") + 2;
        let date_end = date + head[date..].find("\r\n").unwrap();
        let at = s["first_difference"].as_u64().unwrap_or(u64::MAX) as usize;
        assert!(
            (date..date_end).contains(&at),
            "secondary differs at {at}, outside the Date header: {session:#}\n{head}"
        );
    }
    panic!("three responses in a row straddled a second");
}

#[test]
fn curl_downloads_a_large_file_through_relay_intact() {
    let site = tempfile::tempdir().unwrap();
    let body = crate::support::pattern::bytes(20 << 20);
    std::fs::write(site.path().join("big.bin"), &body).unwrap();
    let server = HttpServer::spawn(site.path());
    let proxy = Fanout::relay(server.addr(), &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("big.bin");
    let status = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&out)
        .arg(format!("http://{}/big.bin", proxy.addr()))
        .status()
        .expect("curl on PATH");
    assert!(status.success(), "curl: {status}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "curl's download differs from the file served");
}

/// The first `sh` code block under the README's "Quick start" heading.
fn quick_start_script(readme: &str) -> String {
    let section = &readme[readme
        .find("## Quick start")
        .expect("a Quick start section")..];
    let body = &section[section.find("```sh\n").expect("an sh block") + "```sh\n".len()..];
    body[..body.find("```").expect("the block ends")].to_string()
}

/// A port free on 127.0.0.1 now (bound, then released).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// The README's quick start as written, run by `sh` from a copy of the files it serves. Three
/// things differ, none of them shell: the build line is left out (the binary under test stands
/// for `target/release/fanout`), and its fixed ports become free ones so a busy port on the
/// test machine cannot fail it.
#[test]
fn readme_quick_start_runs_as_written_in_sh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut script = quick_start_script(&readme);
    assert!(script.starts_with("cargo build --release"), "{script}");
    script = script.replacen("cargo build --release", ": cargo build --release", 1);
    script = script.replace("target/release/fanout", &proxy::bin());
    for port in ["8081", "8082", "9000"] {
        script = script.replace(port, &free_port());
    }
    let dir = tempfile::tempdir().unwrap();
    for file in ["README.md", "Cargo.toml"] {
        std::fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }

    // Its own process group, so whatever a failing script leaves running is stopped below.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh on PATH");
    let group = child.id() as i32;
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + 3 * LIVENESS;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) on the process group this test created; no memory is involved.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("the quick start did not finish:\n{out}\n{err}"));

    assert!(
        status.success(),
        "the quick start failed ({status}):\n{out}\n{err}"
    );
    assert!(
        out.contains("# fanout"),
        "curl printed no README head:\n{out}"
    );
    assert!(out.contains("fanout exited 0"), "{out}\n{err}");
    let sessions = report::read(dir.path().join("report.jsonl").to_str().unwrap());
    assert_eq!(sessions.len(), 2, "two curls, two sessions: {sessions:#?}");
}
