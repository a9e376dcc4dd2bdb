//! The `fanout` process under test: spawned with arguments, its port learned from the
//! `listening on ADDR` line it prints to stdout, its stderr kept for assertions, its memory and
//! CPU read from /proc, signalled with `kill(2)`, and killed when the test drops it.

use super::client;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long fanout may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(20);

/// The binary under test: the one cargo built for this test, or `$FANOUT_BIN` when set (to run
/// the suite against a release build).
pub fn bin() -> String {
    std::env::var("FANOUT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fanout").to_string())
}

/// A `Command` for the fanout binary with `args`, stdio piped.
pub fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    cmd
}

/// Turns anything printable into the owned argument list `Command` wants.
pub fn args<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Display,
{
    items.into_iter().map(|s| s.to_string()).collect()
}

/// A running fanout. Killed (SIGKILL) on drop if it has not exited.
pub struct Fanout {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Fanout {
    /// `fanout relay --listen 127.0.0.1:0 --to TO EXTRA...`
    pub fn relay(to: impl Display, extra: &[&str]) -> Fanout {
        let mut a = args(["relay", "--listen", "127.0.0.1:0", "--to"]);
        a.push(to.to_string());
        a.extend(args(extra));
        Fanout::start(&a)
    }

    /// `fanout duplex --listen 127.0.0.1:0 --primary P --secondary S... EXTRA...`
    pub fn duplex(primary: impl Display, secondaries: &[String], extra: &[&str]) -> Fanout {
        let mut a = args(["duplex", "--listen", "127.0.0.1:0", "--primary"]);
        a.push(primary.to_string());
        for s in secondaries {
            a.push("--secondary".into());
            a.push(s.clone());
        }
        a.extend(args(extra));
        Fanout::start(&a)
    }

    /// `fanout balance --listen 127.0.0.1:0 --to U... EXTRA...`
    pub fn balance(upstreams: &[String], extra: &[&str]) -> Fanout {
        Fanout::start(&balance_args(upstreams, extra))
    }

    /// Spawns fanout with `args` and waits for its `listening on` line.
    pub fn start(args: &[String]) -> Fanout {
        Fanout::spawn(command(args), &format!("fanout {}", args.join(" ")))
    }

    /// Spawns `cmd` (fanout, possibly behind a wrapper that execs it, such as `prlimit`) and waits
    /// for its `listening on` line. Panics with fanout's stderr if the line does not come.
    pub fn spawn(mut cmd: Command, what: &str) -> Fanout {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();

        let err_pipe = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&stderr);
        readers.push(std::thread::spawn(move || {
            let mut lines = BufReader::new(err_pipe);
            let mut line = String::new();
            while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        }));

        let out_pipe = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        readers.push(std::thread::spawn(move || {
            let mut lines = BufReader::new(out_pipe);
            let mut line = String::new();
            while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                let _ = tx.send(line.trim_end().to_string());
                line.clear();
            }
        }));

        let deadline = Instant::now() + STARTUP;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.parse::<SocketAddr>().unwrap_or_else(|e| {
                            panic!("{what}: bad address in stdout line {line:?}: {e}")
                        });
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{what}: no `listening on ADDR` line on stdout ({e}); exit status {status:?}; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        Fanout {
            child,
            addr,
            stderr,
            readers,
            status: None,
        }
    }

    /// The address from the `listening on` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A client connection to the proxy, with timeouts.
    pub fn connect(&self) -> TcpStream {
        client::connect(self.addr)
    }

    /// Everything fanout wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Resident memory now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Peak resident memory over the process's life, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("fanout is running: /proc/PID/status readable");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// File descriptors the process holds now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fanout is running: /proc/PID/fd readable")
            .count()
    }

    /// CPU time used so far (user + system), from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("fanout is running: /proc/PID/stat readable");
        // Fields after the parenthesised command name, which may itself hold spaces.
        let rest = &stat[stat.rfind(')').expect("stat has a comm field") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "pid (comm) ".
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Time the process's threads spent running or waiting to run (from
    /// /proc/PID/task/*/schedstat). Unlike CPU time, this does not shrink when other processes
    /// crowd the machine: a thread that spins is runnable all the time, whether or not it gets a
    /// core, while one that sleeps is not.
    pub fn runnable_time(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("fanout is running: /proc/PID/task readable");
        let mut ns = 0u64;
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue; // the thread just exited
            };
            let f: Vec<u64> = stat
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            ns += f[0] + f[1];
        }
        Duration::from_nanos(ns)
    }

    /// Whether the process has exited (and its status, which is kept).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the process to exit; panics (with its stderr) if it is still running after
    /// `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fanout (pid {}) still running {within:?} after it should have exited; stderr:\n{}",
                    self.pid(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The arguments of `fanout balance --listen 127.0.0.1:0 --to U... EXTRA...`.
pub fn balance_args(upstreams: &[String], extra: &[&str]) -> Vec<String> {
    let mut a = args(["balance", "--listen", "127.0.0.1:0"]);
    for u in upstreams {
        a.push("--to".into());
        a.push(u.clone());
    }
    a.extend(args(extra));
    a
}

/// A fanout run that is expected to end by itself (a usage error, an address in use).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs fanout with `args` and waits up to `within` for it to exit; panics if it does not.
pub fn run_to_exit(args: &[String], within: Duration) -> Finished {
    let mut child = command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fanout");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fanout {} did not exit within {within:?}; stderr:\n{}",
                args.join(" "),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A path for a report file inside `dir`.
pub fn report_path(dir: &Path) -> String {
    dir.join("report.jsonl").to_str().unwrap().to_string()
}
