//! Writes the hand-made seeds of `engine_events` (`fanout_fuzz::engine_events::seeds`) as
//! `DIR/seed-NAME`: `cargo run -p fanout-fuzz --example engine_seeds -- fuzz/corpus/engine_events`.
use fanout_fuzz::engine_events::decode;
use fanout_fuzz::engine_events::seeds::{encode, seeds};

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
