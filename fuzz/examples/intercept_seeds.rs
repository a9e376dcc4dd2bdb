//! Writes the hand-made seeds of `intercept_events` (`fanout_fuzz::intercept_events::seeds`) as
//! `DIR/seed-NAME`: `cargo run -p fanout-fuzz --example intercept_seeds -- fuzz/corpus/intercept_events`.
use fanout_fuzz::intercept_events::{decode, encode, seeds::seeds};

fn main() {
    let dir = std::env::args().nth(1).expect("a directory");
    for (name, scenario) in seeds() {
        let data = encode(&scenario);
        let back = decode(&data).expect("a seed decodes");
        assert_eq!(
            format!("{back:?}"),
            format!("{scenario:?}"),
            "seed {name} does not survive encoding"
        );
        let path = format!("{dir}/seed-{name}");
        std::fs::write(&path, &data).expect("writable");
        println!("{path}: {} bytes, {} ops", data.len(), scenario.ops.len());
    }
}
