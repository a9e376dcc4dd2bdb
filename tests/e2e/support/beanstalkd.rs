//! A real beanstalkd for the tests, on a loopback port of its own, killed on drop. Needs
//! `beanstalkd` on PATH (Debian: `apt-get install beanstalkd`; `.ci/run` installs it).

use fanout_io::beanstalkd::client::Client;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Beanstalkd {
    child: Child,
    pub port: u16,
}

impl Beanstalkd {
    /// Starts `beanstalkd -l 127.0.0.1 -p PORT EXTRA...` on a port the kernel just handed out
    /// (tried again on another if something took it meanwhile).
    pub fn start(extra: &[&str]) -> Beanstalkd {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new("beanstalkd")
                .args(["-l", "127.0.0.1", "-p", &port.to_string()])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("beanstalkd on PATH (apt-get install beanstalkd)");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Beanstalkd { child, port };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // it exited: the port was taken meanwhile
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("beanstalkd would not start on a free loopback port");
    }

    /// Kills the server (SIGKILL: without a binlog its jobs are gone) and starts a fresh one on
    /// the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new("beanstalkd")
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("beanstalkd on PATH");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "beanstalkd did not come back on its port"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client straight to the server (not through any proxy).
    pub fn client(&self) -> Client {
        Client::connect(self.addr().as_str(), Duration::from_secs(10))
            .expect("connect to beanstalkd")
    }

    /// A raw connection straight to the server, with short read timeouts.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to beanstalkd");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
