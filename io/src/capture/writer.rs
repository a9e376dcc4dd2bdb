//! The capture writer: one thread per recorder that owns the capture's files, so the event loop
//! never waits on a disk.
//!
//! The loop appends encoded records to a shared backlog ([`Writer::append`]: a copy under a lock
//! the writer holds only to take the backlog). The writer thread writes the backlog out as soon
//! as [`CHUNK`] bytes have gathered, and otherwise once the oldest byte in it has waited the
//! flush interval; so at any moment at most the last interval of records is only in memory. With
//! nothing to write it sleeps on a condition variable (an idle proxy wakes it never); the loop
//! wakes it when the backlog stops being empty, passes [`CHUNK`], or the recorder closes.
//!
//! Why a thread and not a timer on the event loop: a `write(2)` to a regular file can block (a
//! full page cache being flushed, a slow or network disk), and `O_NONBLOCK` does nothing for
//! regular files; the loop serves every session of its thread, so the file is the writer's alone.
//! The backlog is bounded: past [`MAX_BACKLOG`] the loop stops recording rather than waiting
//! (see `Recorder`).

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes that make the writer write at once instead of waiting for the flush interval.
pub(super) const CHUNK: usize = 1 << 20;
/// Bytes the backlog may hold before the loop stops recording: the disk is not keeping up.
pub(super) const MAX_BACKLOG: usize = 32 << 20;
/// Emptied buffers kept for reuse, and the largest kept.
const SPARES: usize = 2;
const SPARE_MAX: usize = 4 * CHUNK;

/// One piece of work for the writer, in order.
#[derive(Debug)]
enum Op {
    /// Bytes for the current file.
    Bytes(Vec<u8>),
    /// Start the next file: create `path` (never overwriting) and write `header` into it.
    Open { path: String, header: Vec<u8> },
}

#[derive(Debug, Default)]
struct State {
    ops: Vec<Op>,
    /// Bytes in `ops`.
    bytes: usize,
    /// When `ops` last went from empty to not empty.
    since: Option<Instant>,
    spare: Vec<Vec<u8>>,
    /// The recorder is done: write everything left, then end.
    closing: bool,
    /// A write failed (the writer logged it and ended): the recorder stops.
    failed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Writer::append`] refused bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The writer failed and has ended (it logged why).
    Failed,
    /// The bytes would take the backlog past [`MAX_BACKLOG`]; they were not taken, and the
    /// caller should stop (after [`Writer::append_last`] of what closes the file).
    Behind,
}

/// The loop's handle on a writer thread.
#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread writing to `file` (already holding its header); `name` is for messages
    /// until the next [`Writer::open`].
    pub(super) fn start(file: File, name: String, every: Duration) -> io::Result<Writer> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fanout-capture".into())
            .spawn(move || run(&theirs, file, name, every))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `bytes` for the current file, or refuses them whole: a record is either in the
    /// backlog or not, never half, so the caller knows exactly what the file will hold.
    pub(super) fn append(&self, bytes: &[u8]) -> Result<(), Refused> {
        let mut st = self.shared.lock();
        if st.failed {
            return Err(Refused::Failed);
        }
        if st.bytes + bytes.len() > MAX_BACKLOG {
            return Err(Refused::Behind);
        }
        Self::take(&self.shared, &mut st, bytes);
        Ok(())
    }

    /// Queues `bytes` past the bound: the one small record that closes a file whose writer fell
    /// behind (the digest of what the backlog holds).
    pub(super) fn append_last(&self, bytes: &[u8]) {
        let mut st = self.shared.lock();
        if !st.failed {
            Self::take(&self.shared, &mut st, bytes);
        }
    }

    fn take(shared: &Shared, st: &mut State, bytes: &[u8]) {
        let was_empty = st.ops.is_empty();
        if let Some(Op::Bytes(buf)) = st.ops.last_mut() {
            buf.extend_from_slice(bytes);
        } else {
            let mut buf = st.spare.pop().unwrap_or_default();
            buf.extend_from_slice(bytes);
            st.ops.push(Op::Bytes(buf));
        }
        let before = st.bytes;
        st.bytes += bytes.len();
        if was_empty {
            st.since = Some(Instant::now());
            shared.wake.notify_one();
        } else if before < CHUNK && st.bytes >= CHUNK {
            shared.wake.notify_one();
        }
    }

    /// Queues the start of the next file.
    pub(super) fn open(&self, path: String, header: Vec<u8>) {
        let mut st = self.shared.lock();
        if st.ops.is_empty() {
            st.since = Some(Instant::now());
            self.shared.wake.notify_one();
        }
        st.ops.push(Op::Open { path, header });
    }

    /// Lets the writer write everything queued, and waits for it to end.
    pub(super) fn close(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the capture writer panicked; the capture may end early");
            }
        }
    }

    /// Lets the writer write everything queued and end, without waiting for it: for a writer
    /// that has fallen behind, whose disk the loop must not wait on.
    pub(super) fn detach(mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        drop(self.thread.take());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: waits for work, takes all of it, writes it without the lock.
fn run(shared: &Shared, mut file: File, mut name: String, every: Duration) {
    let mut emptied = Vec::new();
    loop {
        let (ops, closing) = {
            let mut st = shared.lock();
            st.spare.append(&mut emptied);
            st.spare.truncate(SPARES);
            while !(st.closing || st.bytes >= CHUNK) {
                match st.since {
                    None => st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                    Some(t) => {
                        let left = (t + every).saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        st = shared
                            .wake
                            .wait_timeout(st, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            st.since = None;
            st.bytes = 0;
            (std::mem::take(&mut st.ops), st.closing)
        };
        for op in ops {
            let done = match op {
                Op::Bytes(mut buf) => {
                    let done = file.write_all(&buf);
                    buf.clear();
                    if buf.capacity() <= SPARE_MAX {
                        emptied.push(buf);
                    }
                    done
                }
                Op::Open { path, header } => {
                    name = path;
                    super::create(name.as_ref()).and_then(|mut f| {
                        f.write_all(&header)?;
                        file = f;
                        Ok(())
                    })
                }
            };
            if let Err(e) = done {
                tracing::error!(
                    "capture {name}: cannot write ({e}); capturing stopped, the proxy goes on"
                );
                let mut st = shared.lock();
                st.failed = true;
                st.ops.clear();
                return;
            }
        }
        if closing {
            return;
        }
    }
}
