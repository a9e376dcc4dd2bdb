//! Binding the listening sockets: one per event loop, sharing the port with `SO_REUSEPORT` when
//! there is more than one loop.

use crate::error::{describe, Error};
use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

const BACKLOG: i32 = 1024;

/// Binds `count` listeners on `addr`. With port 0 the first one picks the port and the others
/// bind to the same. `SO_REUSEPORT` is set only when `count > 1`, so a second fanout on a busy
/// port still fails with "address already in use".
pub(crate) fn bind(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, Error> {
    let reuse_port = count > 1;
    let fail = |e: io::Error| Error::Runtime(format!("cannot listen on {addr}: {}", describe(&e)));
    let first = bind_one(addr, reuse_port).map_err(fail)?;
    let actual = first.local_addr().map_err(fail)?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(actual, reuse_port).map_err(fail)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit it (Linux clones the listener's options): no setsockopt per
    // accept. The proxy forwards what it reads at once; Nagle's delay would only hold it back.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_come_with_nodelay_set() {
        let ls = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = ls[0].local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match ls[0].accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn port_zero_with_several_loops_shares_one_port() {
        let ls = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_busy_port_is_an_error_naming_the_address() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = bind(addr, 1).unwrap_err();
        assert_eq!(
            err,
            Error::Runtime(format!("cannot listen on {addr}: address already in use"))
        );
    }
}
