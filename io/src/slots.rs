//! The process-wide `--max-connections`: one count of open client connections that every event
//! loop shares.
//!
//! Each loop runs its own engine, and each engine counts only its own clients; with `--threads
//! N` the kernel hands connections to the loops' `SO_REUSEPORT` listeners unevenly, so a limit
//! split between loops would leave one loop's clients waiting while another still had room.
//! Instead a loop takes a slot from the shared count before each `accept`, and gives slots back as
//! its engine's count of open clients falls ([`Lease::hold`]). A loop that finds no slot stops
//! accepting; when any loop gives one back, every waiting loop is woken through a socket pair
//! registered in its `Poll` and tries again. The engines keep their own limit at the process's,
//! so the engine's accept gate never disagrees; the count lives here, in the driver, because it
//! is shared state and the engine holds none.

use mio::net::UnixStream;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// The shared count.
#[derive(Debug)]
struct Slots {
    limit: usize,
    taken: AtomicUsize,
    loops: Box<[Waiter]>,
}

/// How to wake one loop.
#[derive(Debug)]
struct Waiter {
    /// The loop found no slot and waits for one.
    waiting: AtomicBool,
    wake: StdUnixStream,
}

/// One loop's part: the slots it holds, and the end of its wake-up pair it polls.
#[derive(Debug)]
pub(crate) struct Lease {
    slots: Arc<Slots>,
    index: usize,
    rx: UnixStream,
    held: usize,
}

/// `limit` slots shared by `loops` event loops: one [`Lease`] for each.
pub(crate) fn share(limit: usize, loops: usize) -> io::Result<Vec<Lease>> {
    let mut waiters = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..loops {
        let (rx, tx) = StdUnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        waiters.push(Waiter {
            waiting: AtomicBool::new(false),
            wake: tx,
        });
        ends.push(UnixStream::from_std(rx));
    }
    let slots = Arc::new(Slots {
        limit,
        taken: AtomicUsize::new(0),
        loops: waiters.into(),
    });
    Ok(ends
        .into_iter()
        .enumerate()
        .map(|(index, rx)| Lease {
            slots: Arc::clone(&slots),
            index,
            rx,
            held: 0,
        })
        .collect())
}

impl Slots {
    fn try_take(&self) -> bool {
        self.taken
            .fetch_update(SeqCst, SeqCst, |t| (t < self.limit).then_some(t + 1))
            .is_ok()
    }
}

impl Lease {
    /// Takes a slot for one client about to be accepted. `false` when the process is at its
    /// limit: this loop is then woken (its pair readable) once any loop gives a slot back.
    pub(crate) fn take(&mut self) -> bool {
        let slots = &*self.slots;
        let me = &slots.loops[self.index];
        let took = slots.try_take() || {
            // Say "waiting" before looking again: a slot given back in between either is seen
            // by the second look or sees the flag and wakes this loop.
            me.waiting.store(true, SeqCst);
            let took = slots.try_take();
            if took {
                me.waiting.store(false, SeqCst);
            }
            took
        };
        self.held += usize::from(took);
        took
    }

    /// Gives back every slot beyond `open`, the engine's count of open clients: called after a
    /// client connection closed, and after an accept that took a slot found no client or had it
    /// refused. Wakes the loops waiting for a slot.
    pub(crate) fn hold(&mut self, open: usize) {
        if open >= self.held {
            // Every client the engine opened came with a slot; nothing to give back.
            return;
        }
        self.slots.taken.fetch_sub(self.held - open, SeqCst);
        self.held = open;
        for w in self.slots.loops.iter() {
            if w.waiting.swap(false, SeqCst) {
                // A full pair already holds a wake-up.
                let _ = (&w.wake).write(b"s");
            }
        }
    }

    /// The wake-up pair's readable end, to register in the loop's `Poll`.
    pub(crate) fn source(&mut self) -> &mut UnixStream {
        &mut self.rx
    }

    /// Empties the wake-up pair after it turned readable.
    pub(crate) fn woken(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(l: &Lease) -> bool {
        let mut b = [0u8; 1];
        matches!((&l.rx).read(&mut b), Ok(1))
    }

    #[test]
    fn loops_share_one_limit_whoever_accepts() {
        let mut leases = share(3, 2).unwrap();
        assert!(leases[0].take() && leases[0].take() && leases[0].take());
        assert!(!leases[1].take(), "the process is at its limit");
        assert!(!leases[0].take());
        leases[0].hold(2);
        assert!(leases[1].take(), "a slot given back serves any loop");
        assert!(!leases[0].take());
    }

    #[test]
    fn giving_a_slot_back_wakes_the_loops_that_found_none() {
        let mut leases = share(1, 3).unwrap();
        assert!(leases[0].take());
        assert!(!leases[1].take());
        assert!(!readable(&leases[1]) && !readable(&leases[2]));
        leases[0].hold(0);
        assert!(readable(&leases[1]), "the waiting loop is woken");
        assert!(!readable(&leases[2]), "a loop that was not waiting is not");
        leases[1].woken();
        assert!(leases[1].take());
    }

    #[test]
    fn an_accept_that_found_no_client_gives_its_slot_back() {
        let mut leases = share(1, 1).unwrap();
        assert!(leases[0].take());
        leases[0].hold(0);
        assert!(leases[0].take());
        leases[0].hold(1);
        assert!(!leases[0].take(), "one open client holds the only slot");
    }
}
