//! A counting global allocator, for `benches/engine.rs` and `tests/allocations.rs` (each
//! `#[path]`-includes this file and installs [`Counting`] as its own `#[global_allocator]`).
//!
//! It wraps [`System`] and counts, per thread, every allocation (`alloc`, `alloc_zeroed`, and
//! `realloc`, which is how a growing `Vec` or `VecDeque` shows) and the bytes asked for. Counting
//! per thread keeps a measurement to the code the measuring thread runs: the test harness's own
//! threads (output capture, other tests) allocate at the same time and count elsewhere.
//!
//! The engine crate is `#![forbid(unsafe_code)]`; this file is not part of it.

#![allow(dead_code)] // each includer uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, counted. Install with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

thread_local! {
    // `const` and without a destructor: no allocation and no registration on first use, so the
    // allocator may touch them.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: nothing is counted while the thread's locals are being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + bytes as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only this thread's plain `Cell`s, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations and bytes asked for on this thread so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub allocs: u64,
    pub bytes: u64,
}

impl Snapshot {
    /// This thread's counts now.
    pub fn now() -> Snapshot {
        Snapshot {
            allocs: ALLOCS.with(Cell::get),
            bytes: BYTES.with(Cell::get),
        }
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            allocs: self.allocs - earlier.allocs,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// Runs `f` and returns what it allocated on this thread.
pub fn count(f: impl FnOnce()) -> Snapshot {
    let before = Snapshot::now();
    f();
    Snapshot::now().since(before)
}
