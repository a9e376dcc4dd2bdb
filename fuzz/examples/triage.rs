//! Replays inputs through a target and groups the failures by message (numbers masked), e.g. the
//! crashes of a fork-mode campaign:
//! `cargo run --release -p fanout-fuzz --example triage -- intercept_events fuzz/artifacts/intercept_events/*`.
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("target name");
    let run = fanout_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known target")
        .1;
    fanout_fuzz::intercept_events::quiet_deliberate_panics();
    std::panic::set_hook(Box::new(|_| {}));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut passed = 0;
    for file in args {
        let data = std::fs::read(&file).expect("readable");
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(()) => passed += 1,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let line = msg.lines().next().unwrap_or("").to_string();
                let masked: String = line
                    .split(|c: char| c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("N");
                groups.entry(masked).or_default().push(file);
            }
        }
    }
    println!("{passed} passed");
    for (msg, files) in groups {
        let smallest = files
            .iter()
            .min_by_key(|f| std::fs::metadata(f).map_or(u64::MAX, |m| m.len()))
            .expect("one");
        println!("{:>6} x {msg}\n         smallest: {smallest}", files.len());
    }
}
