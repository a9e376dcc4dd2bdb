//! Writes the named schema-3 seeds of `capture_decoder` as `DIR/v3-NAME`, made from the golden
//! `tests/captures/duplex-session-v3.fcap`:
//! `cargo run -p fanout-fuzz --example capture_seeds -- fuzz/corpus/capture_decoder`.
//! (The `golden-*` seeds are the schema 1 golden file and mutations of it, made by hand.)

fn main() {
    let dir = std::env::args().nth(1).expect("a directory");
    let golden_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/duplex-session-v3.fcap"
    );
    let golden = std::fs::read(golden_path).expect("the schema 3 golden capture");
    let header_len = u32::from_le_bytes(golden[20..24].try_into().unwrap()) as usize;
    let records = 24 + header_len;
    let last = {
        let mut at = records;
        loop {
            let len = u32::from_le_bytes(golden[at..at + 4].try_into().unwrap()) as usize;
            if at + 4 + len == golden.len() {
                break at;
            }
            at += 4 + len;
        }
    };
    // The run is the header's last field: its `Option` tag is the last byte of the same header
    // encoded with no run.
    let mut header = fanout_engine::capture::Decoder::new(&golden[..])
        .expect("the golden capture decodes")
        .header()
        .clone();
    header.run = None;
    let mut enc = fanout_engine::capture::Encoder::default();
    let without = enc.header(&header).expect("encodes");
    let run_at = without.len() - 1;
    assert_eq!(golden[run_at], 1, "Some");
    let mut no_run = golden.clone();
    no_run[run_at] = 0; // None: the id and time become bytes left over, a corrupt header
    let mut bad_tag = golden.clone();
    bad_tag[run_at] = 2; // neither None nor Some
    let seeds: [(&str, Vec<u8>); 6] = [
        ("duplex-session", golden.clone()),
        ("header-only", golden[..records].to_vec()),
        ("torn-header", golden[..records - 5].to_vec()),
        ("torn-last-record", golden[..golden.len() - 3].to_vec()),
        ("torn-length", golden[..last + 2].to_vec()),
        ("run-none-with-bytes-left", no_run),
    ];
    for (name, data) in seeds.iter().chain([("run-bad-option-tag", bad_tag)].iter()) {
        let path = format!("{dir}/v3-{name}");
        std::fs::write(&path, data).expect("writable");
        println!("{path}: {} bytes", data.len());
    }
}
