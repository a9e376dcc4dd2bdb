//! Nothing leaks: once sessions end, however they end, the proxy holds only what it held idle.

use crate::support::backend::{self, Backend};
use crate::support::proxy::Fanout;
use crate::support::{client, eventually, LIVENESS};
use std::io::Write;

#[test]
fn finished_sessions_release_every_descriptor() {
    let primary = Backend::spawn(backend::echo);
    let honest = Backend::spawn(backend::echo);
    let resetter = Backend::spawn(backend::reset_after_first_byte);
    let slow = Backend::spawn(backend::slow_reader);
    let refuser = backend::closed_port().to_string();
    let proxy = Fanout::duplex(
        primary.addr(),
        &[honest.arg(), resetter.arg(), slow.arg(), refuser],
        &["--secondary-deadline", "300ms"],
    );
    let idle = proxy.open_fds();
    for i in 0..30u8 {
        if i % 3 == 0 {
            assert_eq!(client::request(proxy.addr(), &[i; 100]), [i; 100]);
        } else if i % 3 == 1 {
            // A client that connects and leaves at once.
            drop(proxy.connect());
        } else {
            // A client that vanishes mid-session.
            let mut c = proxy.connect();
            c.write_all(&[i; 100]).unwrap();
            client::read_exactly(&mut c, 100);
            backend::reset(c);
        }
    }
    assert!(
        eventually(LIVENESS, || proxy.open_fds() == idle),
        "fanout holds {} descriptors after every session ended, {idle} before any began",
        proxy.open_fds()
    );
}
