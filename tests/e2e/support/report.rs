//! The duplex report: a JSON Lines file, one object per finished session, flushed per line.

use super::LIVENESS;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The complete lines of the report file so far, parsed. A line must be valid JSON.
pub fn read(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("report line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// Waits until the report holds at least `n` sessions (sessions end a little after their
/// client sees EOF, and a secondary may outlive it); panics with what is there if it does not.
pub fn wait_for(path: &str, n: usize) -> Vec<Value> {
    wait_for_within(path, n, LIVENESS)
}

pub fn wait_for_within(path: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let lines = read(path);
        if lines.len() >= n {
            return lines;
        }
        if Instant::now() >= deadline {
            panic!(
                "report {path} has {} of {n} sessions after {within:?}: {lines:#?}",
                lines.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend entry of `session` whose address is `address`.
pub fn backend<'a>(session: &'a Value, address: &str) -> &'a Value {
    session["backends"]
        .as_array()
        .expect("backends is an array")
        .iter()
        .find(|b| b["address"] == address)
        .unwrap_or_else(|| panic!("no backend {address} in {session:#}"))
}

/// The session whose client address is `client`.
pub fn session_of<'a>(sessions: &'a [Value], client: &str) -> &'a Value {
    sessions
        .iter()
        .find(|s| s["client"] == client)
        .unwrap_or_else(|| panic!("no session for client {client} in {sessions:#?}"))
}
