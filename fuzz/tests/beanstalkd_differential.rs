//! The beanstalkd framer against the reference transcribed from the server's reading loop
//! (`fanout_fuzz::beanstalkd`), over streams built from the bytes that matter to it, cut
//! anywhere: the stable counterpart of `cargo +nightly fuzz run beanstalkd`.

use proptest::prelude::*;

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u32..100, 0u32..100).prop_map(|(d, n)| format!("put 1 {d} 60 {n}\r\n").into_bytes()),
        Just(b"put 1 2 3 x\r\n".to_vec()),
        Just(b"put 1 2 3 4 \r\n".to_vec()),
        Just(b"put 0 0 1 99999999999\r\n".to_vec()),
        Just(b"put 0 0 1 70 junk\r\n".to_vec()),
        Just(b"use tube\r\n".to_vec()),
        Just(b"release 1 2 3\r\n".to_vec()),
        Just(b"quit\r\n".to_vec()),
        Just(b"stats\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(vec![0u8]),
        (1usize..300).prop_map(|n| vec![b'q'; n]),
        proptest::collection::vec(any::<u8>(), 1..24),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_beanstalkd_framer_answers_as_the_server_does(
        size in any::<u8>(),
        seed in any::<u8>(),
        tokens in proptest::collection::vec(token(), 0..40),
    ) {
        let mut input = vec![size, seed];
        input.extend(tokens.concat());
        fanout_fuzz::beanstalkd::run(&input);
    }
}
