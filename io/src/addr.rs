//! Addresses as users write them: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080` (resolved once,
//! at startup), `unix:/path/to.sock` (backends only), and a bare port, which means
//! `127.0.0.1:PORT` — fanout never listens on every interface unless told to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Where a backend lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A configured backend: where to connect, and the name reports use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The address as the report prints it: the socket address for IP literals and bare ports,
    /// the text as given for host names and unix paths.
    pub name: String,
    pub target: Target,
}

/// Parses the address to listen on. Unix sockets are not supported there; port 0 is allowed.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if s.starts_with("unix:") {
        return Err(format!(
            "cannot listen on {s}: fanout listens on TCP only (unix: is for backends)"
        ));
    }
    parse_tcp(s).map(|(addr, _)| addr)
}

/// Parses a backend address, resolving a host name now.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("invalid address {s:?}: unix: needs a path"));
        }
        return Ok(Backend {
            name: s.to_string(),
            target: Target::Unix(PathBuf::from(path)),
        });
    }
    let (addr, name) = parse_tcp(s)?;
    if addr.port() == 0 {
        return Err(format!("invalid backend address {s:?}: port 0"));
    }
    Ok(Backend {
        name,
        target: Target::Tcp(addr),
    })
}

/// Parses `--bind-source`: an IP address without a port (the kernel picks the port). The
/// message names the value, not the flag: clap and the config file say where it came from.
pub fn parse_source(s: &str) -> Result<IpAddr, String> {
    let t = s.trim();
    let unbracketed = t
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip);
    }
    let hint = if t.parse::<SocketAddr>().is_ok() {
        ": give the address without a port (the kernel picks the source port)"
    } else {
        ", e.g. 10.0.0.5 or ::1"
    };
    Err(format!("{s:?} is not an IP address{hint}"))
}

/// Checks that `source` can reach every TCP backend: the same address family.
pub fn check_source(source: IpAddr, backends: &[Backend]) -> Result<(), String> {
    for b in backends {
        if let Target::Tcp(to) = &b.target {
            if to.is_ipv4() != source.is_ipv4() {
                let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "--bind-source {source} is {} but backend {} is {}: connects from it \
                     cannot reach that backend",
                    family(source.is_ipv4()),
                    b.name,
                    family(to.is_ipv4())
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a TCP backend that is fanout's own listen address: each connection to it would be
/// accepted by fanout again and open another, until descriptors ran out. A backend reaches the
/// listener when the ports match and the address is the same, or the listener's wildcard
/// (`0.0.0.0`, or `[::]`, which also takes IPv4) covers a loopback backend; connecting to a
/// wildcard address reaches loopback. Port 0 (the OS picks) never matches; other addresses of
/// this host are not looked up.
pub fn check_not_self(listen: SocketAddr, backends: &[Backend]) -> Result<(), String> {
    let loopback = |ip: IpAddr| match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    for b in backends {
        let Target::Tcp(to) = &b.target else {
            continue;
        };
        if listen.port() == 0 || listen.port() != to.port() {
            continue;
        }
        let (l, t) = (listen.ip(), to.ip());
        let t = if t.is_unspecified() { loopback(t) } else { t };
        let covered = l.is_unspecified() && t.is_loopback() && (l.is_ipv6() || t.is_ipv4());
        if l == t || covered {
            return Err(format!(
                "backend {} is fanout's own listen address {listen}: every connection would \
                 come back to fanout (a proxy loop); give the backend's address",
                b.name
            ));
        }
    }
    Ok(())
}

/// A TCP address and its display name.
fn parse_tcp(s: &str) -> Result<(SocketAddr, String), String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = s
            .parse()
            .map_err(|_| format!("invalid port {s:?}: must be 0-65535"))?;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        return Ok((addr, addr.to_string()));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok((addr, addr.to_string()));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "invalid address {s:?}: expected HOST:PORT, IP:PORT, [IPv6]:PORT or a port"
        ));
    };
    if host.contains(':') || host.starts_with('[') {
        return Err(format!(
            "invalid address {s:?}: write IPv6 addresses in brackets, e.g. [::1]:8080"
        ));
    }
    if host.is_empty() {
        return Err(format!("invalid address {s:?}: the host is missing"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid address {s:?}: the port must be a number 0-65535"))?;
    Ok((resolve(host, port, s)?, s.to_string()))
}

/// Resolves `host`, preferring an IPv4 address: `localhost` commonly resolves to `::1` first
/// while local servers often listen on 127.0.0.1 only.
fn resolve(host: &str, port: u16, original: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {original}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve {original}: no addresses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_backend_that_is_the_listen_address_is_a_loop() {
        let loops = |listen: &str, to: &str| {
            check_not_self(tcp(listen), &[parse_backend(to).unwrap()]).is_err()
        };
        assert!(loops("127.0.0.1:9000", "9000"));
        assert!(loops("127.0.0.1:9000", "0.0.0.0:9000"));
        assert!(loops("0.0.0.0:9000", "127.0.0.1:9000"));
        assert!(loops("[::]:9000", "127.0.0.1:9000"));
        assert!(loops("[::]:9000", "[::1]:9000"));
        assert!(loops("[::1]:9000", "[::1]:9000"));
        assert!(!loops("127.0.0.1:9000", "127.0.0.1:9001"));
        assert!(!loops("127.0.0.1:9000", "127.0.0.2:9000"));
        assert!(
            !loops("0.0.0.0:9000", "[::1]:9000"),
            "an IPv4 wildcard takes no IPv6"
        );
        assert!(!loops("127.0.0.1:0", "127.0.0.1:9000"));
        let unix = parse_backend("unix:/tmp/9000").unwrap();
        assert!(check_not_self(tcp("127.0.0.1:9000"), &[unix]).is_ok());
        let msg =
            check_not_self(tcp("127.0.0.1:9000"), &[parse_backend("9000").unwrap()]).unwrap_err();
        assert!(
            msg.contains("127.0.0.1:9000") && msg.contains("loop"),
            "{msg}"
        );
    }

    #[test]
    fn bare_port_means_loopback() {
        assert_eq!(parse_listen("9000"), Ok(tcp("127.0.0.1:9000")));
        assert_eq!(parse_listen("0"), Ok(tcp("127.0.0.1:0")));
        let b = parse_backend("8081").unwrap();
        assert_eq!(b.target, Target::Tcp(tcp("127.0.0.1:8081")));
        assert_eq!(b.name, "127.0.0.1:8081");
    }

    #[test]
    fn ip_literals_v4_and_bracketed_v6() {
        assert_eq!(parse_listen("0.0.0.0:80"), Ok(tcp("0.0.0.0:80")));
        assert_eq!(parse_listen("[::1]:8080"), Ok(tcp("[::1]:8080")));
        let b = parse_backend("[::1]:8080").unwrap();
        assert_eq!(b.name, "[::1]:8080");
    }

    #[test]
    fn host_names_resolve_at_parse_time_and_keep_their_name() {
        let b = parse_backend("localhost:8080").unwrap();
        assert_eq!(b.name, "localhost:8080");
        match b.target {
            Target::Tcp(a) => {
                assert!(a.ip().is_loopback());
                assert_eq!(a.port(), 8080);
            }
            Target::Unix(_) => panic!("localhost resolved to a unix socket"),
        }
    }

    #[test]
    fn unresolvable_names_are_an_error_naming_the_address() {
        let e = parse_backend("no-such-host.invalid:80").unwrap_err();
        assert!(e.contains("no-such-host.invalid:80"), "{e}");
    }

    #[test]
    fn unix_paths_are_for_backends_only() {
        let b = parse_backend("unix:/tmp/x.sock").unwrap();
        assert_eq!(b.target, Target::Unix(PathBuf::from("/tmp/x.sock")));
        assert_eq!(b.name, "unix:/tmp/x.sock");
        assert!(parse_listen("unix:/tmp/x.sock").is_err());
        assert!(parse_backend("unix:").is_err());
    }

    #[test]
    fn bind_source_is_an_ip_without_a_port() {
        assert_eq!(parse_source("127.0.0.2"), Ok("127.0.0.2".parse().unwrap()));
        assert_eq!(parse_source("::1"), Ok("::1".parse().unwrap()));
        assert_eq!(parse_source("[::1]"), Ok("::1".parse().unwrap()));
        let e = parse_source("127.0.0.2:80").unwrap_err();
        assert!(e.contains("without a port"), "{e}");
        for bad in ["", "localhost", "10.0.0", "unix:/x"] {
            let e = parse_source(bad).unwrap_err();
            assert!(e.contains("not an IP address"), "{e}");
        }
    }

    #[test]
    fn bind_source_family_must_match_tcp_backends() {
        let backends = [
            parse_backend("127.0.0.1:80").unwrap(),
            parse_backend("unix:/tmp/x.sock").unwrap(),
        ];
        assert!(check_source("127.0.0.2".parse().unwrap(), &backends).is_ok());
        let e = check_source("::1".parse().unwrap(), &backends).unwrap_err();
        assert!(e.contains("IPv6") && e.contains("127.0.0.1:80"), "{e}");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "host",
            ":80",
            "::1:80",
            "127.0.0.1:99999",
            "127.0.0.1:http",
            "70000",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_backend("127.0.0.1:0").is_err());
    }
}
