//! Times each input of a target: `cargo run --release -p fanout-fuzz --example time_inputs -- NAME FILE...`.
fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("target name");
    let run = fanout_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known target")
        .1;
    for file in args {
        let data = std::fs::read(&file).expect("readable");
        let t = std::time::Instant::now();
        run(&data);
        println!("{:>10.3} ms  {file}", t.elapsed().as_secs_f64() * 1e3);
    }
}
