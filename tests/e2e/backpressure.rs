//! Backpressure: a reader that stops makes the proxy stop reading the other side, so its memory
//! stays bounded however much the writer has to send, and nothing is lost when reading resumes.

use crate::support::backend::{self, Backend, Gate, BACKEND_TIMEOUT};
use crate::support::pattern::{self, Verifier, GIB, MIB};
use crate::support::proxy::Fanout;
use crate::support::{client, LIVENESS};
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy's resident memory must stay under this.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// With the reader stopped, the writer must block before it has written this much: socket buffers
/// on both sides of the proxy plus its high-water mark are a few MiB.
const HELD_BACK: u64 = 128 * MIB;

/// Waits until `progress` stops moving for `still` (the writer is blocked); panics if it keeps
/// moving past `within`. Returns where it stopped.
fn wait_until_stalled(progress: &AtomicU64, still: Duration, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut last = progress.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = progress.load(Ordering::SeqCst);
        if now != last || now == 0 {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return now;
        }
        assert!(
            Instant::now() < deadline && now < HELD_BACK,
            "the writer never blocked: {now} bytes written with nobody reading"
        );
    }
}

/// Samples the proxy's RSS ten times over a second with the reader still stopped; the writer
/// must stay held back meanwhile.
fn assert_rss_bounded_while_stalled(proxy: &Fanout, progress: &AtomicU64, stalled_at: u64) {
    for _ in 0..10 {
        let rss = proxy.rss_kib();
        assert!(
            rss < RSS_LIMIT_KIB,
            "proxy RSS {rss} KiB with the reader stopped ({stalled_at} bytes written)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = progress.load(Ordering::SeqCst);
    assert!(
        now < HELD_BACK,
        "the writer got {now} bytes out although nobody read"
    );
}

#[test]
fn non_reading_client_keeps_proxy_rss_bounded_then_receives_every_byte() {
    let len = GIB;
    let progress = Arc::new(AtomicU64::new(0));
    let b = {
        let progress = Arc::clone(&progress);
        Backend::spawn(move |mut s, _| {
            let p = |n| progress.store(n, Ordering::SeqCst);
            if pattern::write(&mut s, len, p).is_ok() {
                backend::finish(s);
            }
        })
    };
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();

    let stalled_at = wait_until_stalled(&progress, Duration::from_secs(1), LIVENESS * 2);
    assert_rss_bounded_while_stalled(&proxy, &progress, stalled_at);

    c.set_read_timeout(Some(BACKEND_TIMEOUT)).unwrap();
    let mut v = Verifier::new();
    assert_eq!(v.read_to_eof(&mut c), len);
    assert_eq!(v.digest(), pattern::digest(len));
    let peak = proxy.peak_rss_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy peak RSS {peak} KiB over a 1 GiB transfer"
    );
}

#[test]
fn non_reading_primary_keeps_proxy_rss_bounded_then_receives_every_uploaded_byte() {
    let len = 256 * MIB;
    let gate = Gate::default();
    let b = {
        let gate = gate.clone();
        Backend::spawn(move |s, stop| {
            if gate.wait(BACKEND_TIMEOUT) {
                backend::count_upload(s, stop);
            }
        })
    };
    let proxy = Fanout::relay(b.addr(), &[]);
    let mut c = proxy.connect();
    c.set_write_timeout(Some(BACKEND_TIMEOUT)).unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let writer = {
        let progress = Arc::clone(&progress);
        let mut up = c.try_clone().unwrap();
        std::thread::spawn(move || {
            pattern::write(&mut up, len, |n| progress.store(n, Ordering::SeqCst))
                .expect("upload through the proxy");
            up.shutdown(Shutdown::Write).unwrap();
        })
    };

    let stalled_at = wait_until_stalled(&progress, Duration::from_secs(1), LIVENESS * 2);
    assert_rss_bounded_while_stalled(&proxy, &progress, stalled_at);

    gate.open();
    writer.join().unwrap();
    let answer = client::read_to_eof(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        backend::count_line(len, pattern::digest(len))
    );
    let peak = proxy.peak_rss_kib();
    assert!(peak < RSS_LIMIT_KIB, "proxy peak RSS {peak} KiB");
}

/// The backend writes until every buffer between it and the client is full (a write makes no
/// progress for 500 ms), records how much it wrote, then sends its FIN at once if `fin`, or else
/// goes quiet until `gate` opens. The client, on a tiny receive window, has not read: the proxy has
/// paused reading the backend with bytes still waiting in the kernel.
fn fill_until_blocked(fin: bool, gate: Gate, written: Arc<AtomicU64>) -> Backend {
    Backend::spawn(move |mut s, _| {
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < 256 * MIB {
            pattern::fill(at, &mut buf);
            match s.write(&buf) {
                Ok(n) => at += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        written.store(at, Ordering::SeqCst);
        s.set_write_timeout(Some(BACKEND_TIMEOUT)).unwrap();
        if fin || gate.wait(BACKEND_TIMEOUT) {
            backend::finish(s);
        }
    })
}

/// Once the backend has filled every buffer and gone quiet, the client starts reading: the proxy
/// must resume reading the bytes already waiting in its socket (no new readiness edge will come),
/// then forward the FIN.
fn paused_reader_resumes(fin: bool) {
    let (gate, written) = (Gate::default(), Arc::new(AtomicU64::new(0)));
    let b = fill_until_blocked(fin, gate.clone(), Arc::clone(&written));
    let proxy = Fanout::relay(b.addr(), &["--high-water", "16KiB", "--low-water", "4KiB"]);
    let mut c = client::connect_with_small_window(proxy.addr(), 4096);
    assert!(
        crate::support::eventually(LIVENESS * 2, || written.load(Ordering::SeqCst) > 0),
        "the backend never blocked"
    );
    let len = written.load(Ordering::SeqCst);
    assert!(
        len < HELD_BACK,
        "{len} bytes went out with the client not reading"
    );
    let mut v = Verifier::new();
    v.read_exactly(&mut c, len);
    gate.open();
    assert_eq!(v.read_to_eof(&mut c), len);
}

#[test]
fn resumed_reader_gets_bytes_already_buffered_without_new_arrivals() {
    paused_reader_resumes(false);
}

#[test]
fn backend_fin_while_reader_paused_ends_response_after_all_bytes() {
    paused_reader_resumes(true);
}
